// The arithmetic of one dequantised weight, shared by the CPU loop (models/weight_quant.cpp) and
// the CUDA kernel (models/dequant_cuda.cu), so both give the same bits: one subtraction and one
// multiplication in fp32 (no fused multiply-add can form), rounded once to the output dtype.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SWITCHYARD_HOST_DEVICE __host__ __device__
#else
#define SWITCHYARD_HOST_DEVICE
#endif

namespace switchyard::dequant {

/// Symmetric int4 codes 0..15 hold -8..7: their zero point.
constexpr float kSymmetricInt4Zero = 8.0f;

/// int4: w = (code - zero) * scale, code 0..15 (low nibble = even column).
SWITCHYARD_HOST_DEVICE inline float int4_weight(uint32_t code, float zero, float scale) {
  return (float(code) - zero) * scale;
}

/// int8: w = q * scale.
SWITCHYARD_HOST_DEVICE inline float int8_weight(int8_t q, float scale) {
  return float(q) * scale;
}

}  // namespace switchyard::dequant
