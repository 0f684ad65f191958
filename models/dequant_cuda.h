// Host-side entry to the CUDA dequantisation kernels (models/dequant_cuda.cu). Free of torch and
// CUDA headers, like routers/fwht_cuda.h: nvcc stays fast and the C++ side needs no CUDA includes.
#pragma once

#include <cstdint>

namespace switchyard::cuda {

enum class DequantDtype { kFloat32, kFloat16, kBFloat16 };

/// int4 codes of `rows` rows of `in` columns (two per byte, the even column in the low nibble,
/// `in / 2` bytes a row) -> out [rows, in]: (code - zero[r, g]) * scale[r, g], g = i / group,
/// `in / group` groups a row. zero nullptr: symmetric codes (zero 8). One pass: codes and scales
/// read once, each weight written once. `stream` is a cudaStream_t. Returns a CUDA error
/// string, or nullptr on success.
const char* dequantize_int4_launch(const uint8_t* codes, const float* scale, const uint8_t* zero,
                                   void* out, int64_t rows, int64_t in, int64_t group,
                                   DequantDtype dtype, void* stream);

/// int8 q [rows, in] -> out [rows, in]: q * scale[r].
const char* dequantize_int8_launch(const int8_t* q, const float* scale, void* out, int64_t rows,
                                   int64_t in, DequantDtype dtype, void* stream);

}  // namespace switchyard::cuda
