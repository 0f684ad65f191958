// CUDA kernels that turn frozen experts' int4/int8 codes into full-precision weights in one pass
// (models/dequant_cuda.h). The tensor-op route they replace (unpack, stack, cast, subtract,
// multiply, cast) launched eight kernels per expert and wrote five expert-sized temporaries;
// here a whole bank of experts is one launch. The arithmetic is models/dequant_math.h's, as on
// the CPU.
//
// Two layouts of the work. The row kernels (every shape Qwen and BERT experts have: rows whose
// width is a multiple of 8, int4 groups too) give each block one row at a time and each thread
// one 32-bit word of codes (8 int4 or 4 int8 weights), written with 16-byte stores: no 64-bit
// division per weight, and stores as wide as the memory system takes. The element kernels take
// any shape, one byte of codes per thread, dividing a flat index into row and column.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

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

// Row kernels: 64 threads a block (32 such blocks fill a Hopper SM), one row per block at a time,
// at most 8192 blocks (about two waves on 132 SMs), each looping over rows.
constexpr int kRowThreads = 64;
constexpr int64_t kMaxRowBlocks = 8192;

int row_blocks(int64_t rows) {
  return int(rows < kMaxRowBlocks ? rows : kMaxRowBlocks);
}

bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Eight weights rounded by from_float<T>, written at `out` (16-byte aligned) with 16-byte stores
// (st.global.cg.v4: the weight is read next by the GEMM, from L2 at best). 16-bit types are
// packed by hand into one uint4; a plain store through a cast pointer came out of nvcc as four
// 4-byte stores.
__device__ inline uint16_t bits_of(__half v) {
  return __half_as_ushort(v);
}
__device__ inline uint16_t bits_of(__nv_bfloat16 v) {
  return __bfloat16_as_ushort(v);
}
template <typename T>
__device__ inline void store8(T* out, const float (&w)[8]) {
  uint32_t p[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    p[k] = uint32_t(bits_of(from_float<T>(w[2 * k]))) |
           (uint32_t(bits_of(from_float<T>(w[2 * k + 1]))) << 16);
  __stcg(reinterpret_cast<uint4*>(out), make_uint4(p[0], p[1], p[2], p[3]));
}
template <>
__device__ inline void store8<float>(float* out, const float (&w)[8]) {
  __stcg(reinterpret_cast<float4*>(out), make_float4(w[0], w[1], w[2], w[3]));
  __stcg(reinterpret_cast<float4*>(out) + 1, make_float4(w[4], w[5], w[6], w[7]));
}

// int4, `in` % 8 == 0 and `group` % 8 == 0: word w of a row holds columns 8w..8w+7 (byte b's low
// nibble is column 2b, little-endian), all in group 8w / group.
template <typename T>
__global__ void int4_rows_kernel(const uint32_t* codes, const float* scale, const uint8_t* zero,
                                 T* out, int64_t rows, int in, int group) {
  const int words = in / 8, groups = in / group;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const uint32_t* row_codes = codes + r * words;
    const float* row_scale = scale + r * groups;
    const uint8_t* row_zero = zero ? zero + r * groups : nullptr;
    for (int w = threadIdx.x; w < words; w += blockDim.x) {
      const int g = 8 * w / group;
      const float s = row_scale[g];
      const float z = row_zero ? float(row_zero[g]) : dequant::kSymmetricInt4Zero;
      const uint32_t word = row_codes[w];
      float values[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) values[k] = dequant::int4_weight((word >> (4 * k)) & 0x0Fu, z, s);
      store8(out + r * in + 8 * w, values);
    }
  }
}

// int8, `in` % 8 == 0: each thread two words, columns 8w..8w+7 of its row.
template <typename T>
__global__ void int8_rows_kernel(const uint2* q, const float* scale, T* out, int64_t rows, int in) {
  const int pairs = in / 8;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float s = scale[r];
    for (int w = threadIdx.x; w < pairs; w += blockDim.x) {
      const uint2 words = q[r * pairs + w];
      float values[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const uint32_t word = k < 4 ? words.x : words.y;
        values[k] = dequant::int8_weight(int8_t(uint8_t(word >> (8 * (k % 4)))), s);
      }
      store8(out + r * in + 8 * w, values);
    }
  }
}

// The element kernels' counterparts, for shapes and addresses the row kernels do not take.

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
  if (in % 8 == 0 && group % 8 == 0 && in <= INT32_MAX && aligned(codes, 4) && aligned(out, 16)) {
    const auto* words = reinterpret_cast<const uint32_t*>(codes);
    const int blocks = row_blocks(rows), width = int(in), g = int(group);
    switch (dtype) {
      case DequantDtype::kFloat32:
        int4_rows_kernel<<<blocks, kRowThreads, 0, s>>>(words, scale, zero,
                                                        static_cast<float*>(out), rows, width, g);
        break;
      case DequantDtype::kFloat16:
        int4_rows_kernel<<<blocks, kRowThreads, 0, s>>>(words, scale, zero,
                                                        static_cast<__half*>(out), rows, width, g);
        break;
      case DequantDtype::kBFloat16:
        int4_rows_kernel<<<blocks, kRowThreads, 0, s>>>(
            words, scale, zero, static_cast<__nv_bfloat16*>(out), rows, width, g);
        break;
    }
    return status();
  }
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
  if (in % 8 == 0 && in <= INT32_MAX && aligned(q, 8) && aligned(out, 16)) {
    const auto* pairs = reinterpret_cast<const uint2*>(q);
    const int blocks = row_blocks(rows), width = int(in);
    switch (dtype) {
      case DequantDtype::kFloat32:
        int8_rows_kernel<<<blocks, kRowThreads, 0, s>>>(pairs, scale, static_cast<float*>(out),
                                                        rows, width);
        break;
      case DequantDtype::kFloat16:
        int8_rows_kernel<<<blocks, kRowThreads, 0, s>>>(pairs, scale, static_cast<__half*>(out),
                                                        rows, width);
        break;
      case DequantDtype::kBFloat16:
        int8_rows_kernel<<<blocks, kRowThreads, 0, s>>>(
            pairs, scale, static_cast<__nv_bfloat16*>(out), rows, width);
        break;
    }
    return status();
  }
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
