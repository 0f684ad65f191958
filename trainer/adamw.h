// AdamW with decoupled weight decay over named parameters. The state lives per parameter name
// (not per tensor address, as torch::optim keeps it), so a checkpoint can store each moment
// next to its parameter and a run resumed at another EP size finds it by name.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace switchyard {

struct AdamWOptions {
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.95;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

///   usage: AdamW opt(trainable_named_parameters(model), AdamWOptions().weight_decay(0.1));
///          loss.backward(); opt.step(lr); opt.zero_grad();
class AdamW {
 public:
  /// Parameters with requires_grad only; moments are fp32 whatever the parameter's dtype.
  AdamW(NamedTensors params, AdamWOptions options);

  /// One update with learning rate `lr`. Parameters without a gradient are left alone.
  void step(double lr);
  void zero_grad();

  int64_t steps() const { return steps_; }
  const NamedTensors& params() const { return params_; }

  /// "exp_avg.NAME" and "exp_avg_sq.NAME" for every parameter, and "step" (int64 scalar).
  NamedTensors state() const;
  /// `param`'s two moments (fp32, its shape), to move with it (live expert re-placement); empty
  /// when the optimizer does not hold it.
  std::vector<torch::Tensor> moments(const torch::Tensor& param) const;
  /// Inverse of state(); throws Error naming the first missing or mis-shaped entry.
  void load_state(const NamedTensors& state);

  /// Norms and biases (tensors of fewer than two dimensions) take no weight decay.
  static bool decays(const torch::Tensor& param) { return param.dim() >= 2; }

 private:
  NamedTensors params_;
  AdamWOptions options_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

}  // namespace switchyard
