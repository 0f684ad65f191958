// MLP router: logits = W2 act(W1 x + b1) + b2, hidden width and activation from the config.
#include "routers/router.h"

namespace switchyard {

class MlpRouterImpl : public RouterImpl {
 public:
  explicit MlpRouterImpl(const RouterOptions& o)
      : RouterImpl(o),
        activation_(o.config().mlp().activation()),
        fc1_(register_module("fc1", torch::nn::Linear(o.hidden_size(), o.config().mlp().hidden()))),
        fc2_(register_module("fc2",
                             torch::nn::Linear(o.config().mlp().hidden(), o.num_experts()))) {}

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor&) override {
    return fc2_(apply_activation(activation_, fc1_(x)));
  }

  std::string kind() const override { return "mlp"; }

 private:
  config::Activation activation_;
  torch::nn::Linear fc1_, fc2_;
};

RouterPtr make_mlp_router(const RouterOptions& o) {
  return std::make_shared<MlpRouterImpl>(o);
}

}  // namespace switchyard
