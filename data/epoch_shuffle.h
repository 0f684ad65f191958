// Deterministic permutations for per-epoch shuffling: the same (seed, epoch) gives the same
// order on every rank, every platform and every standard library.
#pragma once

#include <cstdint>
#include <vector>

namespace switchyard {

/// A splitmix64 stream: portable where std::shuffle and std::uniform_int_distribution are not
/// (their algorithms are left to each standard library).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  /// Uniform in [0, bound), bound > 0, without modulo bias (rejection).
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

/// A permutation of 0..n-1 (Fisher–Yates) drawn from `seed`, `stream` (keeps the orders of
/// different uses of one seed apart, e.g. documents and samples) and `epoch`.
///   usage: auto order = epoch_permutation(num_samples, seed, kSampleStream, epoch);
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, uint64_t stream, int64_t epoch);

}  // namespace switchyard
