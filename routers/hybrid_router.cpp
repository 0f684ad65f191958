// Hybrid router: a learned mix of a linear gate and an MLP.
//   logits = a W x + (1 - a) (W2 act(W1 x + b1) + b2),  a = sigmoid(m), m learned
// init_from_gate fills the linear part, so a replaced Qwen gate keeps its knowledge.
#include <cmath>

#include "routers/router.h"

namespace switchyard {

class HybridRouterImpl : public RouterImpl {
 public:
  explicit HybridRouterImpl(const RouterOptions& o)
      : RouterImpl(o),
        activation_(o.config().hybrid().activation()),
        linear_(register_module(
            "linear", torch::nn::Linear(
                          torch::nn::LinearOptions(o.hidden_size(), o.num_experts()).bias(false)))),
        fc1_(register_module("fc1",
                             torch::nn::Linear(o.hidden_size(), o.config().hybrid().mlp_hidden()))),
        fc2_(register_module(
            "fc2", torch::nn::Linear(o.config().hybrid().mlp_hidden(), o.num_experts()))) {
    const double a = o.config().hybrid().initial_mix();
    mix_logit_ = register_parameter("mix_logit", torch::full({}, std::log(a / (1.0 - a))));
  }

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor&) override {
    auto a = torch::sigmoid(mix_logit_).to(x.dtype());
    return a * linear_(x) + (1 - a) * fc2_(apply_activation(activation_, fc1_(x)));
  }

  bool init_from_gate(const torch::Tensor& w) override {
    copy_gate_weight(linear_->weight, w, kind());
    return true;
  }

  std::string kind() const override { return "hybrid"; }

 private:
  config::Activation activation_;
  torch::nn::Linear linear_, fc1_, fc2_;
  torch::Tensor mix_logit_;
};

RouterPtr make_hybrid_router(const RouterOptions& o) {
  return std::make_shared<HybridRouterImpl>(o);
}

}  // namespace switchyard
