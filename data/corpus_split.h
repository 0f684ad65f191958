// Deterministic train/valid/test split of text records by a hash of their text: a record's
// split never depends on the other records, so adding a file moves nothing already there.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/fnv1a.h"
#include "data/text_record.h"

namespace switchyard {

enum class Split { kTrain, kValid, kTest };

/// Fractions are rounded to units of 1/10000. `seed` picks another split of the same corpus.
struct SplitOptions {
  double valid_fraction = 0.05;
  double test_fraction = 0.05;
  uint64_t seed = 0;
};

/// bucket = mix64(fnv1a64(text) ^ seed) % 10000 (mix64: splitmix64's finalizer); valid below
/// valid_fraction·10000, test below (valid + test)·10000, train above. Identical texts share a
/// split, so an exact duplicate can never leak from train into valid or test.
///   usage: if (split_of(record.text, {}) == Split::kValid) ...
Split split_of(std::string_view text, const SplitOptions& options);

/// The records of one split, in their order. Throws ConfigError on fractions outside [0, 1].
std::vector<TextRecord> select_split(const std::vector<TextRecord>& records, Split split,
                                     const SplitOptions& options);

const char* split_name(Split split);  ///< "train", "valid", "test"
/// Throws ConfigError for a name that is none of them.
Split parse_split(const std::string& name);

/// splitmix64's finalizer: with common/fnv1a.h's fnv1a64 the split's hash (exposed for tests and
/// for scripts/fortune_corpus.py to mirror).
uint64_t mix64(uint64_t x);

}  // namespace switchyard
