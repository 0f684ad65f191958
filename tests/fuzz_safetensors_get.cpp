// libFuzzer target: arbitrary bytes as a .safetensors file on disk, read through
// SafetensorsFile::open and get (models/safetensors.h), the way checkpoints are loaded. Oracle:
// open throws switchyard::Error, or every tensor get() returns has the header's dtype and shape,
// numel * element size equal to its byte range, and exactly the file's bytes there (whether
// mapped in place or copied because unaligned); a name not in the file is refused with Error.
#include <cstdint>
#include <cstring>
#include <string>

#include "common/errors.h"
#include "models/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("input.safetensors");
  fuzz::write_bytes(path, data, size);
  std::shared_ptr<SafetensorsFile> file;
  try {
    file = SafetensorsFile::open(path);
  } catch (const Error&) {
    return 0;
  }
  uint64_t data_offset = 0;
  parse_safetensors_bytes(data, size, "again", &data_offset);
  for (const auto& e : file->header().tensors) {
    const torch::Tensor t = file->get(e.name);
    FUZZ_CHECK(t.scalar_type() == e.scalar_type && t.sizes() == torch::IntArrayRef(e.shape));
    const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
    FUZZ_CHECK(bytes == e.end - e.begin, "%s: %llu bytes for a range of %llu\n", e.name.c_str(),
               (unsigned long long)bytes, (unsigned long long)(e.end - e.begin));
    FUZZ_CHECK(t.is_contiguous());
    FUZZ_CHECK(bytes == 0 || std::memcmp(t.data_ptr(), data + data_offset + e.begin, bytes) == 0);
  }
  const std::string absent = "\x01 not in the header";
  if (!file->contains(absent)) {
    try {
      file->get(absent);
      FUZZ_CHECK(false, "an absent name was found\n");
    } catch (const Error&) {
    }
  }
  return 0;
}
