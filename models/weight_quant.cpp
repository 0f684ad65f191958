// Round-to-nearest quantization. Scales are kept in fp32: they are a small fraction of the bytes
// and keep dequantisation exact up to the code rounding.
#include "models/weight_quant.h"

#include <torch/custom_class.h>

#include <atomic>
#include <type_traits>

#include "common/errors.h"
#include "models/cpu_linear.h"
#include "models/dequant_cuda.h"
#include "models/dequant_math.h"
#include "models/layer_recompute.h"
#include "models/quantized_cpu_gemm.h"

#ifdef SWITCHYARD_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace switchyard {
namespace {
// Experts dequantised in this process (all threads), see experts_dequantized().
std::atomic<int64_t> dequantized_count{0};
}  // namespace

int64_t experts_dequantized() {
  return dequantized_count.load();
}

std::string quant_name(QuantKind kind) {
  switch (kind) {
    case QuantKind::kInt8:
      return "int8";
    case QuantKind::kInt4:
      return "int4";
    default:
      return "none";
  }
}

torch::Tensor pack_int4(const torch::Tensor& codes) {
  SY_CHECK(codes.size(-1) % 2 == 0, "pack_int4: last dimension ", codes.size(-1), " is odd");
  auto c = codes.to(torch::kByte);
  auto even = c.slice(-1, 0, c.size(-1), 2), odd = c.slice(-1, 1, c.size(-1), 2);
  return even.bitwise_or(odd.bitwise_left_shift(4)).contiguous();
}

torch::Tensor unpack_int4(const torch::Tensor& packed) {
  auto low = packed.bitwise_and(0x0F), high = packed.bitwise_right_shift(4);
  auto sizes = packed.sizes().vec();
  sizes.back() *= 2;
  return torch::stack({low, high}, -1).reshape(sizes);
}

namespace {

void check_fits(const std::vector<int64_t>& shape, const QuantOptions& options) {
  SY_CHECK(shape.size() == 3, "quantize: expected [experts, out, in], got ", shape.size(), " dims");
  SY_CHECK(options.kind() != QuantKind::kNone, "quantize: no quantization kind given");
  const int64_t g = options.group_size(), in = shape[2];
  if (options.kind() == QuantKind::kInt4 && (g <= 0 || g % 2 != 0 || in % g != 0))
    throw Error(detail::concat("int4 quantization: input width ", in,
                               " is not a multiple of the group size ", g,
                               " (an even number is required)"));
}

}  // namespace

QuantizedWeight QuantizedWeight::empty(const std::vector<int64_t>& shape,
                                       const QuantOptions& options) {
  check_fits(shape, options);
  QuantizedWeight qw;
  qw.options = options;
  qw.shape = shape;
  const int64_t E = shape[0], out = shape[1], in = shape[2];
  if (options.kind() == QuantKind::kInt8) {
    qw.q = torch::zeros({E, out, in}, torch::kChar);
    qw.scale = torch::zeros({E, out}, torch::kFloat);
    return qw;
  }
  const int64_t groups = in / options.group_size();
  qw.q = torch::zeros({E, out, in / 2}, torch::kByte);
  qw.scale = torch::zeros({E, out, groups}, torch::kFloat);
  if (!options.symmetric()) qw.zero = torch::zeros({E, out, groups}, torch::kByte);
  return qw;
}

QuantizedWeight QuantizedWeight::quantize(const torch::Tensor& weight,
                                          const QuantOptions& options) {
  SY_CHECK(weight.dim() == 3, "quantize: expected [experts, out, in], got ", weight.sizes());
  QuantizedWeight qw = empty(weight.sizes().vec(), options);
  // One expert at a time: temporaries stay the size of one expert's weight.
  for (int64_t e = 0; e < weight.size(0); ++e) qw.set_expert(e, weight[e]);
  return qw;
}

void QuantizedWeight::set_expert(int64_t e, const torch::Tensor& weight) {
  SY_CHECK(weight.dim() == 2 && weight.size(0) == shape[1] && weight.size(1) == shape[2],
           "quantized expert ", e, ": weight ", weight.sizes(), " does not match [", shape[1], ", ",
           shape[2], "]");
  torch::NoGradGuard no_grad;
  auto w = weight.detach().to(torch::kFloat);
  const int64_t out = shape[1], in = shape[2];
  if (options.kind() == QuantKind::kInt8) {
    auto s = w.abs().amax(-1).clamp_min(1e-12) / 127.0;  // [out]
    scale[e].copy_(s);
    q[e].copy_(torch::round(w / s.unsqueeze(-1)).clamp(-127, 127));
    return;
  }
  const int64_t g = options.group_size();
  auto groups = w.view({out, in / g, g});
  torch::Tensor codes;
  if (options.symmetric()) {
    auto s = groups.abs().amax(-1).clamp_min(1e-12) / 7.0;
    codes = torch::round(groups / s.unsqueeze(-1)).clamp(-8, 7) + 8;
    scale[e].copy_(s);
  } else {
    // The range always includes 0 (as GPTQ does): the zero point then lies in 0..15 and every
    // code is at most half a step from its weight, constant groups included.
    auto lo = groups.amin(-1).clamp_max(0), hi = groups.amax(-1).clamp_min(0);
    auto s = ((hi - lo) / 15.0).clamp_min(1e-12);
    auto z = torch::round(-lo / s).clamp(0, 15);
    codes = (torch::round(groups / s.unsqueeze(-1)) + z.unsqueeze(-1)).clamp(0, 15);
    scale[e].copy_(s);
    zero[e].copy_(z);
  }
  q[e].copy_(pack_int4(codes.view({out, in})));
}

void QuantizedWeight::set_expert_codes(int64_t e, const Int4Codes& c) {
  const int64_t out = shape[1], in = shape[2];
  SY_CHECK(options.kind() == QuantKind::kInt4 && zero.defined(), "quantized expert ", e,
           ": 4-bit codes need an int4 bank with zero points, this one is ",
           quant_name(options.kind()), options.symmetric() ? " symmetric" : "");
  const int64_t groups = in / options.group_size();
  SY_CHECK(c.packed.scalar_type() == torch::kByte, "quantized expert ", e,
           ": packed codes must be uint8, got ", c.packed.scalar_type());
  if (c.packed.sizes() != torch::IntArrayRef{out, in / 2} ||
      c.scale.sizes() != torch::IntArrayRef{out, groups} ||
      c.zero.sizes() != torch::IntArrayRef{out, groups})
    throw Error(detail::concat("quantized expert ", e, ": packed codes ", c.packed.sizes(),
                               ", scales ", c.scale.sizes(), ", zeros ", c.zero.sizes(),
                               " do not fit [", out, ", ", in, "] in groups of ",
                               options.group_size()));
  torch::NoGradGuard no_grad;
  q[e].copy_(c.packed);
  scale[e].copy_(c.scale);
  zero[e].copy_(c.zero);
}

torch::Tensor Int4Codes::codes() const {
  return unpack_int4(packed);
}

torch::Tensor Int4Codes::dequantize(torch::ScalarType dtype) const {
  const int64_t out = packed.size(0), in = 2 * packed.size(1), groups = scale.size(1);
  auto grouped = codes().to(torch::kFloat).view({out, groups, in / groups});
  return ((grouped - zero.to(torch::kFloat).unsqueeze(-1)) * scale.to(torch::kFloat).unsqueeze(-1))
      .view({out, in})
      .to(dtype);
}

Int4Codes Int4Codes::cat_rows(const Int4Codes& top, const Int4Codes& bottom) {
  return {torch::cat({top.packed, bottom.packed}), torch::cat({top.scale, bottom.scale}),
          torch::cat({top.zero, bottom.zero})};
}

namespace {

// ---- CPU dequantisation and GEMMs ----------------------------------------------------------
// Why: the tensor-op dequantisation below allocates five expert-sized temporaries (unpacked
// halves, stack, fp32 codes, difference) and took 63 ms for one 2816 x 2048 int4 expert, twice
// its fp32 GEMM at 17 rows. On the CPU one loop does it with the same fp32 arithmetic, and the
// bf16 path (quantized_matmul_cpu) dequantises a chunk of rows at a time into one buffer: 1 MB
// of fp32 for fp32 GEMMs, at most 16 MB of bf16 for native ones (a whole routed expert of
// Qwen's), so no expert-sized fp32 temporary exists: big short-lived blocks between the
// activations autograd keeps are what fragmented the heap of the router backward
// (bench/model_bench.cpp). The full-size calibration's peak RSS with the 16 MB chunks stayed
// within 1% of the plan (docs/planning.md).

// Expert e's codes as raw pointers: rows [begin, end) dequantise into out[(o - begin) * in].
struct ExpertCodes {
  ExpertCodes(const QuantizedWeight& w, int64_t e)
      : q(w.q[e].contiguous()),
        scale(w.scale[e].contiguous()),
        zero(w.zero.defined() ? w.zero[e].contiguous() : torch::Tensor()),
        in(w.shape[2]),
        group(w.options.kind() == QuantKind::kInt4 ? w.options.group_size() : in) {}

  template <typename T>
  void dequantize(int64_t begin, int64_t end, T* out) const {
    const int64_t groups = in / group;
    const float* s_all = scale.data_ptr<float>();
    const uint8_t* z_all = zero.defined() ? zero.data_ptr<uint8_t>() : nullptr;
    if (q.scalar_type() == torch::kChar) {  // int8: one scale per row
      const int8_t* q_all = q.data_ptr<int8_t>();
      at::parallel_for(begin, end, 16, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o)
          for (int64_t i = 0; i < in; ++i)
            out[(o - begin) * in + i] = T(dequant::int8_weight(q_all[o * in + i], s_all[o]));
      });
      return;
    }
    const uint8_t* q_all = q.data_ptr<uint8_t>();
    if constexpr (std::is_same_v<T, float>) {
      // Vectorised (models/quantized_cpu_gemm.h): the same values, several times faster than the
      // lookups below, which serve the half-precision outputs.
      at::parallel_for(begin, end, 16, [&](int64_t b, int64_t e) {
        dequantize_int4_rows_fp32(q_all, s_all, z_all, in, group, b, e, out + (b - begin) * in);
      });
      return;
    }
    at::parallel_for(begin, end, 16, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const uint8_t* packed = q_all + o * (in / 2);
        T* row = out + (o - begin) * in;
        for (int64_t g = 0; g < groups; ++g) {
          const float s = s_all[o * groups + g];
          const float z = z_all ? float(z_all[o * groups + g]) : dequant::kSymmetricInt4Zero;
          // A group's 16 possible weights, each by the shared formula and rounded to T once,
          // so a weight is one lookup: the same bits, and bf16's rounding no longer per weight
          // (`bench quant`, dequant_us of the Qwen-shaped int4 g128 bank into bf16: 1.11 s
          // before, 0.68 and 0.70 s after; into fp32 unchanged within the noise).
          T weight_of[16];
          for (uint32_t code = 0; code < 16; ++code)
            weight_of[code] = T(dequant::int4_weight(code, z, s));
          const uint8_t* bytes = packed + g * group / 2;
          T* dst = row + g * group;
          for (int64_t j = 0; j < group / 2; ++j) {
            const uint32_t byte = bytes[j];  // even column in the low nibble
            dst[2 * j] = weight_of[byte & 0x0Fu];
            dst[2 * j + 1] = weight_of[byte >> 4];
          }
        }
      }
    });
  }

  torch::Tensor q, scale, zero;
  int64_t in, group;
};

constexpr int64_t kDequantChunkElements = int64_t(1) << 18;  // 1 MB of fp32 rows

// Rows of x [..., K]: what the CPU's choices of GEMM path go by.
int64_t rows_of(const torch::Tensor& x) {
  return x.numel() / std::max<int64_t>(1, x.size(-1));
}
constexpr int64_t kNativeChunkElements = int64_t(1) << 23;  // 16 MB of bf16 rows

}  // namespace

bool cpu_dequantised_gemm_is_native(torch::ScalarType dtype, int64_t rows) {
  return (dtype == torch::kBFloat16 || dtype == torch::kHalf) && rows >= kNativeQuantGemmMinRows &&
         cpu_half_gemm_is_native(dtype);
}

namespace {

// quantized_matmul_cpu where cpu_dequantised_gemm_is_native: the weight dequantised into chunks
// of 16 MB in a's dtype (each decoded in fp32 1 MB at a time, then rounded once, as
// dequantize(e, dtype) rounds), each multiplied by torch's native GEMM. A weight of one chunk
// (every routed expert of Qwen's) is one GEMM against the whole rounded weight. Else the
// forward's chunks are disjoint output columns, so its result equals that GEMM but for
// blocking, and the input gradient sums its chunks' products in fp32, one rounding per chunk
// (Qwen's shared expert: three for its input weight, two for its output weight).
torch::Tensor quantized_matmul_native(const torch::Tensor& a, const QuantizedWeight& w, int64_t e,
                                      bool transposed) {
  const int64_t out = w.shape[1], in = w.shape[2];
  const int64_t step = std::max<int64_t>(1, kNativeChunkElements / in);
  const int64_t decode_step = std::max<int64_t>(1, kDequantChunkElements / in);
  const ExpertCodes codes(w, e);
  ++dequantized_count;
  const auto a2 = a.reshape({-1, a.size(-1)});
  auto chunk = torch::empty({std::min(step, out), in}, a.options());
  auto decoded = torch::empty({std::min(decode_step, out), in}, torch::kFloat);
  const bool one_chunk = out > 0 && out <= step;
  torch::Tensor result;
  if (!one_chunk)
    result = transposed ? torch::empty({a2.size(0), out}, a.options())
                        : torch::zeros({a2.size(0), in}, torch::kFloat);
  for (int64_t s = 0; s < out; s += step) {
    const int64_t n = std::min(step, out - s);
    for (int64_t t = 0; t < n; t += decode_step) {
      const int64_t m = std::min(decode_step, n - t);
      codes.dequantize(s + t, s + t + m, decoded.data_ptr<float>());
      chunk.narrow(0, t, m).copy_(decoded.narrow(0, 0, m));
    }
    const auto rows = chunk.narrow(0, 0, n);
    if (one_chunk)
      result = transposed ? torch::mm(a2, rows.t()) : torch::mm(a2, rows);
    else if (transposed)
      result.narrow(1, s, n).copy_(torch::mm(a2, rows.t()));
    else
      result.add_(torch::mm(a2.narrow(1, s, n), rows));
  }
  auto sizes = a.sizes().vec();
  sizes.back() = result.size(1);
  return result.to(a.scalar_type()).view(sizes);
}

// a [..., K] with expert e's weight W [out, in], in fp32 (or native GEMMs, above), result in a's
// dtype: a @ W^T when transposed (K = in, the forward), a @ W otherwise (K = out, the input
// gradient).
torch::Tensor quantized_matmul_cpu(const torch::Tensor& a, const QuantizedWeight& w, int64_t e,
                                   bool transposed) {
  if (cpu_dequantised_gemm_is_native(a.scalar_type(), rows_of(a)))
    return quantized_matmul_native(a, w, e, transposed);
  const int64_t out = w.shape[1], in = w.shape[2];
  const int64_t step = std::max<int64_t>(1, kDequantChunkElements / in);
  const ExpertCodes codes(w, e);
  ++dequantized_count;
  auto a32 = a.reshape({-1, a.size(-1)}).to(torch::kFloat);
  auto buffer = torch::empty({std::min(step, out), in}, torch::kFloat);
  torch::Tensor result = transposed ? torch::empty({a32.size(0), out}, a.options())
                                    : torch::zeros({a32.size(0), in}, a32.options());
  for (int64_t s = 0; s < out; s += step) {
    const int64_t n = std::min(step, out - s);
    auto rows = buffer.narrow(0, 0, n);
    codes.dequantize(s, s + n, rows.data_ptr<float>());
    if (transposed)
      result.narrow(1, s, n).copy_(torch::mm(a32, rows.t()));
    else
      result.addmm_(a32.narrow(1, s, n), rows);
  }
  auto sizes = a.sizes().vec();
  sizes.back() = result.size(1);
  return result.to(a.scalar_type()).view(sizes);
}

#ifdef SWITCHYARD_WITH_CUDA
// Experts [begin, end) in one kernel launch, into a new [end - begin, out, in] tensor.
torch::Tensor dequantize_cuda(const QuantizedWeight& w, int64_t begin, int64_t end,
                              torch::ScalarType dtype) {
  cuda::DequantDtype kind;
  switch (dtype) {
    case torch::kFloat:
      kind = cuda::DequantDtype::kFloat32;
      break;
    case torch::kHalf:
      kind = cuda::DequantDtype::kFloat16;
      break;
    default:
      kind = cuda::DequantDtype::kBFloat16;
  }
  const c10::cuda::CUDAGuard guard(w.q.device());
  const int64_t n = end - begin, out = w.shape[1], in = w.shape[2];
  auto result = torch::empty({n, out, in}, w.q.options().dtype(dtype));
  auto q = w.q.narrow(0, begin, n).contiguous();
  auto scale = w.scale.narrow(0, begin, n).contiguous();
  void* stream = c10::cuda::getCurrentCUDAStream(w.q.device().index()).stream();
  const char* err = nullptr;
  if (w.options.kind() == QuantKind::kInt8) {
    err = cuda::dequantize_int8_launch(q.data_ptr<int8_t>(), scale.data_ptr<float>(),
                                       result.data_ptr(), n * out, in, kind, stream);
  } else {
    auto zero = w.zero.defined() ? w.zero.narrow(0, begin, n).contiguous() : torch::Tensor();
    err = cuda::dequantize_int4_launch(q.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                                       zero.defined() ? zero.data_ptr<uint8_t>() : nullptr,
                                       result.data_ptr(), n * out, in, w.options.group_size(), kind,
                                       stream);
  }
  SY_CHECK(err == nullptr, "dequantisation kernel failed: ", err);
  return result;
}
#endif

// Expert e with tensor ops: the route for devices without a kernel of ours.
torch::Tensor dequantize_with_tensor_ops(const QuantizedWeight& w, int64_t e,
                                         torch::ScalarType dtype) {
  if (w.options.kind() == QuantKind::kInt8)
    return (w.q[e].to(torch::kFloat) * w.scale[e].unsqueeze(-1)).to(dtype);
  const int64_t out = w.shape[1], in = w.shape[2], g = w.options.group_size();
  auto codes = unpack_int4(w.q[e]).to(torch::kFloat).view({out, in / g, g});
  // Symmetric codes subtract a plain scalar: a 1-element CPU tensor would not mix with CUDA codes.
  auto centred = w.zero.defined() ? codes - w.zero[e].to(torch::kFloat).unsqueeze(-1)
                                  : codes - double(dequant::kSymmetricInt4Zero);
  return (centred * w.scale[e].unsqueeze(-1)).view({out, in}).to(dtype);
}

}  // namespace

torch::Tensor QuantizedWeight::dequantize_experts(int64_t begin, int64_t end,
                                                  torch::ScalarType dtype) const {
  SY_CHECK(0 <= begin && begin <= end && end <= shape[0], "dequantize: experts [", begin, ", ", end,
           ") out of ", shape[0]);
  dequantized_count += end - begin;
  if (q.device().is_cpu() && at::isFloatingType(dtype)) {
    const int64_t out = shape[1], in = shape[2];
    auto result = torch::empty({end - begin, out, in}, torch::dtype(dtype));
    AT_DISPATCH_FLOATING_TYPES_AND2(torch::kBFloat16, torch::kHalf, dtype, "dequantize", [&] {
      for (int64_t e = begin; e < end; ++e)
        ExpertCodes(*this, e).dequantize(0, out, result[e - begin].data_ptr<scalar_t>());
    });
    return result;
  }
#ifdef SWITCHYARD_WITH_CUDA
  if (q.is_cuda() && (dtype == torch::kFloat || dtype == torch::kHalf || dtype == torch::kBFloat16))
    return dequantize_cuda(*this, begin, end, dtype);
#endif
  std::vector<torch::Tensor> experts;
  for (int64_t e = begin; e < end; ++e)
    experts.push_back(dequantize_with_tensor_ops(*this, e, dtype));
  return experts.empty() ? torch::empty({0, shape[1], shape[2]}, q.options().dtype(dtype))
                         : torch::stack(experts);
}

torch::Tensor QuantizedWeight::dequantize(int64_t e, torch::ScalarType dtype) const {
  return dequantize_experts(e, e + 1, dtype)[0];
}

namespace {

struct QuantizedWeightCapsule : torch::CustomClassHolder {
  explicit QuantizedWeightCapsule(std::shared_ptr<const QuantizedWeight> w)
      : weight(std::move(w)) {}
  std::shared_ptr<const QuantizedWeight> weight;
};

// Autograd keeps only the codes, and backward dequantises again, except in a forward that
// recomputes a layer inside backward (models/layer_recompute.h): its backward follows at once,
// so keeping the weight costs one layer's bank for that long, and saves the step's third
// dequantisation (forward, recomputed forward, backward) of every quantized weight.
void keep_when_recomputing(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight) {
  if (forward_is_recomputation()) ctx->save_for_backward({weight});
}

template <typename Dequantize>
torch::Tensor kept_or_dequantized(torch::autograd::AutogradContext* ctx, torch::ScalarType dtype,
                                  Dequantize dequantize) {
  const auto saved = ctx->get_saved_variables();
  if (!saved.empty() && saved[0].defined() && saved[0].scalar_type() == dtype) return saved[0];
  return dequantize(dtype);
}

// CPU bf16/fp16 rows: quantized_matmul_cpu's chunks of the weight, into torch's native GEMMs
// from kNativeQuantGemmMinRows rows where models/cpu_linear.h takes them for the dtype, else
// fp32 GEMMs on 1 MB fp32 chunks. At most a 16 MB chunk exists at once and nothing is kept for
// backward, which `switchyard plan`'s CPU memory model counts on. At the few rows a router
// fine-tune gives each routed expert the fused path (fuses_on_cpu, tried first) serves: there
// dequantisation is the cost, not the GEMMs. The chunks serve all of a micro-batch's rows through a
// quantized shared expert, and routed experts with many rows, where the GEMMs are most of the time.
bool dequantises_in_chunks(const torch::Tensor& x) {
  return x.is_cpu() && (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf);
}

// A few CPU rows (models/quantized_cpu_gemm.h): the codes straight into the GEMM, whatever the
// dtype, nothing kept for backward. Counted as a dequantisation: each weight is decoded once.
bool fuses_on_cpu(const torch::Tensor& x, const QuantizedWeight& w) {
  return x.is_cpu() && cpu_quant_gemm_fuses(w.options.kind(), rows_of(x), x.scalar_type());
}

torch::Tensor fused_matmul_counted(const torch::Tensor& a, const QuantizedWeight& w, int64_t e,
                                   bool transposed) {
  ++dequantized_count;
  return fused_quantized_matmul_cpu(a, w, e, transposed);
}

class QuantizedLinear : public torch::autograd::Function<QuantizedLinear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const std::shared_ptr<const QuantizedWeight>& w, int64_t e) {
    ctx->saved_data["weight"] =
        c10::IValue::make_capsule(c10::make_intrusive<QuantizedWeightCapsule>(w));
    ctx->saved_data["expert"] = e;
    if (fuses_on_cpu(x, *w)) return fused_matmul_counted(x, *w, e, /*transposed=*/true);
    if (dequantises_in_chunks(x)) return quantized_matmul_cpu(x, *w, e, /*transposed=*/true);
    const auto weight = w->dequantize(e, x.scalar_type());
    keep_when_recomputing(ctx, weight);
    return torch::matmul(x, weight.t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto capsule = ctx->saved_data["weight"].toCapsule();
    const auto& w = static_cast<QuantizedWeightCapsule*>(capsule.get())->weight;
    const auto& g = grads[0];
    const int64_t e = ctx->saved_data["expert"].toInt();
    if (fuses_on_cpu(g, *w)) return {fused_matmul_counted(g, *w, e, /*transposed=*/false), {}, {}};
    if (dequantises_in_chunks(g))
      return {quantized_matmul_cpu(g, *w, e, /*transposed=*/false), {}, {}};
    return {torch::matmul(
                g, kept_or_dequantized(ctx, g.scalar_type(),
                                       [&](torch::ScalarType t) { return w->dequantize(e, t); })),
            {},
            {}};
  }
};

// Every expert at once: the bank dequantised into one [E, out, in] weight for one grouped GEMM,
// and again in backward. Only the codes are kept in between, so a forward through all layers
// holds one bank's full-precision weight at a time, never every layer's.
class QuantizedGroupedLinear : public torch::autograd::Function<QuantizedGroupedLinear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const std::shared_ptr<const QuantizedWeight>& w,
                               const torch::Tensor& offs) {
    ctx->saved_data["weight"] =
        c10::IValue::make_capsule(c10::make_intrusive<QuantizedWeightCapsule>(w));
    ctx->saved_data["offs"] = offs;
    const auto weight = w->dequantize_experts(0, w->shape[0], x.scalar_type());
    keep_when_recomputing(ctx, weight);
    return at::_grouped_mm(x, weight.transpose(1, 2), offs);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto capsule = ctx->saved_data["weight"].toCapsule();
    const auto& w = static_cast<QuantizedWeightCapsule*>(capsule.get())->weight;
    const auto offs = ctx->saved_data["offs"].toTensor();
    // _grouped_mm refuses a gradient with zero strides (what `y.sum()` sends): a dense copy.
    const auto g = grads[0].contiguous();
    const auto weight = kept_or_dequantized(ctx, g.scalar_type(), [&](torch::ScalarType t) {
      return w->dequantize_experts(0, w->shape[0], t);
    });
    return {at::_grouped_mm(g, weight, offs), {}, {}};
  }
};

}  // namespace

torch::Tensor quantized_linear(const torch::Tensor& x, std::shared_ptr<const QuantizedWeight> w,
                               int64_t expert) {
  return QuantizedLinear::apply(x, std::move(w), expert);
}

torch::Tensor quantized_grouped_linear(const torch::Tensor& x,
                                       std::shared_ptr<const QuantizedWeight> w,
                                       const torch::Tensor& offs) {
  SY_CHECK(x.dim() == 2 && x.size(1) == w->shape[2], "quantized_grouped_linear: rows ", x.sizes(),
           " do not fit weights ", c10::IntArrayRef(w->shape));
  return QuantizedGroupedLinear::apply(x, std::move(w), offs);
}

int64_t QuantizedWeight::nbytes() const {
  int64_t n = 0;
  for (const auto& t : {q, scale, zero})
    if (t.defined()) n += t.numel() * int64_t(t.element_size());
  return n;
}

}  // namespace switchyard
