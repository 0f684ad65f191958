#include "trainer/adamw.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/errors.h"

namespace switchyard {

AdamW::AdamW(NamedTensors params, AdamWOptions options) : options_(options) {
  for (auto& [name, p] : params) {
    if (!p.requires_grad()) continue;
    params_.emplace_back(name, p);
    auto zeros = torch::zeros(p.sizes(), p.options().dtype(torch::kFloat));
    exp_avg_.push_back(zeros);
    exp_avg_sq_.push_back(zeros.clone());
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1(), b2 = options_.beta2();
  const double bias1 = 1.0 - std::pow(b1, double(steps_));
  const double bias2 = 1.0 - std::pow(b2, double(steps_));
  // One scratch for every parameter's denominator, as large as the largest: a fresh tensor per
  // parameter meant fresh pages for all of the model's elements every step on a CPU.
  int64_t largest = 0;
  for (const auto& [name, p] : params_)
    if (p.grad().defined()) largest = std::max(largest, p.numel());
  if (largest == 0) return;
  auto scratch = torch::empty({largest}, params_.front().second.options().dtype(torch::kFloat));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    auto g = p.grad().to(torch::kFloat);
    exp_avg_[i].mul_(b1).add_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    // The update in fp32, written back in the parameter's own dtype.
    auto master = p.to(torch::kFloat);
    if (options_.weight_decay() > 0 && decays(p)) master.mul_(1.0 - lr * options_.weight_decay());
    auto denom = scratch.narrow(0, 0, p.numel()).view(p.sizes()).copy_(exp_avg_sq_[i]);
    denom.div_(bias2).sqrt_().add_(options_.eps());
    master.addcdiv_(exp_avg_[i], denom, -lr / bias1);
    p.copy_(master);
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  out.emplace_back("step", torch::tensor(steps_, torch::kLong));
  return out;
}

std::vector<torch::Tensor> AdamW::moments(const torch::Tensor& param) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].second.unsafeGetTensorImpl() == param.unsafeGetTensorImpl())
      return {exp_avg_[i], exp_avg_sq_[i]};
  return {};
}

void AdamW::load_state(const NamedTensors& state) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  auto take = [&](const std::string& key, const torch::Tensor& like) {
    auto it = by_name.find(key);
    SY_CHECK(it != by_name.end(), "optimizer state: no entry '", key, "'");
    SY_CHECK(it->second.sizes() == like.sizes(), "optimizer state: '", key, "' is ",
             it->second.sizes(), ", the parameter is ", like.sizes());
    return it->second.to(like.device(), torch::kFloat);
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(take("exp_avg." + params_[i].first, exp_avg_[i]));
    exp_avg_sq_[i].copy_(take("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]));
  }
  auto it = by_name.find("step");
  SY_CHECK(it != by_name.end(), "optimizer state: no entry 'step'");
  steps_ = it->second.item<int64_t>();
}

}  // namespace switchyard
