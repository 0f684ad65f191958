// Hugging Face BERT checkpoints -> BertMoe: the name mapping (with or without "bert.", legacy
// gamma/beta LayerNorms) and sparse upcycling of each dense FFN into a layer's experts.
#include <ATen/CPUGeneratorImpl.h>

#include "common/errors.h"
#include "models/bert_moe.h"

namespace switchyard {
namespace {

// splitmix64's finaliser: nearby (seed, layer, expert) triples get unrelated streams.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct Loader {
  const SafetensorsCheckpoint& ckpt;
  std::string prefix;  ///< "bert." (task-model saves) or "" (BertModel saves)

  bool has(const std::string& name) const { return ckpt.contains(prefix + name); }
  torch::Tensor get(const std::string& name, at::IntArrayRef shape) const {
    const std::string full = prefix + name;
    auto t = ckpt.get(full);  // Error naming the checkpoint and tensor when absent
    if (t.sizes() != shape)
      throw Error(detail::concat(ckpt.path(), ": tensor '", full, "' has shape ", t.sizes(),
                                 ", the model expects ", shape));
    return t;
  }
  void load(torch::Tensor dst, const std::string& name) const { dst.copy_(get(name, dst.sizes())); }
  void linear(const torch::nn::Linear& l, const std::string& name) const {
    load(l->weight, name + ".weight");
    load(l->bias, name + ".bias");
  }
  // weight/bias, or gamma/beta in checkpoints converted from the original TensorFlow BERT.
  void layer_norm(const torch::nn::LayerNorm& ln, const std::string& name) const {
    const bool legacy = !has(name + ".weight") && has(name + ".gamma");
    load(ln->weight, name + (legacy ? ".gamma" : ".weight"));
    load(ln->bias, name + (legacy ? ".beta" : ".bias"));
  }
  // The dense FFN intermediate.dense + output.dense of layer prefix `p`, shape-checked.
  ExpertBankImpl::Weights ffn(const std::string& p, int64_t H, int64_t I) const {
    return {get(p + "intermediate.dense.weight", {I, H}), get(p + "intermediate.dense.bias", {I}),
            get(p + "output.dense.weight", {H, I}), get(p + "output.dense.bias", {H})};
  }
};

}  // namespace

void upcycle_experts(MoeBlockImpl& moe, const ExpertBankImpl::Weights& dense, double noise,
                     uint64_t seed) {
  torch::NoGradGuard no_grad;
  const std::vector<int64_t>& experts = moe.dispatcher().local_experts();
  const int64_t local = int64_t(experts.size());
  auto w_in = dense.w_in.to(torch::kFloat), w_out = dense.w_out.to(torch::kFloat);
  const double in_std = w_in.std().item<double>(), out_std = w_out.std().item<double>();
  for (int64_t e = 0; e < local; ++e) {
    auto in = w_in, out = w_out;
    if (noise > 0) {
      // Drawn per global expert id, on the CPU: the same experts at every EP size and device.
      auto gen =
          at::make_generator<at::CPUGeneratorImpl>(mix(seed ^ mix(uint64_t(experts[size_t(e)]))));
      in = w_in + torch::empty_like(w_in).normal_(0.0, noise * in_std, gen);
      out = w_out + torch::empty_like(w_out).normal_(0.0, noise * out_std, gen);
    }
    moe.experts->load_expert(e, in, out);
    moe.experts->load_expert_biases(e, dense.b_in, dense.b_out);
  }
}

BertLoadReport load_hf_weights(BertMoeModelImpl& model, const SafetensorsCheckpoint& ckpt) {
  torch::NoGradGuard no_grad;
  const Loader L{ckpt, ckpt.contains("bert.embeddings.word_embeddings.weight") ? "bert." : ""};
  const auto& o = model.options();
  const int64_t H = o.model().hidden_size, I = o.model().intermediate_size;
  auto& emb = *model.embeddings;
  L.load(emb.word_embeddings->weight, "embeddings.word_embeddings.weight");
  L.load(emb.position_embeddings->weight, "embeddings.position_embeddings.weight");
  L.load(emb.token_type_embeddings->weight, "embeddings.token_type_embeddings.weight");
  L.layer_norm(emb.layer_norm, "embeddings.LayerNorm");
  for (int64_t i = 0; i < int64_t(model.layers().size()); ++i) {
    BertLayer layer = model.layers()[size_t(i)];  // a holder copy: non-const access
    auto& l = *layer;
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    L.linear(l.attention->query, p + "attention.self.query");
    L.linear(l.attention->key, p + "attention.self.key");
    L.linear(l.attention->value, p + "attention.self.value");
    L.linear(l.attention->dense, p + "attention.output.dense");
    L.layer_norm(l.attention->layer_norm, p + "attention.output.LayerNorm");
    L.layer_norm(l.output_norm, p + "output.LayerNorm");
    const auto dense = L.ffn(p, H, I);
    if (l.moe) {
      upcycle_experts(*l.moe, dense, o.upcycle_noise(), mix(o.seed() ^ mix(uint64_t(i))));
    } else {
      l.mlp->load_expert(0, dense.w_in, dense.w_out);
      l.mlp->load_expert_biases(0, dense.b_in, dense.b_out);
    }
  }
  BertLoadReport report;
  report.pooler = L.has("pooler.dense.weight");
  if (report.pooler) L.linear(model.pooler, "pooler.dense");
  return report;
}

BertLoadReport load_hf_weights(BertMoeForSequenceClassificationImpl& model,
                               const SafetensorsCheckpoint& ckpt) {
  BertLoadReport report = load_hf_weights(*model.bert, ckpt);
  // The task head is never under "bert."; a BertModel save has none and the head stays fresh.
  report.classifier = ckpt.contains("classifier.weight");
  if (report.classifier) {
    torch::NoGradGuard no_grad;
    const Loader L{ckpt, ""};
    L.linear(model.classifier, "classifier");
  }
  return report;
}

}  // namespace switchyard
