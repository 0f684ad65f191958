// Why this exists: where torch has no oneDNN kernels for bf16
// (torch.ops.mkldnn._is_mkldnn_bf16_supported() False, as on the AVX2 CPU of bench/RESULTS.md's
// "Measurements behind the code"), bf16 GEMMs take the reference cpublas_gemm, far slower than
// fp32, above all in the input-gradient layout (g @ W, every Linear's backward), while converting
// a weight to fp32 costs a fraction of its fp32 GEMM. On CPUs with bf16 instructions (AVX512-BF16,
// AMX) torch's bf16 GEMMs beat fp32 ones, so kAuto leaves them to torch there (`switchyard bench
// linear`); AVX-512 CPUs without them, where oneDNN emulates bf16, keep this path until measured.
// Here weights stay bf16 in memory and each GEMM converts a chunk of W's rows to fp32, every
// chunk into the same fp32 buffer: a new tensor
// per chunk of 32 MiB was a new mmap each time (glibc's heap never serves blocks that large), and
// its page faults cost more than the conversion. The buffer is 16 MB, under glibc's largest mmap
// threshold, so repeated calls can reuse heap pages (`switchyard bench linear`, bench/RESULTS.md).
#include "models/cpu_linear.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "common/env_choice.h"
#include "common/errors.h"

namespace switchyard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kChunkFp32Elements = int64_t(4) << 20;  // 16 MB of fp32 weight rows

int64_t default_chunk_rows(const torch::Tensor& weight) {
  return std::max<int64_t>(1, kChunkFp32Elements / std::max<int64_t>(1, weight.size(1)));
}

// The fp32 buffer a call converts W's chunks of `step` rows into, one after the other.
torch::Tensor chunk_buffer(const torch::Tensor& weight, int64_t step) {
  return torch::empty({std::min(step, weight.size(0)), weight.size(1)},
                      weight.options().dtype(torch::kFloat));
}

// Rows [s, s + n) of W in fp32, in `buffer`.
torch::Tensor rows_fp32(const torch::Tensor& weight, int64_t s, int64_t n, torch::Tensor& buffer) {
  return buffer.narrow(0, 0, n).copy_(weight.narrow(0, s, n));
}

// x2 [R, in] -> [R, out] in x2's dtype; bias added in fp32 before the one rounding.
torch::Tensor forward_fp32(const torch::Tensor& x2, const torch::Tensor& weight,
                           const torch::Tensor& bias, int64_t step) {
  const int64_t out = weight.size(0);
  auto x32 = x2.to(torch::kFloat);
  auto y = torch::empty({x2.size(0), out}, x2.options());
  auto buffer = chunk_buffer(weight, step);
  for (int64_t s = 0; s < out; s += step) {
    const int64_t n = std::min(step, out - s);
    auto part = torch::mm(x32, rows_fp32(weight, s, n, buffer).t());
    if (bias.defined()) part.add_(bias.narrow(0, s, n).to(torch::kFloat));
    y.narrow(1, s, n).copy_(part);
  }
  return y;
}

class CpuLinear : public torch::autograd::Function<CpuLinear> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight,
                               const std::optional<torch::Tensor>& maybe_bias, int64_t step) {
    const torch::Tensor bias = maybe_bias.value_or(torch::Tensor());
    // x is kept only for the weight gradient: for a frozen weight (router fine-tuning) the
    // input can be freed after forward, which is most of a frozen model's saved activations.
    ctx->save_for_backward({weight.requires_grad() ? x : torch::Tensor(), weight, bias});
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["step"] = step;
    auto y = forward_fp32(x.reshape({-1, x.size(-1)}), weight, bias, step);
    auto sizes = x.sizes().vec();
    sizes.back() = weight.size(0);
    return y.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &bias = saved[2];
    const auto x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    const int64_t out = weight.size(0), in = weight.size(1), step = ctx->saved_data["step"].toInt();
    auto g = grads[0].reshape({-1, out});
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1),
               need_b = bias.defined() && ctx->needs_input_grad(2);
    torch::Tensor grad_x32, x32, grad_w, grad_b, w_buffer, grad_w_buffer;
    if (need_x) {
      grad_x32 = torch::zeros({g.size(0), in}, g.options().dtype(torch::kFloat));
      w_buffer = chunk_buffer(weight, step);
    }
    if (need_w) {
      SY_CHECK(x.defined(),
               "cpu_linear: weight gradient asked but the weight was frozen in forward");
      x32 = x.reshape({-1, in}).to(torch::kFloat);
      grad_w = torch::empty_like(weight);
      grad_w_buffer = chunk_buffer(weight, step);  // the same reason: one buffer, not one per chunk
    }
    if (need_x || need_w)
      for (int64_t s = 0; s < out; s += step) {
        const int64_t n = std::min(step, out - s);
        auto g32 = g.narrow(1, s, n).to(torch::kFloat);
        if (need_x) grad_x32.addmm_(g32, rows_fp32(weight, s, n, w_buffer));
        if (need_w) {
          auto part = grad_w_buffer.narrow(0, 0, n);
          torch::mm_out(part, g32.t(), x32);
          grad_w.narrow(0, s, n).copy_(part);
        }
      }
    if (need_b) grad_b = g.to(torch::kFloat).sum(0).to(bias.scalar_type());
    torch::Tensor grad_x;
    if (need_x) grad_x = grad_x32.to(grads[0].scalar_type()).view(x_sizes);
    return {grad_x, grad_w, grad_b, {}};
  }
};

bool low_precision(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf;
}

std::atomic<CpuHalfGemm> cpu_half_gemm{CpuHalfGemm::kAuto};

// torch's own check (the one its CPU matmul takes oneDNN by), a registered operator with no
// C++ header of its own. A torch without it, or with another signature, has no such kernels
// for us to count on.
bool mkldnn_supports(const char* op_name) {
  try {
    const auto op = c10::Dispatcher::singleton().findSchema({op_name, ""});
    return op && op->typed<bool()>().call();
  } catch (const c10::Error&) {
    return false;
  }
}

// The bf16 instructions oneDNN's bf16 GEMM kernels use: AMX-BF16 (CPUID leaf 7.0 EDX bit 22),
// AVX512-BF16 (7.1 EAX bit 5), AVX-NE-CONVERT (7.1 EDX bit 5). torch's check alone is also true
// on AVX-512 CPUs without them, where oneDNN emulates bf16, unmeasured here.
bool cpu_has_bf16_instructions() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a;
  const bool amx_bf16 = d & (1u << 22);
  if (max_subleaf < 1) return amx_bf16;
  __cpuid_count(7, 1, a, b, c, d);
  return amx_bf16 || (a & (1u << 5)) || (d & (1u << 5));
#else
  return true;  // other architectures: torch's check decides alone
#endif
}

// SWITCHYARD_CPU_BF16_GEMM: what kAuto means in this process.
CpuHalfGemm auto_mode_from_environment() {
  return env_choice<CpuHalfGemm>("SWITCHYARD_CPU_BF16_GEMM", {{"auto", CpuHalfGemm::kAuto},
                                                              {"chunks", CpuHalfGemm::kFp32Chunks},
                                                              {"native", CpuHalfGemm::kNative}});
}

}  // namespace

bool torch_has_onednn_gemm(torch::ScalarType dtype) {
  static const bool bf16 = mkldnn_supports("mkldnn::_is_mkldnn_bf16_supported");
  static const bool fp16 = mkldnn_supports("mkldnn::_is_mkldnn_fp16_supported");
  if (dtype == torch::kBFloat16) return bf16;
  if (dtype == torch::kHalf) return fp16;
  return false;
}

bool cpu_has_native_gemm(torch::ScalarType dtype) {
  static const bool bf16 = cpu_has_bf16_instructions() && torch_has_onednn_gemm(torch::kBFloat16);
  return dtype == torch::kBFloat16 && bf16;
}

CpuHalfGemmScope::CpuHalfGemmScope(CpuHalfGemm mode) : saved_(cpu_half_gemm.exchange(mode)) {}

CpuHalfGemmScope::~CpuHalfGemmScope() {
  cpu_half_gemm.store(saved_);
}

bool cpu_half_gemm_is_native(torch::ScalarType dtype) {
  CpuHalfGemm mode = cpu_half_gemm.load();
  if (mode == CpuHalfGemm::kAuto) {
    static const CpuHalfGemm from_environment = auto_mode_from_environment();
    mode = from_environment;
  }
  return mode == CpuHalfGemm::kNative || (mode == CpuHalfGemm::kAuto && cpu_has_native_gemm(dtype));
}

bool gemm_in_fp32_on_cpu(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.device().is_cpu() || !low_precision(x) || cpu_half_gemm_is_native(x.scalar_type()))
    return false;
  return weight.device().is_cpu() && weight.scalar_type() == x.scalar_type();
}

torch::Tensor cpu_linear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, int64_t chunk_rows) {
  SY_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), "cpu_linear: input ",
           x.sizes(), " does not fit weight ", weight.sizes());
  SY_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
           "cpu_linear: bias ", bias.sizes(), " does not fit weight ", weight.sizes());
  SY_CHECK(chunk_rows >= 0, "cpu_linear: chunk_rows ", chunk_rows, " is negative");
  // An undefined bias goes in as nullopt: autograd cannot describe an undefined tensor input.
  return CpuLinear::apply(x, weight, bias.defined() ? std::optional(bias) : std::nullopt,
                          chunk_rows > 0 ? chunk_rows : default_chunk_rows(weight));
}

torch::Tensor forward_linear(const torch::nn::Linear& m, const torch::Tensor& x) {
  if (gemm_in_fp32_on_cpu(x, m->weight)) return cpu_linear(x, m->weight, m->bias);
  return m.ptr()->forward(x);
}

}  // namespace switchyard
