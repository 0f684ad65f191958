// Hugging Face Qwen2-MoE checkpoints -> Qwen2MoeForCausalLM: per-expert (hub) or fused
// (transformers v5) expert tensors, float or GPTQ-packed linear layers, each rank reading only
// its own experts from the memory-mapped shards.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "models/gptq.h"
#include "models/qwen2_moe.h"

namespace switchyard {
namespace {

struct Loader {
  const SafetensorsCheckpoint& ckpt;
  const std::optional<GptqConfig>& gptq;

  [[noreturn]] void bad_shape(const std::string& name, torch::IntArrayRef got,
                              torch::IntArrayRef want) const {
    throw Error(detail::concat(ckpt.path(), ": tensor '", name, "' has shape ", got,
                               ", the model expects ", want));
  }
  void check_shape(const torch::Tensor& t, torch::IntArrayRef want, const std::string& name) const {
    if (t.sizes() != want) bad_shape(name, t.sizes(), want);
  }
  void load(torch::Tensor dst, const std::string& name) const {
    auto src = ckpt.get(name);
    check_shape(src, dst.sizes(), name);
    dst.copy_(src);
  }
  bool packed(const std::string& prefix) const { return gptq && is_gptq_linear(ckpt, prefix); }

  // The [out, in] weight of the linear layer under `prefix`, dequantized when GPTQ-packed.
  torch::Tensor weight(const std::string& prefix, int64_t out, int64_t in) const {
    if (packed(prefix))
      return read_gptq_linear(ckpt, prefix, *gptq, out, in).dequantize(torch::kFloat);
    auto w = ckpt.get(prefix + "weight");
    check_shape(w, {out, in}, prefix + "weight");
    return w;
  }
  void load_linear(torch::nn::Linear linear, const std::string& prefix) const {
    linear->weight.copy_(weight(prefix, linear->weight.size(0), linear->weight.size(1)));
    if (linear->bias.defined()) load(linear->bias, prefix + "bias");
  }

  // Whether GPTQ codes can go into `bank` as they are: int4 with zero points in the same groups.
  bool bank_takes_codes(const ExpertBankImpl& bank) const {
    const QuantizedWeight* q = bank.quantized_in();
    return gptq && q && q->options.kind() == QuantKind::kInt4 && q->zero.defined() &&
           q->options.group_size() == gptq->group_size;
  }

  // A SwiGLU MLP stored as gate_proj/up_proj/down_proj -> slot e of an ExpertBank.
  void load_swiglu(ExpertBank bank, int64_t e, const std::string& prefix) const {
    const int64_t I = bank->options().intermediate_size(), H = bank->options().hidden_size();
    const std::string gate = prefix + "gate_proj.", up = prefix + "up_proj.",
                      down = prefix + "down_proj.";
    if (packed(gate) && bank_takes_codes(*bank)) {  // no round trip through floats
      bank->load_expert_codes(e,
                              Int4Codes::cat_rows(read_gptq_linear(ckpt, gate, *gptq, I, H),
                                                  read_gptq_linear(ckpt, up, *gptq, I, H)),
                              read_gptq_linear(ckpt, down, *gptq, H, I));
      return;
    }
    bank->load_expert(e, {weight(gate, I, H), weight(up, I, H)}, weight(down, H, I));
  }

  // Transformers v5's fused layout: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].
  void load_fused_experts(ExpertBank bank, const std::string& prefix, int64_t num_experts,
                          const std::vector<int64_t>& experts) const {
    const int64_t I = bank->options().intermediate_size(), H = bank->options().hidden_size();
    const std::string in_name = prefix + "gate_up_proj", out_name = prefix + "down_proj";
    auto fused_in = ckpt.get(in_name), fused_out = ckpt.get(out_name);
    check_shape(fused_in, {num_experts, 2 * I, H}, in_name);
    check_shape(fused_out, {num_experts, H, I}, out_name);
    // narrow() on a mapped tensor touches no other expert's bytes.
    for (size_t s = 0; s < experts.size(); ++s)
      bank->load_expert(int64_t(s), fused_in[experts[s]], fused_out[experts[s]]);
  }

  void load_moe(MoeBlock moe, const std::string& p, const Qwen2MoeConfig& c) const {
    moe->router->init_from_gate(ckpt.get(p + "mlp.gate.weight").to(torch::kFloat));
    const std::vector<int64_t>& experts = moe->dispatcher().local_experts();
    if (ckpt.contains(p + "mlp.experts.gate_up_proj"))
      load_fused_experts(moe->experts, p + "mlp.experts.", c.num_experts, experts);
    else
      for (size_t s = 0; s < experts.size(); ++s)  // only this rank's experts are read
        load_swiglu(moe->experts, int64_t(s),
                    p + "mlp.experts." + std::to_string(experts[s]) + ".");
    if (moe->shared_expert) {
      load_swiglu(moe->shared_expert, 0, p + "mlp.shared_expert.");
      load(moe->shared_expert_gate->weight, p + "mlp.shared_expert_gate.weight");
    }
  }
};

}  // namespace

config::QuantConfig gptq_expert_quant(const GptqConfig& gptq) {
  config::QuantConfig q;
  q.set_experts(config::INT4);
  q.set_group_size(int32_t(gptq.group_size));
  q.set_symmetric(false);  // GPTQ stores a zero per group even when sym (then all 8)
  q.set_shared_expert(true);
  return q;
}

void load_hf_weights(Qwen2MoeForCausalLMImpl& model, const SafetensorsCheckpoint& ckpt) {
  torch::NoGradGuard no_grad;
  const auto& c = model.options().model();
  const Loader L{ckpt, c.gptq};
  L.load(model.embed_tokens->weight, "model.embed_tokens.weight");
  for (int64_t i = 0; i < int64_t(model.layers().size()); ++i) {
    const auto& l = model.layers()[size_t(i)];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    L.load(l->input_layernorm->weight, p + "input_layernorm.weight");
    L.load(l->post_attention_layernorm->weight, p + "post_attention_layernorm.weight");
    const auto& attn = l->self_attn;
    for (auto [proj, name] : {std::pair{attn->q_proj, "q_proj"},
                              {attn->k_proj, "k_proj"},
                              {attn->v_proj, "v_proj"},
                              {attn->o_proj, "o_proj"}})
      L.load_linear(proj, p + "self_attn." + name + ".");
    if (l->moe)
      L.load_moe(l->moe, p, c);
    else
      L.load_swiglu(l->mlp, 0, p + "mlp.");
  }
  L.load(model.norm->weight, "model.norm.weight");
  if (!c.tie_word_embeddings) L.load(model.lm_head->weight, "lm_head.weight");
}

}  // namespace switchyard

// ---- exporting to the hub layout ---------------------------------------------------------------

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, torch::Tensor>>;

std::string shard_name(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index + 1, count);
  return buf;
}

// A SwiGLU bank's slot e as gate_proj/up_proj/down_proj under `prefix` (dequantized if needed).
void add_swiglu(Named& out, const ExpertBankImpl& bank, int64_t e, const std::string& prefix,
                torch::Dtype dtype) {
  auto [w_in, w_out] = bank.expert_weights(e, dtype);
  const int64_t I = bank.options().intermediate_size();
  out.push_back({prefix + "gate_proj.weight", w_in.narrow(0, 0, I)});
  out.push_back({prefix + "up_proj.weight", w_in.narrow(0, I, I)});
  out.push_back({prefix + "down_proj.weight", w_out});
}

// Everything every rank holds (embeddings, attention, norms, gates, shared experts, dense MLPs,
// head), and this rank's routed experts: what rank 0 writes, and what other EP ranks add.
Named replicated_tensors(const Qwen2MoeForCausalLMImpl& model, torch::Dtype dtype) {
  const auto& c = model.options().model();
  Named out;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    out.push_back({name, t.to(dtype)});
  };
  add("model.embed_tokens.weight", model.embed_tokens->weight);
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const auto& l = model.layers()[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", l->input_layernorm->weight);
    add(p + "post_attention_layernorm.weight", l->post_attention_layernorm->weight);
    const auto& a = l->self_attn;
    for (auto [proj, name] : {std::pair{a->q_proj, "q_proj"},
                              {a->k_proj, "k_proj"},
                              {a->v_proj, "v_proj"},
                              {a->o_proj, "o_proj"}}) {
      add(p + "self_attn." + name + ".weight", proj->weight);
      if (proj->bias.defined()) add(p + "self_attn." + name + ".bias", proj->bias);
    }
    if (!l->moe) {
      add_swiglu(out, *l->mlp, 0, p + "mlp.", dtype);
      continue;
    }
    add(p + "mlp.gate.weight", l->moe->router->gate_weight());
    if (l->moe->shared_expert) {
      add_swiglu(out, *l->moe->shared_expert, 0, p + "mlp.shared_expert.", dtype);
      add(p + "mlp.shared_expert_gate.weight", l->moe->shared_expert_gate->weight);
    }
  }
  add("model.norm.weight", model.norm->weight);
  if (!c.tie_word_embeddings) add("lm_head.weight", model.lm_head->weight);
  return out;
}

std::string expert_prefix(size_t layer, int64_t expert) {
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) + ".";
}

Named local_expert_tensors(const Qwen2MoeForCausalLMImpl& model, torch::Dtype dtype) {
  Named out;
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const auto& moe = model.layers()[i]->moe;
    if (!moe) continue;
    const auto owned = moe->dispatcher().placement().owned(model.options().groups().ep_rank());
    for (size_t s = 0; s < owned.size(); ++s)  // a replica is written by its first copy
      if (owned[s] >= 0)
        add_swiglu(out, *moe->experts, int64_t(s), expert_prefix(i, owned[s]), dtype);
  }
  return out;
}

// Where every tensor lives: replicated ones with rank 0's experts in shard 0, each other EP
// rank's experts in its own shard (the placement is the same on every rank, so rank 0 knows it).
nlohmann::json weight_map(const Qwen2MoeForCausalLMImpl& model, const Named& rank0, int shards) {
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [name, t] : rank0) map[name] = shard_name(0, shards);
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const auto& moe = model.layers()[i]->moe;
    if (!moe) continue;
    for (int r = 1; r < shards; ++r)
      for (int64_t e : moe->dispatcher().placement().owned(r))
        if (e >= 0)
          for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
            map[expert_prefix(i, e) + proj + ".weight"] = shard_name(r, shards);
  }
  return map;
}

}  // namespace

void export_hf_checkpoint(const Qwen2MoeForCausalLMImpl& model, const std::string& dir,
                          torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  const ProcessGroups& g = model.options().groups();
  const int rank = g.world->rank();
  for (size_t i = 0; i < model.layers().size(); ++i) {  // on every rank, before any collective
    const auto& moe = model.layers()[i]->moe;
    if (moe && !moe->router->gate_weight().defined())
      throw Error(detail::concat("export: layer ", i, "'s ", moe->router->kind(),
                                 " router has no Hugging Face equivalent (only linear routers "
                                 "export to Qwen2MoeForCausalLM)"));
    // The bias changes which experts are chosen, and the hub's gate has no term for it: folding
    // it into the gate weight would also change the combine weights. A zero bias loses nothing.
    if (moe && moe->router->expert_bias().defined()) {
      const double largest = moe->router->expert_bias().abs().max().item<double>();
      if (largest > 0)
        throw Error(detail::concat(
            "export: layer ", i,
            "'s router has an expert bias (router.expert_bias, max |b| = ", largest,
            "), which Qwen2MoeForCausalLM cannot hold: the exported model would choose "
            "other experts; not exported (--format switchyard keeps it)"));
    }
  }
  if (fs::exists(dir)) throw Error("export: " + dir + " already exists; not overwriting it");
  // Everything is written under a temporary name that only becomes `dir` once complete.
  const std::string staging = dir + ".partial";
  if (rank == 0) {
    fs::remove_all(staging);
    fs::create_directories(staging);
  }
  g.world->barrier();
  // One shard per EP rank (DP replicas hold the same experts: only the first DP group writes).
  const int shards = g.ep_size();
  Named mine;
  if (rank == 0) mine = replicated_tensors(model, dtype);
  if (g.dp_rank() == 0) {
    Named experts = local_expert_tensors(model, dtype);
    mine.insert(mine.end(), experts.begin(), experts.end());
    save_safetensors((fs::path(staging) / shard_name(g.ep_rank(), shards)).string(), mine,
                     {{"format", "pt"}});
  }
  g.world->barrier();  // every shard is in place before rank 0 completes the folder
  if (rank == 0) {
    const nlohmann::json index = {{"metadata", nlohmann::json::object()},
                                  {"weight_map", weight_map(model, mine, shards)}};
    write_text_file_atomic((fs::path(staging) / "model.safetensors.index.json").string(),
                           index.dump(2));
    Qwen2MoeConfig c = model.options().model();
    c.dtype = dtype;
    c.gptq.reset();  // the export is float
    write_text_file_atomic((fs::path(staging) / "config.json").string(), c.to_json());
    fs::rename(staging, dir);
  }
  g.world->barrier();  // nobody returns before the folder exists
}

}  // namespace switchyard
