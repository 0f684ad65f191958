// A seeded stretch of LibTorch's default CPU generator, for parameters no checkpoint provides.
// LibTorch seeds that generator from the OS at start, so without it every run and every rank
// draws different values, and replicated parameters (a new router) differ across ranks.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdint>
#include <mutex>

namespace switchyard {

/// While alive, the default CPU generator draws from `seed`; its previous state is put back on
/// leaving, so the caller's random stream is undisturbed.
///   usage: { ScopedSeed seed(layer_seed(init_seed, i)); router = make_router(...); }
class ScopedSeed {
 public:
  explicit ScopedSeed(uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    saved_ = gen_.get_state();
    gen_.set_current_seed(seed);
  }
  ~ScopedSeed() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_);
  }
  ScopedSeed(const ScopedSeed&) = delete;
  ScopedSeed& operator=(const ScopedSeed&) = delete;

 private:
  at::Generator gen_;
  torch::Tensor saved_;
};

/// Layer `layer`'s own seed under `seed`: a layer's draws do not depend on what the layers before
/// it drew (how many experts a rank holds, whether they were quantized or skipped).
inline uint64_t layer_seed(uint64_t seed, int64_t layer) {
  return seed * 0x9E3779B97F4A7C15ull + uint64_t(layer + 1);
}

}  // namespace switchyard
