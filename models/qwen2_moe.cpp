// Qwen2-MoE forward, written against transformers' modeling_qwen2_moe.py (v5): pre-norm
// decoder layers, RMSNorm in fp32, rotate-half RoPE, attention (eager on the CPU, SDPA on GPUs)
// with an additive mask of the dtype's minimum, MoE or dense SwiGLU MLP, final norm, LM head.
#include "models/qwen2_moe.h"

#include <limits>

#include "common/errors.h"
#include "common/host_reads.h"
#include "common/phase_clock.h"
#include "common/scoped_seed.h"
#include "configs/run_config.h"
#include "models/cpu_linear.h"
#include "models/layer_recompute.h"

namespace switchyard {
namespace {

// transformers masks with torch.finfo(dtype).min (not -inf), so fully masked rows stay finite.
double dtype_min(torch::Dtype t) {
  switch (t) {
    case torch::kDouble:
      return std::numeric_limits<double>::lowest();
    case torch::kBFloat16:
      return -3.3895313892515355e38;
    case torch::kHalf:
      return -65504.0;
    default:
      return std::numeric_limits<float>::lowest();
  }
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

config::RouterConfig router_config(const Qwen2MoeOptions& o) {
  config::RouterConfig rc = o.router();
  if (rc.kind_case() == config::RouterConfig::KIND_NOT_SET) rc.mutable_linear();
  rc.set_top_k(int32_t(o.model().num_experts_per_tok));
  rc.set_norm_topk_prob(o.model().norm_topk_prob);
  if (!rc.has_aux_loss_coef()) rc.set_aux_loss_coef(float(o.model().router_aux_loss_coef));
  validate_router_for_experts(rc, int(o.model().num_experts), "the model's num_experts");
  return rc;
}

// Quantizes one MoE block's experts (and shared expert when asked); returns bytes before, after.
std::pair<int64_t, int64_t> quantize_block(MoeBlock moe, const config::QuantConfig& quant) {
  const QuantOptions options = quant_options(quant);
  std::vector<ExpertBank> banks{moe->experts};
  if (quant.shared_expert() && moe->shared_expert) banks.push_back(moe->shared_expert);
  int64_t before = 0, after = 0;
  for (auto& bank : banks) {
    before += bank->weight_bytes();
    try {
      if (options.kind() != QuantKind::kNone && !bank->quantized()) bank->quantize_(options);
    } catch (const Error& e) {  // a shape the chosen group size does not fit: bad config
      throw ConfigError(
          detail::concat("model.quant.group_size = ", quant.group_size(), ": ", e.what()),
          "model.quant.group_size");
    }
    after += bank->weight_bytes();
  }
  return {before, after};
}

}  // namespace

QuantOptions quant_options(const config::QuantConfig& quant) {
  return QuantOptions()
      .kind(quant.experts() == config::INT8   ? QuantKind::kInt8
            : quant.experts() == config::INT4 ? QuantKind::kInt4
                                              : QuantKind::kNone)
      .group_size(quant.group_size())
      .symmetric(quant.symmetric());
}

// ---- RMSNorm ----------------------------------------------------------------------------------

RmsNormImpl::RmsNormImpl(int64_t size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({size}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  auto h = x.to(torch::kFloat);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps_);
  return weight * h.to(x.scalar_type());
}

// ---- attention --------------------------------------------------------------------------------

Qwen2MoeAttentionImpl::Qwen2MoeAttentionImpl(const Qwen2MoeConfig& c, AttentionKernel kernel)
    : heads_(c.num_attention_heads),
      kv_heads_(c.num_key_value_heads),
      head_dim_(c.attention_head_dim()),
      kernel_(kernel) {
  auto linear = [&](const char* name, int64_t in, int64_t out, bool bias) {
    return register_module(name, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias)));
  };
  q_proj = linear("q_proj", c.hidden_size, heads_ * head_dim_, c.qkv_bias);
  k_proj = linear("k_proj", c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias);
  v_proj = linear("v_proj", c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias);
  o_proj = linear("o_proj", heads_ * head_dim_, c.hidden_size, false);
}

AttentionKernel Qwen2MoeAttentionImpl::kernel_on(const torch::Device& device) const {
  if (kernel_ != AttentionKernel::kAuto) return kernel_;
  // The CPU keeps eager: its numbers are what the plan's CPU calibration measured.
  return device.is_cuda() ? AttentionKernel::kSdpa : AttentionKernel::kEager;
}

torch::Tensor Qwen2MoeAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, const torch::Tensor& mask,
                                             bool causal_only) {
  const int64_t B = x.size(0), S = x.size(1);
  auto heads = [&](const torch::Tensor& t, int64_t n) {
    return t.view({B, S, n, head_dim_}).transpose(1, 2);  // [B, n, S, d]
  };
  auto q = heads(forward_linear(q_proj, x), heads_),
       k = heads(forward_linear(k_proj, x), kv_heads_),
       v = heads(forward_linear(v_proj, x), kv_heads_);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (kv_heads_ != heads_) {  // each kv head serves heads / kv_heads consecutive query heads
    k = k.repeat_interleave(heads_ / kv_heads_, 1);
    v = v.repeat_interleave(heads_ / kv_heads_, 1);
  }
  const double scale = 1.0 / std::sqrt(double(head_dim_));
  torch::Tensor out;
  if (kernel_on(x.device()) == AttentionKernel::kSdpa) {
    // The causal flag, not a mask, where there is no padding: flash kernels take no mask. A
    // padded batch passes the same additive mask eager adds (finite minimum: a fully masked
    // row averages its values, as in eager, instead of becoming NaN).
    // Under autocast q is bf16 while the mask was made in the weights' dtype: SDPA would cast
    // fp32's minimum to bf16's -inf, and a fully masked row (left padding) could come out NaN.
    auto m = mask;
    if (!causal_only && mask.scalar_type() != q.scalar_type())
      m = mask.to(q.scalar_type()).clamp_min(dtype_min(q.scalar_type()));
    out = at::scaled_dot_product_attention(q, k, v, causal_only ? std::nullopt : std::optional(m),
                                           0.0, causal_only, scale);
  } else {
    auto scores = torch::matmul(q, k.transpose(2, 3)) * scale + mask;
    auto probs = torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type());
    out = torch::matmul(probs, v);
  }
  return forward_linear(o_proj, out.transpose(1, 2).reshape({B, S, heads_ * head_dim_}));
}

// ---- the model --------------------------------------------------------------------------------

Qwen2MoeDecoderLayerImpl::Qwen2MoeDecoderLayerImpl(const Qwen2MoeConfig& c, int64_t index,
                                                   MoeBlockOptions moe_options,
                                                   const ProcessGroups& groups,
                                                   AttentionKernel attention) {
  input_layernorm = register_module("input_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", Qwen2MoeAttention(c, attention));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  if (c.is_moe_layer(index))
    moe = register_module("moe", MoeBlock(std::move(moe_options), groups));
  else
    mlp = register_module("mlp",
                          ExpertBank(ExpertBankOptions(c.hidden_size, c.intermediate_size, 1)));
}

Qwen2MoeForCausalLMImpl::Qwen2MoeForCausalLMImpl(Qwen2MoeOptions options)
    : options_(std::move(options)) {
  // Every draw from a seeded stream (what no checkpoint holds must agree across ranks and runs),
  // each decoder layer from its own below; the caller's stream is left where it was.
  ScopedSeed build_seed(layer_seed(options_.seed(), -1));
  const auto& c = options_.model();
  if (c.gptq && options_.quant().experts() == config::QUANT_NONE)
    options_.quant(gptq_expert_quant(*c.gptq));
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layer_list_ = register_module("layers", torch::nn::ModuleList());
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) moe_layers += c.is_moe_layer(i) ? 1 : 0;
  const PlacementPtr& placement = options_.placement();
  if (placement)
    placement->check_fits(moe_layers, c.num_experts, options_.groups().ep_size(),
                          "parallel.placement " + placement->path);
  for (int64_t i = 0, moe_index = 0; i < c.num_hidden_layers; ++i) {
    auto moe_options = MoeBlockOptions(c.hidden_size, c.num_experts, c.moe_intermediate_size)
                           .shared_expert_intermediate_size(c.shared_expert_intermediate_size)
                           .router(router_config(options_))
                           .gemm(options_.gemm())
                           .expert_quant(quant_options(options_.quant()))
                           .quantize_shared_expert(options_.quant().shared_expert());
    if (placement && c.is_moe_layer(i))
      moe_options.placement(placement->layers[size_t(moe_index++)]);
    try {
      ScopedSeed seed(layer_seed(options_.seed(), i));
      layers_.push_back(
          Qwen2MoeDecoderLayer(c, i, moe_options, options_.groups(), options_.attention()));
    } catch (const Error& e) {  // a quantization group size the widths do not fit: bad config
      if (options_.quant().experts() == config::QUANT_NONE) throw;
      throw ConfigError(detail::concat("model.quant.group_size = ", options_.quant().group_size(),
                                       ": ", e.what()),
                        "model.quant.group_size");
    }
    layer_list_->push_back(layers_.back());
  }
  norm = register_module("norm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  lm_head = register_module(
      "lm_head",
      torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
  if (c.tie_word_embeddings) lm_head->weight = embed_tokens->weight;
  const int64_t d = c.attention_head_dim();
  inv_freq_ = 1.0 / torch::pow(c.rope_theta, torch::arange(0, d, 2, torch::kFloat) / double(d));
}

namespace {

// One decoder layer on the residual stream h; an MoE layer's routing and load land in `moe`
// (its hidden states dropped).
torch::Tensor run_layer(Qwen2MoeDecoderLayerImpl& l, torch::Tensor h, const torch::Tensor& cos,
                        const torch::Tensor& sin, const torch::Tensor& mask, bool causal_only,
                        const torch::Tensor& input_ids, MoeOutput& moe) {
  // Phase boundaries (common/phase_clock.h) time a profiled step; otherwise they return x.
  auto a =
      l.self_attn(phase_boundary(l.input_layernorm(h), StepPhase::kOther, StepPhase::kAttention),
                  cos, sin, mask, causal_only);
  h = h + phase_boundary(a, StepPhase::kAttention, StepPhase::kOther);
  auto x = l.post_attention_layernorm(h);
  if (!l.moe) return h + l.mlp->forward_one(0, x.reshape({-1, x.size(-1)})).view(x.sizes());
  moe = l.moe(x, input_ids);
  h = h + moe.hidden;
  moe.hidden = torch::Tensor();
  return h;
}

}  // namespace

CausalLmOutput Qwen2MoeForCausalLMImpl::forward(const torch::Tensor& input_ids,
                                                const torch::Tensor& attention_mask) {
  CausalLmOutput out = forward_hidden_states(input_ids, attention_mask);
  out.logits = forward_linear(lm_head, out.hidden_states);
  out.hidden_states = torch::Tensor();
  return out;
}

CausalLmOutput Qwen2MoeForCausalLMImpl::forward_hidden_states(const torch::Tensor& input_ids,
                                                              const torch::Tensor& attention_mask) {
  SY_CHECK(input_ids.dim() == 2, "Qwen2Moe: input_ids must be [batch, seq], got ",
           input_ids.sizes());
  const int64_t B = input_ids.size(0), S = input_ids.size(1);
  auto h = embed_tokens(input_ids);
  const auto dtype = h.scalar_type();
  const auto device = h.device();

  // Positions 0..S-1 for every row, padded or not (what transformers uses without a cache).
  auto freqs =
      to_device_without_sync(torch::outer(torch::arange(S, torch::kFloat), inv_freq_), device);
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(dtype), sin = emb.sin().to(dtype);

  auto allowed =
      torch::ones({S, S}, torch::dtype(torch::kBool).device(device)).tril().view({1, 1, S, S});
  if (attention_mask.defined()) {
    SY_CHECK(attention_mask.sizes() == input_ids.sizes(), "Qwen2Moe: attention_mask ",
             attention_mask.sizes(), " does not match input_ids ", input_ids.sizes());
    allowed = allowed & attention_mask.to(device).to(torch::kBool).view({B, 1, 1, S});
  }
  auto mask = torch::zeros(allowed.sizes(), torch::dtype(dtype).device(device))
                  .masked_fill(allowed.logical_not(), dtype_min(dtype));

  CausalLmOutput out;
  out.router_loss = torch::zeros({}, torch::dtype(torch::kFloat).device(device));
  const bool causal_only = !attention_mask.defined();
  const bool recompute = options_.recompute_layers() && torch::GradMode::is_enabled();
  for (auto& l : layers_) {
    MoeOutput m;
    if (!recompute) {
      h = run_layer(*l, h, cos, sin, mask, causal_only, input_ids, m);
    } else {
      // Only the layer's input is kept; backward runs the layer again
      // (models/layer_recompute.h). Its router and distillation losses leave as outputs, so
      // their gradients reach the router.
      auto kept = std::make_shared<MoeOutput>();
      auto outputs =
          recompute_in_backward(h, [layer = l.ptr(), cos, sin, mask, causal_only, input_ids, kept](
                                       const torch::Tensor& x, bool recomputing) {
            MoeOutput first;
            auto y = run_layer(*layer, x, cos, sin, mask, causal_only, input_ids, first);
            std::vector<torch::Tensor> result{y, first.routing.loss, first.distill_loss};
            if (!recomputing) *kept = std::move(first);
            return result;
          });
      h = outputs[0];
      m = std::move(*kept);
      m.routing.loss = outputs[1];
      m.distill_loss = outputs[2];
    }
    if (l->moe) {
      out.router_loss = out.router_loss + m.routing.loss;
      out.moe.push_back(std::move(m));
    }
  }
  out.hidden_states = phase_boundary(norm(h), StepPhase::kOther, StepPhase::kHead);
  return out;
}

std::pair<int64_t, int64_t> quantize_experts(Qwen2MoeForCausalLMImpl& model,
                                             const config::QuantConfig& quant) {
  int64_t before = 0, after = 0;
  for (const auto& layer : model.layers()) {
    if (!layer->moe) continue;
    auto [b, a] = quantize_block(layer->moe, quant);
    before += b;
    after += a;
  }
  return {before, after};
}

}  // namespace switchyard
