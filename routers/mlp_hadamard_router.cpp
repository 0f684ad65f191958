// MLP-Hadamard router: an MLP hidden layer of power-of-two width n, mixed by the orthonormal
// fast Walsh-Hadamard transform, read out on E coordinates with a per-expert affine.
//   h = act(W1 x + b1)  [n];   z = H_n h / sqrt(n);   logits_e = s_e z_{e+1} + b_e   (E < n)
// z_0 is skipped: it is the DC term sum(h)/sqrt(n), and GELU/ReLU outputs are biased positive,
// so expert 0 would win every token. Rows 1..n-1 of H sum to zero and see no such bias.
// The transform is a fixed, parameter-free dense mixing in O(n log n): every logit sees every
// hidden unit, with n*H + n + 2E parameters instead of the MLP router's n*H + n + n*E + E.
#include "routers/fwht.h"
#include "routers/router.h"

namespace switchyard {

class MlpHadamardRouterImpl : public RouterImpl {
 public:
  explicit MlpHadamardRouterImpl(const RouterOptions& o)
      : RouterImpl(o),
        width_(o.config().mlp_hadamard().hidden()),
        activation_(o.config().mlp_hadamard().activation()) {
    TORCH_CHECK(width_ > o.num_experts() && (width_ & (width_ - 1)) == 0,
                "mlp_hadamard.hidden must be a power of two > num_experts, got ", width_);
    fc1_ = register_module("fc1", torch::nn::Linear(o.hidden_size(), width_));
    scale_ = register_parameter("expert_scale", torch::ones({o.num_experts()}));
    bias_ = register_parameter("expert_bias", torch::zeros({o.num_experts()}));
  }

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor&) override {
    auto z = fwht(apply_activation(activation_, fc1_(x)));
    auto head = z.narrow(-1, 1, options_.num_experts());
    return head * scale_.to(x.dtype()) + bias_.to(x.dtype());
  }

  std::string kind() const override { return "mlp_hadamard"; }

 private:
  int64_t width_;
  config::Activation activation_;
  torch::nn::Linear fc1_{nullptr};
  torch::Tensor scale_, bias_;
};

RouterPtr make_mlp_hadamard_router(const RouterOptions& o) {
  return std::make_shared<MlpHadamardRouterImpl>(o);
}

}  // namespace switchyard
