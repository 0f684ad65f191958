// Integer buckets rather than floating-point comparisons, so the Python mirror
// (scripts/fortune_corpus.py) computes the same split bit for bit.
#include "data/corpus_split.h"

#include <cmath>

#include "common/errors.h"

namespace switchyard {
namespace {

constexpr uint64_t kBuckets = 10000;

uint64_t buckets_of(double fraction, const char* name) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw ConfigError(detail::concat("split ", name, " fraction ", fraction, ": not in [0, 1]"));
  return uint64_t(std::llround(fraction * double(kBuckets)));
}

}  // namespace

uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Split split_of(std::string_view text, const SplitOptions& options) {
  const uint64_t valid = buckets_of(options.valid_fraction, "valid");
  const uint64_t test = buckets_of(options.test_fraction, "test");
  if (valid + test > kBuckets)
    throw ConfigError(detail::concat("split fractions valid ", options.valid_fraction, " + test ",
                                     options.test_fraction, " exceed 1"));
  const uint64_t bucket = mix64(fnv1a64(text) ^ options.seed) % kBuckets;
  return bucket < valid ? Split::kValid : bucket < valid + test ? Split::kTest : Split::kTrain;
}

std::vector<TextRecord> select_split(const std::vector<TextRecord>& records, Split split,
                                     const SplitOptions& options) {
  std::vector<TextRecord> out;
  for (const auto& r : records)
    if (split_of(r.text, options) == split) out.push_back(r);
  return out;
}

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kValid:
      return "valid";
    case Split::kTest:
      return "test";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
    if (name == split_name(s)) return s;
  throw ConfigError("unknown split '" + name + "' (train, valid or test)");
}

}  // namespace switchyard
