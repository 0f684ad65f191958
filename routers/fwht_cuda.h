// Host-side entry to the CUDA FWHT kernels. Kept free of torch and CUDA headers so that the
// .cu file compiles quickly with nvcc and the C++ side needs no CUDA includes to call it.
#pragma once

#include <cstdint>

namespace switchyard::cuda {

enum class FwhtDtype { kFloat32, kFloat64, kFloat16, kBFloat16 };

/// out[r, :] = H_n in[r, :] / sqrt(n) for `rows` contiguous rows; `stream` is a cudaStream_t.
/// in and out may alias. Returns a CUDA error string, or nullptr on success.
const char* fwht_launch(const void* in, void* out, int64_t rows, int64_t n, FwhtDtype dtype,
                        void* stream);

}  // namespace switchyard::cuda
