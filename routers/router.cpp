// RouterImpl: the part every router shares (jitter, gating, parameter count).
#include "routers/router.h"

namespace switchyard {

RouterImpl::RouterImpl(RouterOptions options)
    : options_(std::move(options)),
      gating_(GatingOptions::from_config(options_.config(), options_.num_experts())) {
  gating_.balance_group = options_.balance_group();
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
  return gate(compute_logits(x, token_ids), gating_);
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
