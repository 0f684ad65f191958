// 64-bit FNV-1a, the one hash Switchyard writes down: the corpus split's bucket
// (data/corpus_split.h) and the checksum of every checkpoint file (models/switchyard_checkpoint.h).
#pragma once

#include <cstdint>
#include <string_view>

namespace switchyard {

/// Incremental: feeding the bytes in pieces gives the hash of their concatenation.
///   usage: Fnv1a64 h; h.update(chunk1); h.update(chunk2); uint64_t v = h.value();
class Fnv1a64 {
 public:
  void update(std::string_view bytes) {
    for (unsigned char b : bytes) h_ = (h_ ^ b) * 0x100000001B3ull;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xCBF29CE484222325ull;  // the offset basis
};

/// FNV-1a of `bytes` in one call.
inline uint64_t fnv1a64(std::string_view bytes) {
  Fnv1a64 h;
  h.update(bytes);
  return h.value();
}

}  // namespace switchyard
