// The safetensors header: 8-byte little-endian length, then JSON naming each tensor's dtype,
// shape and byte range. Parsing is the fuzzed surface (tests/fuzz_safetensors_header.cpp), so
// this part depends on c10's ScalarType only, not on the rest of LibTorch.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace switchyard {

/// One tensor's header entry. Offsets are relative to the start of the data section.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  ///< as in the file: F32, BF16, I8, ...
  c10::ScalarType scalar_type;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  ///< in data order
  std::map<std::string, std::string> metadata;
  const SafetensorsEntry* find(const std::string& name) const;
};

/// Largest header we accept (the safetensors library's own limit).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

/// Parses and checks a header: valid JSON, an object of entries plus optional __metadata__
/// (strings), no duplicate names, known dtypes, non-negative shapes, offsets inside
/// `data_bytes`, byte counts equal to numel * element size, no overlaps. Throws Error naming
/// `where` (the file) and the tensor at fault. Never reads outside [json, json + size).
SafetensorsHeader parse_safetensors_header(const char* json, size_t size, uint64_t data_bytes,
                                           const std::string& where);

/// A whole file's bytes: reads the length prefix, checks it against `size`, parses the header.
/// `data_offset` receives where the data section starts. Throws Error naming `where`.
SafetensorsHeader parse_safetensors_bytes(const unsigned char* bytes, uint64_t size,
                                          const std::string& where, uint64_t* data_offset);

/// JSON as safetensors headers and index files need it: duplicate keys (legal JSON, but an
/// ambiguous checkpoint) and nesting deeper than 8 are refused. Throws Error naming `where`.
nlohmann::json parse_json_strict(const char* text, size_t size, const std::string& where);

/// The file's name for a dtype ("F32", "BF16", ...), or nullptr for one safetensors cannot hold.
const char* safetensors_dtype_name(c10::ScalarType type);

}  // namespace switchyard
