// libFuzzer target: arbitrary bytes as a whole .safetensors file. The parser must either throw
// switchyard::Error or return a header whose every tensor lies inside the data section, spans
// exactly numel * element size bytes, and has a shape LibTorch can hold (the dimensions, a 0
// counting as 1, multiply to at most 2^63 - 1); any crash, sanitizer report, other exception or
// broken invariant is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/errors.h"
#include "models/safetensors_header.h"

namespace {

// Bytes per element from the dtype's name, as the safetensors spec spells them ("BF16": 2,
// "F8_E4M3": 1, "BOOL": 1), independently of the parser's table.
uint64_t element_bytes(const std::string& dtype) {
  if (dtype == "BOOL") return 1;
  const size_t digits = dtype.find_first_of("0123456789");
  return std::stoull(dtype.substr(digits)) / 8;  // stoull stops at "_E4M3"
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    uint64_t data_offset = 0;
    const auto header = switchyard::parse_safetensors_bytes(data, size, "fuzz", &data_offset);
    const uint64_t data_bytes = size - data_offset;
    for (const auto& t : header.tensors) {
      if (t.begin > t.end || t.end > data_bytes) __builtin_trap();
      int64_t extent = 1, numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0 || __builtin_mul_overflow(extent, std::max<int64_t>(d, 1), &extent))
          __builtin_trap();
        numel *= d;
      }
      if (uint64_t(numel) * element_bytes(t.dtype) != t.end - t.begin) __builtin_trap();
    }
  } catch (const switchyard::Error&) {
    // a clear refusal is the expected outcome for most inputs
  }
  return 0;
}
