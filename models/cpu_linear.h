// Linear layers whose bf16/fp16 GEMMs run in fp32 on the CPU, a chunk of the weight at a time:
// the model's CPU path for every bf16 linear (attention, dense MLP, shared expert, LM head) on
// CPUs without bf16 (fp16) instructions. Where the CPU has them, torch's own GEMMs serve.
#pragma once

#include <torch/torch.h>

namespace switchyard {

/// How bf16 and fp16 GEMMs run on the CPU.
enum class CpuHalfGemm {
  /// kNative for bf16 where cpu_has_native_gemm says so, else kFp32Chunks; the environment
  /// variable SWITCHYARD_CPU_BF16_GEMM=chunks or =native overrides that choice for a process
  /// (=auto, or unset: the choice itself; anything else is a one-line error).
  kAuto,
  kFp32Chunks,  ///< cpu_linear: fp32 GEMMs over chunks of the weight converted on the fly
  kNative,      ///< torch's own kernels on the bf16/fp16 operands
};

/// Whether torch has oneDNN kernels for `dtype` GEMMs on this CPU
/// (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`, `..._fp16_...`): also on AVX-512 CPUs
/// without bf16 instructions, where oneDNN emulates them. Elsewhere (AVX2) torch's bf16 GEMMs
/// are a reference loop, up to 140x slower than fp32 (bench/RESULTS.md). Asked once per process.
bool torch_has_onednn_gemm(torch::ScalarType dtype);

/// kAuto's choice: true for bf16 where the CPU has bf16 instructions (AVX512-BF16, AMX-BF16 or
/// AVX-NE-CONVERT, by CPUID) and torch_has_onednn_gemm. There torch's bf16 GEMMs took 0.34-0.51
/// of fp32's time and 0.36-0.43 of the fp32 chunks' (`switchyard bench linear`,
/// bench/RESULTS.md). False for other dtypes: fp16 keeps the chunks, measured nowhere else.
bool cpu_has_native_gemm(torch::ScalarType dtype);

/// While alive, bf16/fp16 GEMMs on the CPU run as `mode` says, in every thread: for tests and
/// benchmarks comparing the two paths on one machine, from one thread, nested scopes only (the
/// mode is one process-wide value). Restores the previous mode on leaving.
///   usage: { CpuHalfGemmScope chunks(CpuHalfGemm::kFp32Chunks); y = forward_linear(m, x); }
class CpuHalfGemmScope {
 public:
  explicit CpuHalfGemmScope(CpuHalfGemm mode);
  ~CpuHalfGemmScope();
  CpuHalfGemmScope(const CpuHalfGemmScope&) = delete;
  CpuHalfGemmScope& operator=(const CpuHalfGemmScope&) = delete;

 private:
  CpuHalfGemm saved_;
};

/// Whether the CPU's GEMMs of `dtype` (bf16, fp16) are torch's own in the current mode: kNative,
/// or kAuto where SWITCHYARD_CPU_BF16_GEMM or else cpu_has_native_gemm(dtype) says so.
bool cpu_half_gemm_is_native(torch::ScalarType dtype);

/// True for the inputs cpu_linear serves: x and weight on the CPU, both bf16 or both fp16, where
/// the mode for their dtype is kFp32Chunks. Everything else (fp32, CUDA, a CPU with native bf16
/// GEMMs) keeps torch's own kernels.
bool gemm_in_fp32_on_cpu(const torch::Tensor& x, const torch::Tensor& weight);

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
