#include "models/quantized_cpu_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/env_choice.h"
#include "common/errors.h"
#include "models/dequant_math.h"

namespace switchyard {

namespace {

std::atomic<CpuQuantGemm> cpu_quant_gemm{CpuQuantGemm::kAuto};

// The kernels below are written once with GCC's vector types and compiled for three x86 levels
// (AVX-512, AVX2 with FMA, the baseline); the loader picks the one this CPU runs (an ifunc), so
// the binary stays portable without -march flags. Elsewhere the compiler's baseline serves.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define SWITCHYARD_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SWITCHYARD_CPU_CLONES
#endif

// The helpers below take and return 64-byte vectors. They are always inlined into each clone
// (also without optimisation), so the ABI GCC warns about, such values passed in AVX-512
// registers or in memory depending on the caller's target, is never used.
#pragma GCC diagnostic ignored "-Wpsabi"  // for the whole file: GCC reports it at the end
#define SWITCHYARD_INLINE inline __attribute__((always_inline))

// 16 fp32 lanes: one AVX-512 register, two AVX2 ones.
typedef float Lanes __attribute__((vector_size(64)));
typedef uint8_t Bytes __attribute__((vector_size(16)));
typedef int8_t SignedBytes __attribute__((vector_size(16)));
typedef int32_t Ints __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
// Weight rows decoded together: each input row is loaded once for four dot products (forward),
// each gradient row updated once for four weight rows (input gradient).
constexpr int64_t kRowsDecoded = 4;

SWITCHYARD_INLINE Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SWITCHYARD_INLINE void store(float* p, Lanes v) {
  std::memcpy(p, &v, sizeof v);
}
// Bytes to fp32 by way of int32: GCC 12 turns a direct byte-to-float conversion into one
// scalar conversion per lane, and each step of this one into a single instruction.
template <typename ByteVector>
SWITCHYARD_INLINE Lanes to_lanes(ByteVector b) {
  return __builtin_convertvector(__builtin_convertvector(b, Ints), Lanes);
}
SWITCHYARD_INLINE float sum_lanes(Lanes v) {
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

// One expert's codes, as raw pointers. int4 columns are decoded a group at a time, the group's
// even columns first, then its odd ones (the low and high nibbles of its bytes): the inputs are
// permuted the same way (permute_groups), which leaves every dot product as it was.
struct Codes {
  bool int4 = false;
  const uint8_t* q4 = nullptr;    // [out, in / 2]
  const int8_t* q8 = nullptr;     // [out, in]
  const float* scale = nullptr;   // int4 [out, groups]; int8 [out]
  const uint8_t* zero = nullptr;  // int4 [out, groups] or null (symmetric)
  int64_t out = 0, in = 0, group = 0, groups = 0;
};

// Columns [c0, c1) of weight row o as fp32 into dst, each exactly dequant_math.h's value (a
// subtraction and a multiplication, no fused multiply-add), in the permuted order. int4: c0 and
// c1 on group boundaries. A row past `out` (the last block's padding) decodes to zeros.
inline void decode_row(const Codes& c, int64_t o, int64_t c0, int64_t c1, float* dst) {
  if (o >= c.out) {
    std::memset(dst, 0, sizeof(float) * size_t(c1 - c0));
    return;
  }
  if (!c.int4) {
    const int8_t* q = c.q8 + o * c.in;
    const float s = c.scale[o];
    int64_t i = c0;
    for (; i + kLanes <= c1; i += kLanes) {
      SignedBytes b;
      std::memcpy(&b, q + i, sizeof b);
      store(dst + (i - c0), to_lanes(b) * s);
    }
    for (; i < c1; ++i) dst[i - c0] = dequant::int8_weight(q[i], s);
    return;
  }
  const int64_t half = c.group / 2;
  for (int64_t g = c0 / c.group; g < c1 / c.group; ++g) {
    const float s = c.scale[o * c.groups + g];
    const float z = c.zero ? float(c.zero[o * c.groups + g]) : dequant::kSymmetricInt4Zero;
    const uint8_t* bytes = c.q4 + o * (c.in / 2) + g * half;
    float* even = dst + (g * c.group - c0);
    float* odd = even + half;
    int64_t j = 0;
    for (; j + kLanes <= half; j += kLanes) {
      Bytes b;
      std::memcpy(&b, bytes + j, sizeof b);
      store(even + j, (to_lanes(b & 0x0F) - z) * s);
      store(odd + j, (to_lanes(b >> 4) - z) * s);
    }
    for (; j < half; ++j) {
      even[j] = dequant::int4_weight(bytes[j] & 0x0Fu, z, s);
      odd[j] = dequant::int4_weight(uint32_t(bytes[j]) >> 4, z, s);
    }
  }
}

// int4 rows [begin, end) of one expert into out [(o - begin) * in], fp32 in the natural column
// order: each group's even and odd columns decoded as in decode_row, then interleaved.
SWITCHYARD_CPU_CLONES
void decode_int4_rows(const Codes& c, int64_t begin, int64_t end, float* out) {
  const int64_t half = c.group / 2;
  for (int64_t o = begin; o < end; ++o) {
    float* row = out + (o - begin) * c.in;
    for (int64_t g = 0; g < c.groups; ++g) {
      const float s = c.scale[o * c.groups + g];
      const float z = c.zero ? float(c.zero[o * c.groups + g]) : dequant::kSymmetricInt4Zero;
      const uint8_t* bytes = c.q4 + o * (c.in / 2) + g * half;
      float* dst = row + g * c.group;
      int64_t j = 0;
      for (; j + kLanes <= half; j += kLanes) {
        Bytes b;
        std::memcpy(&b, bytes + j, sizeof b);
        const Lanes even = (to_lanes(b & 0x0F) - z) * s, odd = (to_lanes(b >> 4) - z) * s;
#if defined(__clang__)
        const Lanes first = __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5,
                                                    21, 6, 22, 7, 23);
        const Lanes second = __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12,
                                                     28, 13, 29, 14, 30, 15, 31);
#else
        const Lanes first = __builtin_shuffle(
            even, odd, Ints{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23});
        const Lanes second = __builtin_shuffle(
            even, odd, Ints{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31});
#endif
        store(dst + 2 * j, first);
        store(dst + 2 * j + kLanes, second);
      }
      for (; j < half; ++j) {
        dst[2 * j] = dequant::int4_weight(bytes[j] & 0x0Fu, z, s);
        dst[2 * j + 1] = dequant::int4_weight(uint32_t(bytes[j]) >> 4, z, s);
      }
    }
  }
}

// Column chunks the kernels decode: four weight rows of one chunk (8 KB of fp32) stay in L1
// while every input row passes over them. int4: whole groups, at least one.
int64_t chunk_columns(const Codes& c) {
  constexpr int64_t kChunk = 512;
  return c.int4 ? std::max<int64_t>(1, kChunk / c.group) * c.group : std::min(kChunk, c.in);
}

// y[r, o] = a[r, :] . W[o, :] for weight rows [o_begin, o_end), every row r of a [rows, in]
// (permuted as the codes are decoded); y [rows, out]. Two input rows at a time against four
// weight rows: eight accumulators, six loads per eight multiply-adds.
SWITCHYARD_CPU_CLONES
void forward_rows(const Codes& c, const float* a, int64_t rows, int64_t o_begin, int64_t o_end,
                  float* y) {
  const int64_t in = c.in, width = chunk_columns(c);
  std::vector<float> decoded(size_t(kRowsDecoded * width));
  // Lanes of partial sums per input row and weight row, as plain floats: a std::vector of a
  // 64-byte vector type is not sure to be 64-byte aligned, and aligned moves would fault.
  std::vector<float> sums(size_t(rows * kRowsDecoded * kLanes));
  float* w[kRowsDecoded];
  for (int64_t k = 0; k < kRowsDecoded; ++k) w[k] = decoded.data() + k * width;
  std::vector<float> tails(size_t(rows * kRowsDecoded));  // columns past the lanes
  for (int64_t o0 = o_begin; o0 < o_end; o0 += kRowsDecoded) {
    std::fill(sums.begin(), sums.end(), 0.0f);
    std::fill(tails.begin(), tails.end(), 0.0f);
    for (int64_t c0 = 0; c0 < in; c0 += width) {
      const int64_t n = std::min(width, in - c0), vector_end = n / kLanes * kLanes;
      for (int64_t k = 0; k < kRowsDecoded; ++k) decode_row(c, o0 + k, c0, c0 + n, w[k]);
      int64_t r = 0;
      for (; r + 2 <= rows; r += 2) {
        const float* a0 = a + r * in + c0;
        const float* a1 = a0 + in;
        Lanes p00{}, p01{}, p02{}, p03{}, p10{}, p11{}, p12{}, p13{};
        for (int64_t i = 0; i < vector_end; i += kLanes) {
          const Lanes x0 = load(a0 + i), x1 = load(a1 + i);
          const Lanes w0 = load(w[0] + i), w1 = load(w[1] + i), w2 = load(w[2] + i),
                      w3 = load(w[3] + i);
          p00 += x0 * w0, p01 += x0 * w1, p02 += x0 * w2, p03 += x0 * w3;
          p10 += x1 * w0, p11 += x1 * w1, p12 += x1 * w2, p13 += x1 * w3;
        }
        float* s0 = sums.data() + r * kRowsDecoded * kLanes;
        const Lanes parts[2 * kRowsDecoded] = {p00, p01, p02, p03, p10, p11, p12, p13};
        for (int64_t k = 0; k < 2 * kRowsDecoded; ++k)
          store(s0 + k * kLanes, load(s0 + k * kLanes) + parts[k]);
      }
      for (; r < rows; ++r) {
        const float* a0 = a + r * in + c0;
        Lanes p0{}, p1{}, p2{}, p3{};
        for (int64_t i = 0; i < vector_end; i += kLanes) {
          const Lanes x0 = load(a0 + i);
          p0 += x0 * load(w[0] + i), p1 += x0 * load(w[1] + i);
          p2 += x0 * load(w[2] + i), p3 += x0 * load(w[3] + i);
        }
        float* s0 = sums.data() + r * kRowsDecoded * kLanes;
        const Lanes parts[kRowsDecoded] = {p0, p1, p2, p3};
        for (int64_t k = 0; k < kRowsDecoded; ++k)
          store(s0 + k * kLanes, load(s0 + k * kLanes) + parts[k]);
      }
      for (r = 0; r < rows; ++r)
        for (int64_t i = vector_end; i < n; ++i)
          for (int64_t k = 0; k < kRowsDecoded; ++k)
            tails[size_t(r * kRowsDecoded + k)] += a[r * in + c0 + i] * w[k][i];
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < kRowsDecoded && o0 + k < o_end; ++k)
        y[r * c.out + o0 + k] = sum_lanes(load(sums.data() + (r * kRowsDecoded + k) * kLanes)) +
                                tails[size_t(r * kRowsDecoded + k)];
  }
}

// dx[r, c_begin:c_end] = sum_o g[r, o] W[o, c_begin:c_end] for every row r of g [rows, out];
// dx [rows, in] (permuted as the codes are decoded), zeroed, its columns [c_begin, c_end) this
// call's alone. A chunk of columns at a time, so the rows' chunk of dx stays in L2 while every
// weight row passes; two rows at a time against four weight rows.
SWITCHYARD_CPU_CLONES
void input_grad_columns(const Codes& c, const float* g, int64_t rows, int64_t c_begin,
                        int64_t c_end, float* dx) {
  const int64_t in = c.in, width = chunk_columns(c);
  std::vector<float> decoded(size_t(kRowsDecoded * width));
  float* w[kRowsDecoded];
  for (int64_t k = 0; k < kRowsDecoded; ++k) w[k] = decoded.data() + k * width;
  for (int64_t c0 = c_begin; c0 < c_end; c0 += width) {
    const int64_t n = std::min(width, c_end - c0), vector_end = n / kLanes * kLanes;
    for (int64_t o0 = 0; o0 < c.out; o0 += kRowsDecoded) {
      for (int64_t k = 0; k < kRowsDecoded; ++k) decode_row(c, o0 + k, c0, c0 + n, w[k]);
      auto coefs = [&](int64_t r, float* coef) {
        for (int64_t k = 0; k < kRowsDecoded; ++k)
          coef[k] = o0 + k < c.out ? g[r * c.out + o0 + k] : 0.0f;
      };
      int64_t r = 0;
      for (; r + 2 <= rows; r += 2) {
        float f0[kRowsDecoded], f1[kRowsDecoded];
        coefs(r, f0);
        coefs(r + 1, f1);
        float* d0 = dx + r * in + c0;
        float* d1 = d0 + in;
        for (int64_t i = 0; i < vector_end; i += kLanes) {
          const Lanes w0 = load(w[0] + i), w1 = load(w[1] + i), w2 = load(w[2] + i),
                      w3 = load(w[3] + i);
          store(d0 + i, load(d0 + i) + f0[0] * w0 + f0[1] * w1 + f0[2] * w2 + f0[3] * w3);
          store(d1 + i, load(d1 + i) + f1[0] * w0 + f1[1] * w1 + f1[2] * w2 + f1[3] * w3);
        }
        for (int64_t i = vector_end; i < n; ++i) {
          d0[i] += f0[0] * w[0][i] + f0[1] * w[1][i] + f0[2] * w[2][i] + f0[3] * w[3][i];
          d1[i] += f1[0] * w[0][i] + f1[1] * w[1][i] + f1[2] * w[2][i] + f1[3] * w[3][i];
        }
      }
      for (; r < rows; ++r) {
        float f0[kRowsDecoded];
        coefs(r, f0);
        float* d0 = dx + r * in + c0;
        for (int64_t i = 0; i < vector_end; i += kLanes)
          store(d0 + i, load(d0 + i) + f0[0] * load(w[0] + i) + f0[1] * load(w[1] + i) +
                            f0[2] * load(w[2] + i) + f0[3] * load(w[3] + i));
        for (int64_t i = vector_end; i < n; ++i)
          d0[i] += f0[0] * w[0][i] + f0[1] * w[1][i] + f0[2] * w[2][i] + f0[3] * w[3][i];
      }
    }
  }
}

// [rows, in] columns in each group reordered to the group's even columns, then its odd ones
// (decode_row's order), or back (inverse).
torch::Tensor permute_groups(const torch::Tensor& x, int64_t group, bool inverse) {
  const int64_t rows = x.size(0), groups = x.size(1) / group;
  if (inverse)
    return x.view({rows, groups, 2, group / 2}).transpose(2, 3).contiguous().view(x.sizes());
  return x.view({rows, groups, group / 2, 2}).transpose(2, 3).contiguous().view(x.sizes());
}

// Expert e's codes, scales and zeros, contiguous, and the raw view of them the kernels read.
struct ExpertCodes {
  ExpertCodes(const QuantizedWeight& w, int64_t e)
      : q(w.q[e].contiguous()),
        scale(w.scale[e].contiguous()),
        zero(w.zero.defined() ? w.zero[e].contiguous() : torch::Tensor()) {
    view.int4 = w.options.kind() == QuantKind::kInt4;
    view.out = w.shape[1];
    view.in = w.shape[2];
    view.scale = scale.data_ptr<float>();
    view.group = view.int4 ? w.options.group_size() : view.in;
    view.groups = view.in / view.group;
    if (view.int4) {
      view.q4 = q.data_ptr<uint8_t>();
      if (zero.defined()) view.zero = zero.data_ptr<uint8_t>();
    } else {
      view.q8 = q.data_ptr<int8_t>();
    }
  }
  torch::Tensor q, scale, zero;
  Codes view;
};

// SWITCHYARD_CPU_QUANT_GEMM: what kAuto means in this process.
CpuQuantGemm auto_mode_from_environment() {
  return env_choice<CpuQuantGemm>("SWITCHYARD_CPU_QUANT_GEMM",
                                  {{"auto", CpuQuantGemm::kAuto},
                                   {"dequantise", CpuQuantGemm::kDequantise},
                                   {"fused", CpuQuantGemm::kFused}});
}

}  // namespace

CpuQuantGemmScope::CpuQuantGemmScope(CpuQuantGemm mode) : saved_(cpu_quant_gemm.exchange(mode)) {}

CpuQuantGemmScope::~CpuQuantGemmScope() {
  cpu_quant_gemm.store(saved_);
}

bool cpu_quant_gemm_fuses(QuantKind kind, int64_t rows, torch::ScalarType rows_dtype) {
  CpuQuantGemm mode = cpu_quant_gemm.load();
  if (mode == CpuQuantGemm::kAuto) {
    static const CpuQuantGemm from_environment = auto_mode_from_environment();
    mode = from_environment;
  }
  switch (mode) {
    case CpuQuantGemm::kFused:
      return true;
    case CpuQuantGemm::kDequantise:
      return false;
    case CpuQuantGemm::kAuto:
      break;
  }
  return kind == QuantKind::kInt4 && rows <= fused_quant_gemm_max_rows(rows_dtype);
}

void dequantize_int4_rows_fp32(const uint8_t* packed, const float* scale, const uint8_t* zero,
                               int64_t in, int64_t group, int64_t begin, int64_t end, float* out) {
  Codes c;
  c.int4 = true;
  c.q4 = packed;
  c.scale = scale;
  c.zero = zero;
  c.out = end;
  c.in = in;
  c.group = group;
  c.groups = in / group;
  decode_int4_rows(c, begin, end, out);
}

torch::Tensor fused_quantized_matmul_cpu(const torch::Tensor& a, const QuantizedWeight& w,
                                         int64_t e, bool transposed) {
  SY_CHECK(a.is_cpu() && w.q.is_cpu(), "fused_quantized_matmul_cpu: CPU tensors only");
  SY_CHECK(w.options.kind() != QuantKind::kNone,
           "fused_quantized_matmul_cpu: weight not quantized");
  const int64_t out = w.shape[1], in = w.shape[2];
  SY_CHECK(a.size(-1) == (transposed ? in : out), "fused_quantized_matmul_cpu: rows ", a.sizes(),
           " do not fit weight [", out, ", ", in, "]", transposed ? "^T" : "");
  const ExpertCodes codes(w, e);
  const Codes& c = codes.view;
  // `permuted`: int4 columns in decode_row's order; int8 columns as they are.
  auto permuted = [&](const torch::Tensor& x, bool inverse) {
    return c.int4 ? permute_groups(x, c.group, inverse) : x;
  };
  auto a32 = a.reshape({-1, a.size(-1)}).to(torch::kFloat).contiguous();
  const int64_t rows = a32.size(0);
  torch::Tensor result;
  if (transposed) {
    const auto x = permuted(a32, /*inverse=*/false);
    result = torch::empty({rows, out}, torch::kFloat);
    const float* xp = x.data_ptr<float>();
    float* yp = result.data_ptr<float>();
    const int64_t blocks = (out + kRowsDecoded - 1) / kRowsDecoded;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      forward_rows(c, xp, rows, b0 * kRowsDecoded, std::min(out, b1 * kRowsDecoded), yp);
    });
  } else {
    // Threads split dx's columns (whole int4 groups, or 128 int8 columns, at a time), each
    // summing over every weight row: no partial sums to add, the same bits for any thread count.
    auto dx = torch::zeros({rows, in}, torch::kFloat);
    const float* gp = a32.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    const int64_t unit = c.int4 ? c.group : std::min<int64_t>(128, in);
    at::parallel_for(0, (in + unit - 1) / unit, 1, [&](int64_t u0, int64_t u1) {
      input_grad_columns(c, gp, rows, u0 * unit, std::min(in, u1 * unit), dxp);
    });
    result = permuted(dx, /*inverse=*/true);
  }
  auto sizes = a.sizes().vec();
  sizes.back() = result.size(1);
  return result.to(a.scalar_type()).view(sizes);
}

}  // namespace switchyard
