// Seeds are mixed through splitmix64's finalizer so nearby (seed, epoch) pairs give unrelated
// streams.
#include "data/epoch_shuffle.h"

#include <utility>

#include "common/errors.h"
#include "data/corpus_split.h"

namespace switchyard {

uint64_t SplitMix64::next() {
  state_ += 0x9E3779B97F4A7C15ull;
  return mix64(state_);
}

uint64_t SplitMix64::below(uint64_t bound) {
  SY_CHECK(bound > 0, "SplitMix64::below(0)");
  // Reject the top partial range so every residue is equally likely.
  const uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % bound + 1) % bound;
  uint64_t x;
  do {
    x = next();
  } while (x > limit);
  return x % bound;
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, uint64_t stream, int64_t epoch) {
  SY_CHECK(n >= 0 && epoch >= 0, "epoch_permutation(n=", n, ", epoch=", epoch, ")");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  SplitMix64 rng(mix64(mix64(seed ^ mix64(stream)) + uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[size_t(i)], order[rng.below(uint64_t(i) + 1)]);
  return order;
}

}  // namespace switchyard
