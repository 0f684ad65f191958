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
///   or, decided on the device:  opt.step(lr_tensor, finite); ... opt.count_applied(n);
class AdamW {
 public:
  /// Parameters with requires_grad only; moments are fp32 whatever the parameter's dtype.
  AdamW(NamedTensors params, AdamWOptions options);

  /// One update with learning rate `lr`. Parameters without a gradient are left alone.
  void step(double lr);
  /// The same update, decided on the device: `lr` is a 0-dim double and `apply` a 0-dim bool,
  /// both on the parameters' device. Where `apply` is false nothing changes (parameters,
  /// moments, the step count), whatever the gradients hold, NaN included; nothing is read back
  /// to the host, so a GPU never waits for the verdict. steps() learns of these steps only
  /// from count_applied().
  void step(const torch::Tensor& lr, const torch::Tensor& apply);
  /// The host's side of device-decided steps: `n` more of them were applied (the caller read
  /// their verdicts).
  void count_applied(int64_t n) { steps_ += n; }
  void zero_grad();

  /// Applied steps as the host knows them (step(double) and count_applied()).
  int64_t steps() const { return steps_; }
  /// Applied steps on the device (int64, 0-dim): the bias correction's count, which the
  /// schedule's rate is indexed by without a read.
  const torch::Tensor& device_steps() const { return device_steps_; }
  const NamedTensors& params() const { return params_; }

  /// "exp_avg.NAME" and "exp_avg_sq.NAME" for every parameter, and "step" (int64 scalar).
  /// Reads the device's step count, and throws Error if steps() has not counted every applied
  /// step yet (a checkpoint between unread steps would store the wrong step).
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
  torch::Tensor device_steps_;
};

}  // namespace switchyard
