// Attention router: each token's projected query attends to learned expert keys.
//   q_h = Wq_h x (h = 1..heads, each head_dim wide);  logits_e = mean_h q_h . key_{e,h} / sqrt(d)
// Heads average rather than concatenate, so the logit scale does not grow with the head count.
#include <cmath>

#include "routers/router.h"

namespace switchyard {

class AttentionRouterImpl : public RouterImpl {
 public:
  explicit AttentionRouterImpl(const RouterOptions& o)
      : RouterImpl(o),
        heads_(o.config().attention().num_heads()),
        head_dim_(o.config().attention().head_dim()) {
    query_ = register_module(
        "query", torch::nn::Linear(
                     torch::nn::LinearOptions(o.hidden_size(), heads_ * head_dim_).bias(false)));
    // Keys ~ N(0, 1/d) keep q.k / sqrt(d) near unit scale at initialisation.
    keys_ = register_parameter(
        "expert_keys", torch::randn({o.num_experts(), heads_, head_dim_}) / std::sqrt(head_dim_));
  }

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor&) override {
    auto q = query_(x).view({x.size(0), heads_, head_dim_});               // [T, h, d]
    auto scores = torch::einsum("thd,ehd->te", {q, keys_.to(q.dtype())});  // summed over heads
    return scores / (double(heads_) * std::sqrt(double(head_dim_)));
  }

  std::string kind() const override { return "attention"; }

 private:
  int64_t heads_, head_dim_;
  torch::nn::Linear query_{nullptr};
  torch::Tensor keys_;
};

RouterPtr make_attention_router(const RouterOptions& o) {
  return std::make_shared<AttentionRouterImpl>(o);
}

}  // namespace switchyard
