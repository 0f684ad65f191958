// CUDA kernels that turn frozen experts' int4/int8 codes into full-precision weights in one pass
// (models/dequant_cuda.h). The tensor-op route they replace (unpack, stack, cast, subtract,
// multiply, cast) launched eight kernels per expert and wrote five expert-sized temporaries;
// here each thread reads one byte of codes and writes its weights, and a whole bank of experts
// is one launch. The arithmetic is models/dequant_math.h's, as on the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "models/dequant_cuda.h"
#include "models/dequant_math.h"

namespace switchyard::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
__device__ inline T from_float(float v);
template <>
__device__ inline float from_float<float>(float v) {
  return v;
}
template <>
__device__ inline __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return int(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// One thread per byte of codes: columns 2c (low nibble) and 2c + 1 (high nibble) of row r.
template <typename T>
__global__ void int4_kernel(const uint8_t* codes, const float* scale, const uint8_t* zero, T* out,
                            int64_t rows, int64_t in, int64_t group) {
  const int64_t bytes_per_row = in / 2, groups = in / group, bytes = rows * bytes_per_row;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < bytes;
       b += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = b / bytes_per_row, i = 2 * (b % bytes_per_row);
    const int64_t g = r * groups + i / group;  // a group is even-sized: both columns share it
    const float s = scale[g];
    const float z = zero ? float(zero[g]) : dequant::kSymmetricInt4Zero;
    const uint32_t byte = codes[b];
    out[r * in + i] = from_float<T>(dequant::int4_weight(byte & 0x0Fu, z, s));
    out[r * in + i + 1] = from_float<T>(dequant::int4_weight(byte >> 4, z, s));
  }
}

template <typename T>
__global__ void int8_kernel(const int8_t* q, const float* scale, T* out, int64_t rows, int64_t in) {
  const int64_t n = rows * in;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    out[k] = from_float<T>(dequant::int8_weight(q[k], scale[k / in]));
}

const char* status() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* dequantize_int4_launch(const uint8_t* codes, const float* scale, const uint8_t* zero,
                                   void* out, int64_t rows, int64_t in, int64_t group,
                                   DequantDtype dtype, void* stream) {
  if (rows == 0 || in == 0) return nullptr;
  if (in % 2 != 0 || group <= 0 || group % 2 != 0 || in % group != 0)
    return "int4 dequantisation: columns and group size must be even, the group dividing them";
  auto s = static_cast<cudaStream_t>(stream);
  const int blocks = blocks_for(rows * (in / 2));
  switch (dtype) {
    case DequantDtype::kFloat32:
      int4_kernel<<<blocks, kThreads, 0, s>>>(codes, scale, zero, static_cast<float*>(out), rows,
                                              in, group);
      break;
    case DequantDtype::kFloat16:
      int4_kernel<<<blocks, kThreads, 0, s>>>(codes, scale, zero, static_cast<__half*>(out), rows,
                                              in, group);
      break;
    case DequantDtype::kBFloat16:
      int4_kernel<<<blocks, kThreads, 0, s>>>(codes, scale, zero, static_cast<__nv_bfloat16*>(out),
                                              rows, in, group);
      break;
  }
  return status();
}

const char* dequantize_int8_launch(const int8_t* q, const float* scale, void* out, int64_t rows,
                                   int64_t in, DequantDtype dtype, void* stream) {
  if (rows == 0 || in == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const int blocks = blocks_for(rows * in);
  switch (dtype) {
    case DequantDtype::kFloat32:
      int8_kernel<<<blocks, kThreads, 0, s>>>(q, scale, static_cast<float*>(out), rows, in);
      break;
    case DequantDtype::kFloat16:
      int8_kernel<<<blocks, kThreads, 0, s>>>(q, scale, static_cast<__half*>(out), rows, in);
      break;
    case DequantDtype::kBFloat16:
      int8_kernel<<<blocks, kThreads, 0, s>>>(q, scale, static_cast<__nv_bfloat16*>(out), rows, in);
      break;
  }
  return status();
}

}  // namespace switchyard::cuda
