// CUDA kernels for the orthonormal fast Walsh-Hadamard transform.
// Rows of up to kMaxSharedWidth elements are transformed entirely in shared memory, one block
// per row (every butterfly stage synchronises on-chip). Wider rows fall back to one global
// memory pass per stage.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "routers/fwht_cuda.h"

namespace switchyard::cuda {
namespace {

constexpr int64_t kMaxSharedWidth = 8192;  // 32 KiB of fp32, 64 KiB of fp64 (opt-in)
constexpr int kThreads = 256;

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ inline float to_acc(float v) {
  return v;
}
__device__ inline double to_acc(double v) {
  return v;
}
__device__ inline float to_acc(__half v) {
  return __half2float(v);
}
__device__ inline float to_acc(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ inline T from_acc(typename Acc<T>::type v);
template <>
__device__ inline float from_acc<float>(float v) {
  return v;
}
template <>
__device__ inline double from_acc<double>(double v) {
  return v;
}
template <>
__device__ inline __half from_acc<__half>(float v) {
  return __float2half(v);
}
template <>
__device__ inline __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

template <typename T>
__global__ void fwht_shared_kernel(const T* in, T* out, int64_t n, typename Acc<T>::type scale) {
  using A = typename Acc<T>::type;
  extern __shared__ unsigned char smem_raw[];
  A* s = reinterpret_cast<A*>(smem_raw);
  const T* row_in = in + int64_t(blockIdx.x) * n;
  T* row_out = out + int64_t(blockIdx.x) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s[i] = to_acc(row_in[i]);
  __syncthreads();
  for (int64_t h = 1; h < n; h <<= 1) {
    for (int64_t p = threadIdx.x; p < n / 2; p += blockDim.x) {
      const int64_t j = (p / h) * 2 * h + (p % h);
      const A a = s[j], b = s[j + h];
      s[j] = a + b;
      s[j + h] = a - b;
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row_out[i] = from_acc<T>(s[i] * scale);
}

// One butterfly stage over all rows in global memory (wide rows). The last stage scales.
template <typename T>
__global__ void fwht_stage_kernel(const T* in, T* out, int64_t rows, int64_t n, int64_t h,
                                  typename Acc<T>::type scale) {
  using A = typename Acc<T>::type;
  const int64_t pairs = rows * (n / 2);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = p / (n / 2), q = p % (n / 2);
    const int64_t j = row * n + (q / h) * 2 * h + (q % h);
    const A a = to_acc(in[j]), b = to_acc(in[j + h]);
    out[j] = from_acc<T>((a + b) * scale);
    out[j + h] = from_acc<T>((a - b) * scale);
  }
}

template <typename T>
cudaError_t launch_typed(const T* in, T* out, int64_t rows, int64_t n, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const A scale = A(1) / sqrt(A(n));
  if (rows == 0 || n == 0) return cudaSuccess;
  if (n <= kMaxSharedWidth) {
    const size_t smem = size_t(n) * sizeof(A);
    if (smem > 48 * 1024) {
      cudaError_t err = cudaFuncSetAttribute(
          fwht_shared_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
      if (err != cudaSuccess) return err;
    }
    const int threads = int(n / 2 < kThreads ? (n / 2 > 32 ? n / 2 : 32) : kThreads);
    fwht_shared_kernel<T><<<dim3(unsigned(rows)), threads, smem, stream>>>(in, out, n, scale);
    return cudaGetLastError();
  }
  const int64_t pairs = rows * (n / 2);
  const int blocks = int(pairs / kThreads + 1 < 65535 ? pairs / kThreads + 1 : 65535);
  const T* src = in;
  for (int64_t h = 1; h < n; h <<= 1) {
    const A s = (h << 1) == n ? scale : A(1);
    fwht_stage_kernel<T><<<blocks, kThreads, 0, stream>>>(src, out, rows, n, h, s);
    src = out;  // later stages run in place
  }
  return cudaGetLastError();
}

}  // namespace

const char* fwht_launch(const void* in, void* out, int64_t rows, int64_t n, FwhtDtype dtype,
                        void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  cudaError_t err = cudaSuccess;
  switch (dtype) {
    case FwhtDtype::kFloat32:
      err = launch_typed(static_cast<const float*>(in), static_cast<float*>(out), rows, n, s);
      break;
    case FwhtDtype::kFloat64:
      err = launch_typed(static_cast<const double*>(in), static_cast<double*>(out), rows, n, s);
      break;
    case FwhtDtype::kFloat16:
      err = launch_typed(static_cast<const __half*>(in), static_cast<__half*>(out), rows, n, s);
      break;
    case FwhtDtype::kBFloat16:
      err = launch_typed(static_cast<const __nv_bfloat16*>(in), static_cast<__nv_bfloat16*>(out),
                         rows, n, s);
      break;
  }
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace switchyard::cuda
