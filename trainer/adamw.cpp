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
  const auto device =
      params_.empty() ? torch::Device(torch::kCPU) : params_.front().second.device();
  device_steps_ = torch::zeros({}, torch::dtype(torch::kLong).device(device));
}

void AdamW::step(double lr) {
  const auto on = device_steps_.options();
  step(torch::full({}, lr, on.dtype(torch::kDouble)), torch::ones({}, on.dtype(torch::kBool)));
  ++steps_;
}

void AdamW::step(const torch::Tensor& lr, const torch::Tensor& apply) {
  torch::NoGradGuard no_grad;
  // Every factor is a 0-dim tensor on the device, computed once per step. A skipped step turns
  // them into identities: the moments decay by 1 and add zeroed gradients, the weight decays by
  // 1 and moves by 0, the count adds 0.
  const auto on = apply.to(torch::kDouble);
  device_steps_.add_(apply.to(torch::kLong));
  // A skipped first step leaves the count at 0: its corrections must still be finite.
  const auto t = device_steps_.clamp_min(1).to(torch::kDouble);
  const double b1 = options_.beta1(), b2 = options_.beta2();
  const auto bias1 = 1.0 - torch::pow(b1, t), bias2 = (1.0 - torch::pow(b2, t)).to(torch::kFloat);
  const auto keep1 = (1.0 - (1.0 - b1) * on).to(torch::kFloat);
  const auto keep2 = (1.0 - (1.0 - b2) * on).to(torch::kFloat);
  const auto decay = (1.0 - lr * options_.weight_decay() * on).to(torch::kFloat);
  const auto step_size = (-(lr / bias1) * on).to(torch::kFloat);
  const auto skip = apply.logical_not();
  // Two scratch slices reused for every parameter, chunk by chunk: a fresh tensor per parameter
  // meant fresh pages for all of the model's elements every step on a CPU, and a scratch as
  // large as the largest parameter (an embedding) is that much memory held.
  constexpr int64_t kChunk = int64_t(1) << 20;
  int64_t largest = 0;
  for (const auto& [name, p] : params_)
    if (p.grad().defined()) largest = std::max(largest, p.numel());
  if (largest == 0) return;
  const auto fp32 = params_.front().second.options().dtype(torch::kFloat);
  auto denom_scratch = torch::empty({std::min(largest, kChunk)}, fp32);
  auto update_scratch = torch::empty_like(denom_scratch);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    // The gradient itself where it is fp32 (zero_grad drops it next): a skipped step's NaN
    // must not reach the moments even times 0.
    auto g = p.grad().to(torch::kFloat).masked_fill_(skip, 0.0);
    exp_avg_[i].mul_(keep1).add_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(keep2).addcmul_(g, g, 1.0 - b2);
    // The update in fp32, written back in the parameter's own dtype: master += (step_size *
    // m) / (sqrt(v / bias2) + eps), rounded as addcdiv_ with a host scalar rounds it.
    auto master = p.to(torch::kFloat);
    if (options_.weight_decay() > 0 && decays(p)) master.mul_(decay);
    const auto m = exp_avg_[i].view(-1), v = exp_avg_sq_[i].view(-1), w = master.view(-1);
    for (int64_t at = 0; at < p.numel(); at += kChunk) {
      const int64_t n = std::min(kChunk, p.numel() - at);
      auto denom = denom_scratch.narrow(0, 0, n).copy_(v.narrow(0, at, n));
      denom.div_(bias2).sqrt_().add_(options_.eps());
      auto update = update_scratch.narrow(0, 0, n);
      torch::mul_out(update, m.narrow(0, at, n), step_size);
      w.narrow(0, at, n).addcdiv_(update, denom);
    }
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
  const int64_t applied = device_steps_.item<int64_t>();
  SY_CHECK(applied == steps_, "optimizer state: ", applied, " steps applied on the device, ",
           steps_, " counted on the host (steps whose verdicts were not read yet)");
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
  device_steps_.fill_(steps_);
}

}  // namespace switchyard
