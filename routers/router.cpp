// RouterImpl: the part every router shares (jitter, gating, parameter count).
#include "routers/router.h"

namespace switchyard {

RouterImpl::RouterImpl(RouterOptions options)
    : options_(std::move(options)),
      gating_(GatingOptions::from_config(options_.config(), options_.num_experts())) {
  gating_.balance_group = options_.balance_group();
  if (options_.config().has_expert_bias())
    // fp32 whatever the default dtype a model is built under (load_model builds in the run's):
    // a checkpoint's bias is copied in before the model's dtype is set, and must not round.
    expert_bias_ =
        register_buffer("expert_bias", torch::zeros({options_.num_experts()}, torch::kFloat));
}

void RouterImpl::update_expert_bias(const torch::Tensor& load) {
  TORCH_CHECK(expert_bias_.defined(), kind(), " router: no expert bias (router.expert_bias)");
  TORCH_CHECK(load.numel() == expert_bias_.numel(), "expert load has ", load.numel(),
              " entries for ", expert_bias_.numel(), " experts");
  torch::NoGradGuard no_grad;
  auto l = load.reshape({-1}).to(expert_bias_.device(), torch::kDouble);
  const double rate = options_.config().expert_bias().update_rate();
  expert_bias_.add_(((l.mean() - l).sign() * rate).to(torch::kFloat));
}

// Module::to casts every buffer; casting the bias back afterwards would keep its bf16 rounding.
// The fp32 values are held aside (a detached view keeps the storage that set_data replaces).
void RouterImpl::to(torch::Dtype dtype, bool non_blocking) {
  const torch::Tensor fp32 = expert_bias_.defined() ? expert_bias_.detach() : torch::Tensor();
  torch::nn::Module::to(dtype, non_blocking);
  if (fp32.defined()) expert_bias_.set_data(fp32.to(torch::kFloat));
}

void RouterImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  const torch::Tensor fp32 = expert_bias_.defined() ? expert_bias_.detach() : torch::Tensor();
  torch::nn::Module::to(device, dtype, non_blocking);
  if (fp32.defined()) expert_bias_.set_data(fp32.to(device, torch::kFloat, non_blocking));
}

Routing RouterImpl::route(const torch::Tensor& hidden, const torch::Tensor& token_ids) {
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(1) == options_.hidden_size(), kind(),
              " router expects hidden states [tokens, ", options_.hidden_size(), "], got ",
              hidden.sizes());
  torch::Tensor x = hidden;
  const double jitter = options_.config().jitter_noise();
  if (is_training() && jitter > 0) {
    // Multiplicative jitter on the router input (Switch Transformer), training only.
    x = x * torch::empty_like(x).uniform_(1.0 - jitter, 1.0 + jitter);
  }
  return gate(compute_logits(x, token_ids), gating_, expert_bias_);
}

int64_t RouterImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void copy_gate_weight(torch::Tensor& weight, const torch::Tensor& gate_weight,
                      const std::string& router_kind) {
  TORCH_CHECK(gate_weight.sizes() == weight.sizes(), "checkpoint gate weight ", gate_weight.sizes(),
              " does not match the ", router_kind, " router's ", weight.sizes());
  torch::NoGradGuard no_grad;
  weight.copy_(gate_weight);
}

torch::Tensor apply_activation(config::Activation activation, const torch::Tensor& x) {
  switch (activation) {
    case config::GELU:
      return torch::gelu(x);
    case config::RELU:
      return torch::relu(x);
    case config::SILU:
      return torch::silu(x);
    case config::TANH:
      return torch::tanh(x);
  }
  TORCH_CHECK(false, "unknown activation ", int(activation));
}

}  // namespace switchyard
