// Fast Walsh-Hadamard transform: CPU butterfly, CUDA dispatch, autograd wrapper.
#include "routers/fwht.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "routers/fwht_cuda.h"

#ifdef SWITCHYARD_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace switchyard {
namespace {

bool is_power_of_two(int64_t n) {
  return n > 0 && (n & (n - 1)) == 0;
}

// Transform of one contiguous row, src -> dst (may alias). A row of up to 4096 floats stays in
// L1 for all log2(n) stages; the inner loop over j is unit-stride and vectorises once h >= 4.
// The first two stages (h = 1, 2) are fused into one radix-4 pass that also does the copy,
// because their inner loops are too short to vectorise; the scale rides on that pass too.
// target_clones: the loader picks the AVX-512/AVX2 build where the CPU has it (one binary, any
// x86-64); the butterflies are bound by vector width once the row sits in L1.
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void fwht_row(const T* src, T* dst,
                                                                           int64_t n, T scale) {
  if (n < 4) {
    const T a = src[0], b = n == 2 ? src[1] : T(0);
    dst[0] = (n == 2 ? a + b : a) * scale;
    if (n == 2) dst[1] = (a - b) * scale;
    return;
  }
  for (int64_t i = 0; i < n; i += 4) {
    const T a = src[i], b = src[i + 1], c = src[i + 2], d = src[i + 3];
    const T s0 = a + b, d0 = a - b, s1 = c + d, d1 = c - d;
    dst[i] = (s0 + s1) * scale;
    dst[i + 1] = (d0 + d1) * scale;
    dst[i + 2] = (s0 - s1) * scale;
    dst[i + 3] = (d0 - d1) * scale;
  }
  for (int64_t h = 4; h < n; h <<= 1) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      T* __restrict lo = dst + i;
      T* __restrict hi = dst + i + h;
      for (int64_t j = 0; j < h; ++j) {
        const T a = lo[j], b = hi[j];
        lo[j] = a + b;
        hi[j] = a - b;
      }
    }
  }
}

template <typename T>
void fwht_rows_cpu(const T* src, T* dst, int64_t rows, int64_t n) {
  const T scale = T(1) / std::sqrt(T(n));
  // Enough rows per task that a task is a few microseconds of work.
  const int64_t grain = std::max<int64_t>(1, 16384 / n);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fwht_row(src + r * n, dst + r * n, n, scale);
  });
}

torch::Tensor fwht_cpu(const torch::Tensor& x) {
  // Reduced precision computes in fp32 and rounds once at the end.
  const auto compute = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto in = x.to(compute).contiguous();
  auto out = torch::empty_like(in);
  const int64_t n = in.size(-1), rows = n ? in.numel() / n : 0;
  if (compute == torch::kDouble)
    fwht_rows_cpu(in.data_ptr<double>(), out.data_ptr<double>(), rows, n);
  else
    fwht_rows_cpu(in.data_ptr<float>(), out.data_ptr<float>(), rows, n);
  return out.to(x.scalar_type());
}

#ifdef SWITCHYARD_WITH_CUDA
torch::Tensor fwht_cuda(const torch::Tensor& x) {
  using cuda::FwhtDtype;
  FwhtDtype dtype;
  switch (x.scalar_type()) {
    case torch::kFloat:
      dtype = FwhtDtype::kFloat32;
      break;
    case torch::kDouble:
      dtype = FwhtDtype::kFloat64;
      break;
    case torch::kHalf:
      dtype = FwhtDtype::kFloat16;
      break;
    case torch::kBFloat16:
      dtype = FwhtDtype::kBFloat16;
      break;
    default:
      TORCH_CHECK(false, "fwht: unsupported dtype ", x.scalar_type());
  }
  c10::cuda::CUDAGuard guard(x.device());
  auto in = x.contiguous();
  auto out = torch::empty_like(in);
  const int64_t n = in.size(-1), rows = n ? in.numel() / n : 0;
  const char* err = cuda::fwht_launch(in.data_ptr(), out.data_ptr(), rows, n, dtype,
                                      c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  TORCH_CHECK(err == nullptr, "fwht CUDA kernel failed: ", err);
  return out;
}
#endif

class FwhtFunction : public torch::autograd::Function<FwhtFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    return fwht_no_grad(x);
  }
  // H/sqrt(n) is symmetric and orthonormal: the vector-Jacobian product is the same transform.
  // Going through apply() keeps double backward available.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad) {
    return {FwhtFunction::apply(grad[0])};
  }
};

}  // namespace

torch::Tensor fwht_no_grad(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "fwht needs at least one dimension");
  TORCH_CHECK(is_power_of_two(x.size(-1)), "fwht width must be a power of two, got ", x.size(-1));
  TORCH_CHECK(x.is_floating_point(), "fwht needs a floating-point tensor, got ", x.scalar_type());
  if (x.is_cuda()) {
#ifdef SWITCHYARD_WITH_CUDA
    return fwht_cuda(x);
#else
    TORCH_CHECK(false, "fwht on a CUDA tensor, but Switchyard was built without CUDA");
#endif
  }
  return fwht_cpu(x);
}

torch::Tensor fwht(const torch::Tensor& x) {
  return FwhtFunction::apply(x);
}

torch::Tensor hadamard_matrix(int64_t n, torch::Dtype dtype, torch::Device device) {
  TORCH_CHECK(is_power_of_two(n), "hadamard_matrix size must be a power of two, got ", n);
  // Sylvester: H_{2m} = [[H_m, H_m], [H_m, -H_m]]; entry (i, j) = (-1)^popcount(i & j).
  auto idx = torch::arange(n, torch::kLong);
  auto bits = torch::bitwise_and(idx.unsqueeze(1), idx.unsqueeze(0));
  auto parity = torch::zeros({n, n}, torch::kLong);
  for (int64_t b = 1; b < n; b <<= 1) parity += torch::bitwise_and(bits, b).ne(0).to(torch::kLong);
  auto h = 1.0 - 2.0 * torch::remainder(parity, 2).to(torch::kDouble);
  return (h / std::sqrt(double(n))).to(device, dtype);
}

}  // namespace switchyard
