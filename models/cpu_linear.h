// Linear layers whose bf16/fp16 GEMMs run in fp32 on the CPU, a chunk of the weight at a time:
// the model's CPU path for every bf16 linear (attention, dense MLP, shared expert, LM head).
#pragma once

#include <torch/torch.h>

namespace switchyard {

/// True for the inputs cpu_linear serves: x and weight on the CPU, both bf16 or both fp16
/// (weight undefined: one made in fp32 on the fly, as dequantised experts are). Everything
/// else (fp32, CUDA) keeps torch's own kernels.
bool gemm_in_fp32_on_cpu(const torch::Tensor& x, const torch::Tensor& weight = {});

/// y = x W^T + b with x [..., in], weight [out, in], bias [out] or undefined; y in x's dtype.
/// The GEMMs of forward and backward run in fp32 over chunks of W's rows, each converted from
/// bf16 on the fly, so no fp32 copy of a big weight (the 151936 x 2048 LM head) exists at once.
/// Backward computes the weight and bias gradients only when they require grad, and x is kept
/// for backward only when the weight requires grad. chunk_rows: rows of W per fp32 chunk
/// (0: as many as fit in 16 MB of fp32; tests pass small values).
///   usage: if (gemm_in_fp32_on_cpu(x, w)) y = cpu_linear(x, w, b);
torch::Tensor cpu_linear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias = {}, int64_t chunk_rows = 0);

/// m(x), through cpu_linear where gemm_in_fp32_on_cpu says so: the drop-in for Linear::forward.
///   usage: auto q = forward_linear(q_proj, x);
torch::Tensor forward_linear(const torch::nn::Linear& m, const torch::Tensor& x);

}  // namespace switchyard
