// The Qwen2-MoE decoder (Hugging Face Qwen2MoeForCausalLM, the Qwen1.5-MoE architecture) with
// Switchyard MoE blocks: any router, experts sharded over the EP group.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "models/moe_block.h"
#include "models/qwen2_moe_config.h"
#include "models/safetensors.h"

namespace switchyard {

/// y = weight * (x / sqrt(mean(x^2) + eps)), computed in fp32 and cast back, as transformers does.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

/// How attention scores become outputs.
enum class AttentionKernel {
  kAuto,   ///< kSdpa on CUDA, kEager on the CPU
  kEager,  ///< scores, fp32 softmax, probabilities: transformers' "eager" (keeps S x S per head)
  /// at::scaled_dot_product_attention: flash / memory-efficient kernels on GPUs, which keep no
  /// S x S probabilities for backward (a log-sum-exp per row instead); transformers' "sdpa"
  kSdpa,
};

/// Causal self-attention with q/k/v biases, NeoX (rotate-half) RoPE and grouped kv heads.
class Qwen2MoeAttentionImpl : public torch::nn::Module {
 public:
  explicit Qwen2MoeAttentionImpl(const Qwen2MoeConfig& c,
                                 AttentionKernel kernel = AttentionKernel::kAuto);
  /// x [B, S, H]; cos/sin [S, head_dim]; mask additive [B, 1, S, S] in x's dtype; causal_only:
  /// the mask is the causal one alone (no padding), which lets SDPA take its causal kernels.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, bool causal_only = false);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  /// The kernel a forward on `device` takes.
  AttentionKernel kernel_on(const torch::Device& device) const;

 private:
  int64_t heads_, kv_heads_, head_dim_;
  AttentionKernel kernel_;
};
TORCH_MODULE(Qwen2MoeAttention);

/// One pre-norm decoder layer: attention, then an MoE block or (dense layers) a SwiGLU MLP.
class Qwen2MoeDecoderLayerImpl : public torch::nn::Module {
 public:
  Qwen2MoeDecoderLayerImpl(const Qwen2MoeConfig& c, int64_t index, MoeBlockOptions moe_options,
                           const ProcessGroups& groups,
                           AttentionKernel attention = AttentionKernel::kAuto);
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Qwen2MoeAttention self_attn{nullptr};
  MoeBlock moe{nullptr};    ///< MoE layers
  ExpertBank mlp{nullptr};  ///< dense layers: a bank of one SwiGLU expert
};
TORCH_MODULE(Qwen2MoeDecoderLayer);

/// What a forward returns besides logits: each MoE layer's routing and load, and the summed
/// router losses (aux and z, already weighted by their coefficients).
struct CausalLmOutput {
  torch::Tensor logits;         ///< [B, S, V] (forward)
  torch::Tensor hidden_states;  ///< [B, S, H]: the final norm's output (forward_hidden_states)
  torch::Tensor router_loss;
  std::vector<MoeOutput> moe;  ///< one per MoE layer, in layer order (hidden states dropped)
};

struct Qwen2MoeOptions {
  Qwen2MoeOptions(Qwen2MoeConfig model, ProcessGroups groups)
      : model_(std::move(model)), groups_(std::move(groups)) {}
  TORCH_ARG(Qwen2MoeConfig, model);
  TORCH_ARG(ProcessGroups, groups);
  /// Router of every MoE block. Unset kind: Linear, like the checkpoint; top_k and
  /// norm_topk_prob always come from the model config.
  TORCH_ARG(config::RouterConfig, router);
  /// Each decoder layer is built from its own stream under this seed (model.init_seed), so what
  /// no checkpoint holds (a router replacing the gate) is the same on every rank, at every EP
  /// size and in every run.
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(GroupedGemm, gemm) = GroupedGemm::kAuto;
  TORCH_ARG(AttentionKernel, attention) = AttentionKernel::kAuto;
  /// train.recompute_layers: a training forward keeps each decoder layer's input only, and
  /// backward runs the layer again (models/layer_recompute.h). Memory for one more forward.
  TORCH_ARG(bool, recompute_layers) = false;
  /// Experts quantized as each layer is built, so full-precision copies of all experts never
  /// exist at once; load_hf_weights then quantizes the checkpoint's experts one at a time.
  TORCH_ARG(config::QuantConfig, quant);
  /// Expert placement of the MoE layers (parallel.placement); null: contiguous.
  TORCH_ARG(PlacementPtr, placement);
};

///   usage: auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
///          Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, groups));
///          load_hf_weights(*model, SafetensorsCheckpoint(dir));
///          auto out = model->forward(input_ids, attention_mask);
class Qwen2MoeForCausalLMImpl : public torch::nn::Module {
 public:
  explicit Qwen2MoeForCausalLMImpl(Qwen2MoeOptions options);

  /// input_ids [B, S] int64; attention_mask [B, S] (1 keep, 0 padding) or undefined.
  CausalLmOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});
  /// The same forward up to the LM head: hidden_states instead of logits, for a loss that
  /// applies the head itself a chunk of rows at a time (models/lm_loss.h).
  CausalLmOutput forward_hidden_states(const torch::Tensor& input_ids,
                                       const torch::Tensor& attention_mask = {});

  const Qwen2MoeOptions& options() const { return options_; }
  const std::vector<Qwen2MoeDecoderLayer>& layers() const { return layers_; }

  torch::nn::Embedding embed_tokens{nullptr};
  RmsNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  ///< shares embed_tokens' weight when tied

 private:
  Qwen2MoeOptions options_;
  torch::nn::ModuleList layer_list_;
  std::vector<Qwen2MoeDecoderLayer> layers_;
  torch::Tensor inv_freq_;
};
TORCH_MODULE(Qwen2MoeForCausalLM);

/// Copies a Hugging Face checkpoint into the model (models/qwen2_moe_checkpoint.cpp): per-expert
/// (hub) or fused (transformers v5) expert tensors, each rank reading only its own experts.
/// GPTQ checkpoints (config.gptq): packed experts go into int4 banks as they are; other packed
/// layers (attention, dense MLPs) are dequantized. Routers other than Linear start fresh unless
/// they have a linear part (init_from_gate). Throws Error naming the missing or mis-shaped tensor.
void load_hf_weights(Qwen2MoeForCausalLMImpl& model, const SafetensorsCheckpoint& ckpt);

/// Writes the model as a Hugging Face checkpoint in the hub layout (per-expert tensors), loadable
/// by transformers' Qwen2MoeForCausalLM: config.json, one safetensors shard per EP rank and an
/// index. Collective over the world; quantized experts are written dequantized in `dtype`. The
/// folder appears only when complete (written as DIR.partial, then renamed); an existing DIR
/// is an error. Throws Error for routers that are not a plain linear gate.
void export_hf_checkpoint(const Qwen2MoeForCausalLMImpl& model, const std::string& dir,
                          torch::Dtype dtype);

/// The run config's model.quant as the options an ExpertBank takes.
QuantOptions quant_options(const config::QuantConfig& quant);

/// The expert quantization that holds a GPTQ checkpoint's codes exactly: int4 with zero points
/// in its group size, shared expert included. The model uses it when no model.quant is asked.
config::QuantConfig gptq_expert_quant(const GptqConfig& gptq);

/// Quantizes every MoE layer's routed experts (and shared expert when asked) in place; call
/// after loading weights. Returns the expert weight bytes before and after.
std::pair<int64_t, int64_t> quantize_experts(Qwen2MoeForCausalLMImpl& model,
                                             const config::QuantConfig& quant);

}  // namespace switchyard
