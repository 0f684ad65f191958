// Linear router: logits = W x, W [E, H], no bias — the gate of Qwen1.5-MoE, Mixtral and Switch.
// init_from_gate copies a checkpoint's gate so the original logits are reproduced exactly.
#include "routers/router.h"

namespace switchyard {

class LinearRouterImpl : public RouterImpl {
 public:
  explicit LinearRouterImpl(const RouterOptions& o)
      : RouterImpl(o),
        gate_(register_module(
            "gate", torch::nn::Linear(
                        torch::nn::LinearOptions(o.hidden_size(), o.num_experts()).bias(false)))) {}

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor&) override {
    return gate_(x);
  }

  bool init_from_gate(const torch::Tensor& w) override {
    copy_gate_weight(gate_->weight, w, kind());
    return true;
  }

  torch::Tensor gate_weight() const override { return gate_->weight; }

  std::string kind() const override { return "linear"; }

 private:
  torch::nn::Linear gate_;
};

RouterPtr make_linear_router(const RouterOptions& o) {
  return std::make_shared<LinearRouterImpl>(o);
}

}  // namespace switchyard
