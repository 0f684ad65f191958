// libFuzzer target: arbitrary bytes as a whole .safetensors file. The parser must either throw
// switchyard::Error or return a header whose every tensor lies inside the data section; any
// crash, sanitizer report, other exception or out-of-range entry is a finding.
#include <cstddef>
#include <cstdint>

#include "common/errors.h"
#include "models/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    uint64_t data_offset = 0;
    const auto header = switchyard::parse_safetensors_bytes(data, size, "fuzz", &data_offset);
    const uint64_t data_bytes = size - data_offset;
    for (const auto& t : header.tensors)
      if (t.begin > t.end || t.end > data_bytes) __builtin_trap();
  } catch (const switchyard::Error&) {
    // a clear refusal is the expected outcome for most inputs
  }
  return 0;
}
