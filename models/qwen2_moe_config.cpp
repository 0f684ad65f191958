// config.json -> Qwen2MoeConfig. Unknown fields are ignored (configs carry many unrelated
// ones); fields we rely on are type-checked and range-checked with the file named.
#include "models/qwen2_moe_config.h"

#include <algorithm>

#include "common/errors.h"
#include "models/hf_config_json.h"
#include "models/safetensors.h"

namespace switchyard {

using nlohmann::json;

bool Qwen2MoeConfig::is_moe_layer(int64_t layer) const {
  const bool dense_listed =
      std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end();
  return !dense_listed && num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
}

Qwen2MoeConfig Qwen2MoeConfig::from_json(const std::string& text, const std::string& where) {
  const json j = parse_hf_config(text, where);
  const HfConfigReader r{j, where};
  if (j.contains("model_type") && j["model_type"] != "qwen2_moe")
    r.fail("model_type", "is " + j["model_type"].dump() + ", expected \"qwen2_moe\"");
  Qwen2MoeConfig c;
  r.integer("vocab_size", c.vocab_size);
  r.integer("hidden_size", c.hidden_size);
  r.integer("intermediate_size", c.intermediate_size);
  r.integer("moe_intermediate_size", c.moe_intermediate_size);
  r.integer("shared_expert_intermediate_size", c.shared_expert_intermediate_size, 0);
  r.integer("num_hidden_layers", c.num_hidden_layers);
  r.integer("num_attention_heads", c.num_attention_heads);
  r.integer("num_key_value_heads", c.num_key_value_heads);
  r.integer("head_dim", c.head_dim, 0);
  r.integer("num_experts", c.num_experts, 0);
  r.integer("num_experts_per_tok", c.num_experts_per_tok);
  r.boolean("norm_topk_prob", c.norm_topk_prob);
  r.number("rms_norm_eps", c.rms_norm_eps);
  r.number("initializer_range", c.initializer_range);
  r.integer("decoder_sparse_step", c.decoder_sparse_step);
  r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  r.boolean("qkv_bias", c.qkv_bias);
  if (j.contains("router_aux_loss_coef") && j["router_aux_loss_coef"].is_number())
    c.router_aux_loss_coef = j["router_aux_loss_coef"].get<double>();

  // rope_theta at the top level (transformers v4) or inside rope_parameters (v5).
  r.number("rope_theta", c.rope_theta);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const HfConfigReader rp{j["rope_parameters"], where};
    rp.number("rope_theta", c.rope_theta);
    const auto& p = j["rope_parameters"];
    if (p.contains("rope_type") && p["rope_type"] != "default")
      r.fail("rope_parameters.rope_type",
             "only \"default\" RoPE is implemented, got " + p["rope_type"].dump());
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    r.fail("rope_scaling", "RoPE scaling is not implemented");
  bool sliding = false;
  r.boolean("use_sliding_window", sliding);
  if (sliding) r.fail("use_sliding_window", "sliding-window attention is not implemented");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    r.fail("hidden_act", "only silu is implemented, got " + j["hidden_act"].dump());
  r.dtype(c.dtype);
  if (j.contains("mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
    if (!j["mlp_only_layers"].is_array()) r.fail("mlp_only_layers", "must be a list");
    for (const auto& v : j["mlp_only_layers"]) {
      if (!v.is_number_integer()) r.fail("mlp_only_layers", "entries must be integers");
      c.mlp_only_layers.push_back(v.get<int64_t>());
    }
  }
  c.gptq = GptqConfig::from_hf_config(j, where);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail("num_key_value_heads",
           detail::concat(c.num_key_value_heads, " does not divide num_attention_heads (",
                          c.num_attention_heads, ")"));
  if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads != 0)
    r.fail("hidden_size", "not divisible by num_attention_heads and no head_dim given");
  if (c.num_experts > 0 && c.num_experts_per_tok > c.num_experts)
    r.fail("num_experts_per_tok", detail::concat("exceeds num_experts (", c.num_experts, ")"));
  return c;
}

Qwen2MoeConfig Qwen2MoeConfig::preset(const std::string& name) {
  Qwen2MoeConfig c;  // the defaults are Qwen1.5-MoE-A2.7B
  if (name == "qwen1.5-moe-a2.7b") return c;
  if (name == "tiny") {
    c.vocab_size = 512;
    c.hidden_size = 128;
    c.intermediate_size = 256;
    c.moe_intermediate_size = 128;
    c.shared_expert_intermediate_size = 256;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 4;
    c.num_experts = 8;
    c.num_experts_per_tok = 2;
    return c;
  }
  throw ConfigError("bench.model_preset = " + name + ": expected qwen1.5-moe-a2.7b or tiny",
                    "bench.model_preset");
}

std::string Qwen2MoeConfig::to_json() const {
  const char* dtype_name = dtype == torch::kFloat  ? "float32"
                           : dtype == torch::kHalf ? "float16"
                                                   : "bfloat16";
  json j = {{"architectures", {"Qwen2MoeForCausalLM"}},
            {"model_type", "qwen2_moe"},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"moe_intermediate_size", moe_intermediate_size},
            {"shared_expert_intermediate_size", shared_expert_intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"num_experts", num_experts},
            {"num_experts_per_tok", num_experts_per_tok},
            {"norm_topk_prob", norm_topk_prob},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"decoder_sparse_step", decoder_sparse_step},
            {"mlp_only_layers", mlp_only_layers},
            {"tie_word_embeddings", tie_word_embeddings},
            {"qkv_bias", qkv_bias},
            {"router_aux_loss_coef", router_aux_loss_coef},
            {"initializer_range", initializer_range},
            {"hidden_act", "silu"},
            {"torch_dtype", dtype_name},
            {"dtype", dtype_name}};
  if (head_dim > 0) j["head_dim"] = head_dim;
  return j.dump(2);
}

Qwen2MoeConfig Qwen2MoeConfig::from_file(const std::string& path) {
  return from_json(read_text_file(path), path);
}

}  // namespace switchyard
