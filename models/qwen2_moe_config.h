// The Qwen2-MoE (Qwen1.5-MoE) architecture's hyper-parameters, read from a Hugging Face
// config.json with transformers' defaults for absent fields.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "models/gptq.h"

namespace switchyard {

struct Qwen2MoeConfig {
  int64_t vocab_size = 151936;
  int64_t hidden_size = 2048;
  int64_t intermediate_size = 5632;  ///< dense MLP layers
  int64_t moe_intermediate_size = 1408;
  int64_t shared_expert_intermediate_size = 5632;  ///< 0: no shared expert
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 16;
  int64_t num_key_value_heads = 16;
  int64_t head_dim = 0;  ///< 0: hidden_size / num_attention_heads
  int64_t num_experts = 60;
  int64_t num_experts_per_tok = 4;
  bool norm_topk_prob = false;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  bool tie_word_embeddings = false;
  bool qkv_bias = true;
  double router_aux_loss_coef = 0.001;
  double initializer_range = 0.02;  ///< std of the normal initial weights (pretraining)
  torch::Dtype dtype = torch::kBFloat16;
  /// Set for GPTQ checkpoints: the decoder layers' linear layers are stored packed.
  std::optional<GptqConfig> gptq;

  int64_t attention_head_dim() const {
    return head_dim > 0 ? head_dim : hidden_size / num_attention_heads;
  }
  /// Whether layer i has an MoE block (else a dense SwiGLU MLP), as transformers decides it.
  bool is_moe_layer(int64_t layer) const;

  /// Parses config.json text; `where` names the file in errors. Accepts rope_theta or
  /// rope_parameters.rope_theta, torch_dtype or dtype. Refuses what this model does not
  /// implement (another model_type, rope scaling, sliding window, an activation other than silu).
  static Qwen2MoeConfig from_json(const std::string& text, const std::string& where);
  static Qwen2MoeConfig from_file(const std::string& path);
  /// config.json text that transformers (and from_json) read back as this configuration.
  std::string to_json() const;

  /// Named architectures: "qwen1.5-moe-a2.7b" (the defaults above) and "tiny" (for tests).
  /// Throws ConfigError listing the names for an unknown one.
  static Qwen2MoeConfig preset(const std::string& name);
};

}  // namespace switchyard
