// The passes over every gradient a step makes between backward and AdamW: the finiteness
// verdict and the squared norm. The trainer uses them, and `bench rates` times them as the
// optimizer's per-parameter cost, so that plan's rate is the trainer's own.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace switchyard {

/// The sum of a gradient's squares in double, slice by slice: a double copy of a whole gradient
/// (2x its bytes, fresh pages on a CPU every step) is what made these passes cost more than
/// AdamW itself on a 500 M-parameter model. Slices of 1 Mi elements are small enough for the
/// allocator to reuse.
///   usage: auto norm2 = squared_sum_in_double(p.grad());
torch::Tensor squared_sum_in_double(const torch::Tensor& g);

/// Whether every gradient of `a` and `b` (parameters; undefined gradients skipped) is finite, as
/// a boolean on `device`: no read back. A sum in double of finite floats cannot overflow, and an
/// inf or NaN makes it non-finite; `sum(kDouble)` converts as it loads, so no double copy of a
/// gradient is made.
///   usage: auto ok = local_gradients_finite(replicated, expert_sharded, device);
torch::Tensor local_gradients_finite(const std::vector<torch::Tensor>& a,
                                     const std::vector<torch::Tensor>& b, torch::Device device);

/// The factor that clips gradients of global norm `norm` (0-dim, on the device) to `clip`:
/// clip / (norm + 1e-6) above it, exactly 1 at or below it (so those gradients keep their
/// values), decided on the device so that a GPU need not wait for the norm.
///   usage: for (auto& g : grads) g.mul_(clipping_scale(norm, 1.0));
torch::Tensor clipping_scale(const torch::Tensor& norm, double clip);

}  // namespace switchyard
