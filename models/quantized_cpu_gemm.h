// GEMMs straight from quantized expert weights on the CPU, for the few rows a router fine-tune
// gives each expert: every weight is decoded once into a few kilobytes of fp32 (four rows at a
// time, vectorised) and used at once by every input row, so no expert-sized weight is written
// and read back, which is what dominates dequantise-then-GEMM at a few rows per expert.
#pragma once

#include <torch/torch.h>

#include "models/weight_quant.h"

namespace switchyard {

/// How quantized experts multiply their rows on the CPU.
enum class CpuQuantGemm {
  /// kFused for int4 weights up to fused_quant_gemm_max_rows(rows' dtype) rows, kDequantise above
  /// and for int8 (whose dequantisation is a plain vectorised loop already); the environment
  /// variable SWITCHYARD_CPU_QUANT_GEMM=dequantise or =fused overrides that choice for a process
  /// (=auto, or unset: the choice itself; anything else is a one-line error).
  kAuto,
  kDequantise,  ///< the weight dequantised (in chunks for bf16/fp16 rows), then torch's GEMM
  kFused,       ///< fused_quantized_matmul_cpu at any row count
};

/// Rows up to which kAuto fuses int4 weights, by the rows' dtype. `switchyard bench quant`, Qwen's
/// expert shape, `fused` against `dequantise`, forward with the input gradient (bench/RESULTS.md):
/// - fp32 rows (whose dequantise path writes whole fp32 experts): 2.9-3.5x faster at about 4
///   rows per expert and 1.35-1.42x at 17 on an AMD EPYC; 2.5-2.7x at 8.5 and 1.7-1.8x at 17
///   on a Xeon with AMX.
/// - bf16 rows (dequantised 1 MB at a time, or into native bf16 GEMMs from 24 rows): on the
///   EPYC 1.19-1.32x at 4 rows, 1.02-1.11x at 17, 0.73-0.75x at 34; on the Xeon 1.1-1.2x at 4,
///   even at 8.5, 0.8x at 13 and 0.7x at 17. The two CPUs cross near 20 and 9 rows.
constexpr int64_t kFusedQuantGemmMaxRows = 20;      ///< fp32 rows
constexpr int64_t kFusedHalfQuantGemmMaxRows = 12;  ///< bf16/fp16 rows: between the two CPUs

/// kAuto's limit for rows of `dtype`.
inline int64_t fused_quant_gemm_max_rows(torch::ScalarType dtype) {
  return dtype == torch::kFloat ? kFusedQuantGemmMaxRows : kFusedHalfQuantGemmMaxRows;
}

/// While alive, quantized CPU GEMMs run as `mode` says, in every thread: for tests and benchmarks
/// comparing both paths in one process, from one thread, nested scopes only (one process-wide
/// value, as CpuHalfGemmScope). Restores the previous mode on leaving.
class CpuQuantGemmScope {
 public:
  explicit CpuQuantGemmScope(CpuQuantGemm mode);
  ~CpuQuantGemmScope();
  CpuQuantGemmScope(const CpuQuantGemmScope&) = delete;
  CpuQuantGemmScope& operator=(const CpuQuantGemmScope&) = delete;

 private:
  CpuQuantGemm saved_;
};

/// Whether a CPU GEMM of `rows` rows against quantized weights of `kind` fuses, in the current
/// mode (kAuto as SWITCHYARD_CPU_QUANT_GEMM or else the kind and the row limit say).
bool cpu_quant_gemm_fuses(QuantKind kind, int64_t rows, torch::ScalarType rows_dtype);

/// a [..., K] (fp32, bf16 or fp16, on the CPU) times expert e's weight W [out, in] of `w`:
/// a @ W^T when transposed (K = in, a forward), a @ W otherwise (K = out, an input gradient).
/// Reads the codes directly: each weight is models/dequant_math.h's fp32 value, accumulated in
/// fp32 (in another order than torch's GEMM, so the last bits differ); the result is in a's dtype.
torch::Tensor fused_quantized_matmul_cpu(const torch::Tensor& a, const QuantizedWeight& w,
                                         int64_t e, bool transposed);

/// Rows [begin, end) of one expert's int4 codes (packed [out, in / 2], scale and zero
/// [out, in / group], zero null when symmetric) into out [end - begin, in] in fp32: the CPU's
/// dequantisation into fp32, vectorised as the kernels above decode, each weight exactly
/// models/dequant_math.h's value.
void dequantize_int4_rows_fp32(const uint8_t* packed, const float* scale, const uint8_t* zero,
                               int64_t in, int64_t group, int64_t begin, int64_t end, float* out);

}  // namespace switchyard
