// Weight-only quantization of stacked expert weights [E, out, in] for frozen experts: int8 per
// output channel, int4 per group of input columns (symmetric or asymmetric), dequantised on the
// fly (one expert at a time, or one layer's bank for a grouped GEMM), so full-precision copies
// never exist for every layer's experts at once.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

namespace switchyard {

enum class QuantKind { kNone, kInt8, kInt4 };

struct QuantOptions {
  TORCH_ARG(QuantKind, kind) = QuantKind::kNone;
  TORCH_ARG(int64_t, group_size) = 128;  ///< int4: input columns sharing a scale (and zero)
  TORCH_ARG(bool, symmetric) = true;     ///< int4: no zero point
};

/// One [out, in] weight as 4-bit codes with per-group scales and zero points, the form GPTQ
/// checkpoints hold (models/gptq.h): w[o, i] = (codes[o, i] - zero[o, g]) * scale[o, g],
/// g = i / (in / groups).
struct Int4Codes {
  /// uint8 [out, in / 2]: two codes per byte, even column in the low nibble (QuantizedWeight's
  /// int4 layout, which is also a GPTQ qweight's bytes once its words are transposed).
  torch::Tensor packed;
  torch::Tensor scale;  ///< float [out, groups]
  torch::Tensor zero;   ///< uint8 [out, groups] (GPTQ v1 zeros may reach 16)
  /// uint8 [out, in], values 0..15.
  torch::Tensor codes() const;
  /// [out, in] in `dtype`; the same arithmetic as QuantizedWeight::dequantize.
  torch::Tensor dequantize(torch::ScalarType dtype) const;
  /// Row-wise concatenation (a SwiGLU expert's gate rows, then its up rows).
  static Int4Codes cat_rows(const Int4Codes& top, const Int4Codes& bottom);
};

/// Quantized [E, out, in] weights.
///   int8: q int8 [E, out, in], scale [E, out]             w = q * scale
///   int4: q uint8 [E, out, in / 2] (two 4-bit codes per byte, even column in the low nibble),
///         scale [E, out, in / group], zero uint8 [E, out, in / group] (asymmetric only)
///         w = (code - zero) * scale, zero = 8 when symmetric (codes 0..15 hold -8..7)
struct QuantizedWeight {
  QuantOptions options;
  std::vector<int64_t> shape;  ///< [E, out, in]
  torch::Tensor q, scale, zero;

  /// Expert e's weight [out, in] in `dtype`.
  torch::Tensor dequantize(int64_t expert, torch::ScalarType dtype) const;
  /// Experts [begin, end) as one [end - begin, out, in] tensor in `dtype`, on the codes' device:
  /// on a GPU one kernel launch (models/dequant_cuda.h), on the CPU a loop per expert; both
  /// compute models/dequant_math.h's arithmetic, so they agree bit for bit.
  torch::Tensor dequantize_experts(int64_t begin, int64_t end, torch::ScalarType dtype) const;
  /// Bytes held (codes, scales, zeros).
  int64_t nbytes() const;

  /// Re-quantizes expert e from a full-precision [out, in] weight (loading, one expert at a time).
  void set_expert(int64_t expert, const torch::Tensor& w);
  /// Sets expert e's codes as they are, with no re-quantization (GPTQ checkpoints). Needs int4
  /// with zero points and the same group size; throws Error otherwise.
  void set_expert_codes(int64_t expert, const Int4Codes& codes);

  /// Throws Error when the shape does not fit (int4 needs in % group_size == 0, group even).
  static QuantizedWeight quantize(const torch::Tensor& w, const QuantOptions& options);
  /// All-zero codes of `shape` [E, out, in], to be filled with set_expert.
  static QuantizedWeight empty(const std::vector<int64_t>& shape, const QuantOptions& options);
};

/// x [R, in] -> x @ W_e^T with W_e dequantised from `w`. Autograd keeps only the codes: backward
/// dequantises again for the input gradient (no weight gradient: quantized weights are frozen),
/// so a forward over all experts never holds every full-precision weight for backward. A forward
/// that recomputes a layer in backward (forward_is_recomputation()) keeps W_e for its backward,
/// which follows at once (except on the CPU in bf16, whose GEMMs dequantise a chunk at a time,
/// and where the CPU's GEMM reads the codes itself: int4 at a few rows,
/// models/quantized_cpu_gemm.h).
torch::Tensor quantized_linear(const torch::Tensor& x, std::shared_ptr<const QuantizedWeight> w,
                               int64_t expert);

/// Rows from which CPU bf16/fp16 rows against a dequantised weight take torch's native GEMMs.
/// `switchyard bench quant`'s bf16 rows against int4 experts on a 2-core Xeon with AMX, native
/// against fp32 chunks: 0.56-0.66x as fast at ~4 rows per expert (the extra rounding pass, and
/// oneDNN packing the weight for a handful of rows), 0.74-1.08x at 17, 1.12-1.32x at 34; the
/// shared expert's one weight 1.50-1.68x at 64 rows, 3.2-3.5x at 512 (bench/RESULTS.md).
constexpr int64_t kNativeQuantGemmMinRows = 24;

/// Whether `rows` CPU rows of `dtype` (bf16, fp16) take the chunks of a dequantised weight in
/// their own dtype into torch's native GEMMs (16 MB at a time, each chunk rounded once from the
/// format's fp32 value), rather than fp32 GEMMs on 1 MB fp32 chunks: from
/// kNativeQuantGemmMinRows rows, where models/cpu_linear.h takes native GEMMs for the dtype.
bool cpu_dequantised_gemm_is_native(torch::ScalarType dtype, int64_t rows);

/// x [R, in], rows grouped by expert (offs: int32 running ends, as at::_grouped_mm takes them)
/// -> [R, out], one grouped GEMM on the whole bank dequantised at once, in x's dtype. Autograd
/// keeps only the codes, as quantized_linear does; backward dequantises the bank again, except
/// after a recomputed forward, which keeps the bank for it.
torch::Tensor quantized_grouped_linear(const torch::Tensor& x,
                                       std::shared_ptr<const QuantizedWeight> w,
                                       const torch::Tensor& offs);

/// Experts dequantised so far in this process (all threads): each expert of a
/// dequantize_experts call, and each expert a CPU GEMM dequantises in chunks (bf16) or decodes
/// as it multiplies (models/quantized_cpu_gemm.h). A process-wide
/// counter on purpose, as host_reads() is: tests and benchmarks compare it around a step.
int64_t experts_dequantized();

/// 4-bit codes [.., n] (values 0..15, n even) -> bytes [.., n / 2] and back.
torch::Tensor pack_int4(const torch::Tensor& codes);
torch::Tensor unpack_int4(const torch::Tensor& packed);

/// "none", "int8", "int4".
std::string quant_name(QuantKind kind);

}  // namespace switchyard
