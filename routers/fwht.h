// The fast Walsh-Hadamard transform as a differentiable op: y = H_n x / sqrt(n) along the last
// dimension (n a power of two). Orthonormal and symmetric, so its gradient is the same transform.
#pragma once

#include <torch/torch.h>

namespace switchyard {

/// Orthonormal FWHT over the last dimension, O(n log n), with autograd. CPU: vectorised butterfly
/// per row; CUDA: a shared-memory kernel when built with CUDA. fp16/bf16 compute in fp32.
///   usage: auto y = fwht(torch::randn({1024, 2048}));   // equals x @ hadamard_matrix(2048)
torch::Tensor fwht(const torch::Tensor& x);

/// The same transform without autograd bookkeeping (what forward and backward both call).
torch::Tensor fwht_no_grad(const torch::Tensor& x);

/// The explicit normalised Sylvester-Hadamard matrix H_n / sqrt(n), for tests and baselines.
torch::Tensor hadamard_matrix(int64_t n, torch::Dtype dtype = torch::kFloat,
                              torch::Device device = torch::kCPU);

}  // namespace switchyard
