// BERT-MoE forward, written against transformers' modeling_bert.py (v5): embeddings + LayerNorm,
// post-norm encoder layers with eager bidirectional attention (additive mask of the dtype's
// minimum on padding keys), exact-erf GELU FFNs or MoE blocks, pooler, classifier.
#include "models/bert_moe.h"

#include <limits>

#include "common/errors.h"
#include "common/phase_clock.h"
#include "common/scoped_seed.h"

namespace switchyard {
namespace {

// transformers masks with torch.finfo(dtype).min (not -inf), so fully masked rows stay finite.
double dtype_min(torch::ScalarType t) {
  double v = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kHalf, torch::kBFloat16, t, "dtype_min",
                                  [&] { v = double(std::numeric_limits<scalar_t>::lowest()); });
  return v;
}

config::RouterConfig router_config(const BertMoeOptions& o) {
  config::RouterConfig rc = o.router();
  if (rc.kind_case() == config::RouterConfig::KIND_NOT_SET) rc.mutable_linear();
  rc.set_top_k(int32_t(o.top_k()));
  return rc;
}

torch::nn::LayerNorm layer_norm(const BertConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out));
}

}  // namespace

// ---- embeddings and attention -----------------------------------------------------------------

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) {
  word_embeddings =
      register_module("word_embeddings", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  position_embeddings = register_module(
      "position_embeddings", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings = register_module("token_type_embeddings",
                                          torch::nn::Embedding(c.type_vocab_size, c.hidden_size));
  layer_norm = register_module("LayerNorm", switchyard::layer_norm(c));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids,
                                          const torch::Tensor& token_type_ids) {
  const int64_t S = input_ids.size(1), max_positions = position_embeddings->weight.size(0);
  SY_CHECK(S <= max_positions, "Bert: sequence length ", S, " exceeds max_position_embeddings ",
           max_positions);
  auto positions = torch::arange(S, torch::dtype(torch::kLong).device(input_ids.device()));
  auto h = word_embeddings(input_ids) + token_type_embeddings(token_type_ids);
  return layer_norm(h + position_embeddings(positions));
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& c)
    : heads_(c.num_attention_heads), head_dim_(c.head_dim()) {
  query = register_module("query", linear(c.hidden_size, c.hidden_size));
  key = register_module("key", linear(c.hidden_size, c.hidden_size));
  value = register_module("value", linear(c.hidden_size, c.hidden_size));
  dense = register_module("dense", linear(c.hidden_size, c.hidden_size));
  layer_norm = register_module("LayerNorm", switchyard::layer_norm(c));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), S = x.size(1);
  auto heads = [&](const torch::Tensor& t) {
    return t.view({B, S, heads_, head_dim_}).transpose(1, 2);  // [B, heads, S, d]
  };
  auto q = heads(query(x)), k = heads(key(x)), v = heads(value(x));
  auto scores = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(double(head_dim_))) + mask;
  // Softmax in the activations' dtype, as transformers' eager BERT attention does.
  auto out = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape(x.sizes());
  return layer_norm(dense(out) + x);
}

// ---- layers and models ------------------------------------------------------------------------

BertLayerImpl::BertLayerImpl(const BertMoeOptions& o, int64_t index) {
  const auto& c = o.model();
  attention = register_module("attention", BertAttention(c));
  if (o.is_moe_layer(index)) {
    // Each layer's router from its own seed: replicated, so equal on every rank and EP size.
    ScopedSeed seed(layer_seed(o.seed(), index));
    moe = register_module(
        "moe",
        MoeBlock(
            MoeBlockOptions(c.hidden_size, o.num_experts(), c.intermediate_size)
                .expert_kind(ExpertKind::kGeluMlp)
                .router(router_config(o))
                .gemm(o.gemm())
                .placement(o.placement()
                               ? o.placement()->layers[size_t((index + 1) / o.moe_layer_step() - 1)]
                               : LayerPlacement()),
            o.groups()));
  } else {
    mlp = register_module("mlp", ExpertBank(ExpertBankOptions(c.hidden_size, c.intermediate_size, 1)
                                                .kind(ExpertKind::kGeluMlp)
                                                .gemm(o.gemm())));
  }
  output_norm = register_module("output_norm", layer_norm(c));
}

BertMoeModelImpl::BertMoeModelImpl(BertMoeOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  const auto& c = o.model();
  SY_CHECK(o.num_experts() >= 0 && o.moe_layer_step() >= 1, "BertMoe: num_experts ",
           o.num_experts(), " must be >= 0 and moe_layer_step ", o.moe_layer_step(), " >= 1");
  SY_CHECK(o.num_experts() == 0 || (o.top_k() >= 1 && o.top_k() <= o.num_experts()),
           "BertMoe: top_k ", o.top_k(), " must be in [1, num_experts = ", o.num_experts(), "]");
  SY_CHECK(o.upcycle_noise() >= 0, "BertMoe: upcycle_noise ", o.upcycle_noise(), " is negative");
  if (o.placement()) {
    int64_t moe_layers = 0;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) moe_layers += o.is_moe_layer(i) ? 1 : 0;
    o.placement()->check_fits(moe_layers, o.num_experts(), o.groups().ep_size(),
                              "parallel.placement " + o.placement()->path);
  }
  ScopedSeed seed(o.seed());
  embeddings = register_module("embeddings", BertEmbeddings(c));
  layer_list_ = register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers_.push_back(BertLayer(o, i));
    layer_list_->push_back(layers_.back());
  }
  pooler = register_module("pooler", linear(c.hidden_size, c.hidden_size));
}

BertMoeOutput BertMoeModelImpl::forward(const torch::Tensor& input_ids,
                                        const torch::Tensor& attention_mask,
                                        const torch::Tensor& token_type_ids) {
  SY_CHECK(input_ids.dim() == 2, "Bert: input_ids must be [batch, seq], got ", input_ids.sizes());
  const int64_t B = input_ids.size(0), S = input_ids.size(1);
  const auto device = embeddings->word_embeddings->weight.device();
  for (const auto* t : {&attention_mask, &token_type_ids})
    SY_CHECK(!t->defined() || t->sizes() == input_ids.sizes(), "Bert: attention_mask / ",
             "token_type_ids ", t->sizes(), " do not match input_ids ", input_ids.sizes());
  auto ids = input_ids.to(device);
  auto types =
      token_type_ids.defined() ? token_type_ids.to(device, torch::kLong) : torch::zeros_like(ids);
  auto h = embeddings(ids, types);
  const auto dtype = h.scalar_type();

  // Only keys are masked: padding rows still attend to the real tokens, as in transformers.
  auto mask = torch::zeros({B, 1, 1, S}, torch::dtype(dtype).device(device));
  if (attention_mask.defined())
    mask = mask.masked_fill(attention_mask.to(device).eq(0).view({B, 1, 1, S}), dtype_min(dtype));

  BertMoeOutput out;
  out.router_loss = torch::zeros({}, torch::dtype(torch::kFloat).device(device));
  for (auto& l : layers_) {
    // Phase boundaries (common/phase_clock.h) time a profiled step; otherwise they return h.
    h = phase_boundary(
        l->attention(phase_boundary(h, StepPhase::kOther, StepPhase::kAttention), mask),
        StepPhase::kAttention, StepPhase::kOther);
    torch::Tensor ffn;
    if (l->moe) {
      MoeOutput m = l->moe(h, ids);
      ffn = std::move(m.hidden);
      out.router_loss = out.router_loss + m.routing.loss;
      out.moe.push_back(std::move(m));
    } else {
      ffn = l->mlp->forward_one(0, h.reshape({-1, h.size(-1)})).view(h.sizes());
    }
    h = l->output_norm(ffn + h);  // post-norm: LayerNorm(ffn(x) + x)
  }
  out.last_hidden_state = h = phase_boundary(h, StepPhase::kOther, StepPhase::kHead);
  out.pooled = torch::tanh(pooler(h.select(1, 0)));
  return out;
}

BertMoeForSequenceClassificationImpl::BertMoeForSequenceClassificationImpl(BertMoeOptions options) {
  ScopedSeed seed(layer_seed(options.seed(), -2));  // the classifier's own stream
  const int64_t H = options.model().hidden_size, labels = options.model().num_labels;
  bert = register_module("bert", BertMoeModel(std::move(options)));
  classifier = register_module("classifier", linear(H, labels));
}

BertMoeOutput BertMoeForSequenceClassificationImpl::forward(const torch::Tensor& input_ids,
                                                            const torch::Tensor& attention_mask,
                                                            const torch::Tensor& token_type_ids) {
  BertMoeOutput out = bert(input_ids, attention_mask, token_type_ids);
  out.logits = classifier(out.pooled);
  return out;
}

}  // namespace switchyard
