// safetensors header parsing. Every length and offset read from a file is checked before it is
// used; nothing here reads outside the bytes it is given.
#include "models/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "common/errors.h"

namespace switchyard {
namespace {

using nlohmann::json;

struct DtypeInfo {
  const char* name;
  c10::ScalarType type;
  uint64_t bytes;  // per element; kept here so parsing needs no LibTorch library code
};
// The dtypes of the safetensors spec that LibTorch can hold.
constexpr DtypeInfo kDtypes[] = {{"F64", c10::kDouble, 8},
                                 {"F32", c10::kFloat, 4},
                                 {"F16", c10::kHalf, 2},
                                 {"BF16", c10::kBFloat16, 2},
                                 {"I64", c10::kLong, 8},
                                 {"I32", c10::kInt, 4},
                                 {"I16", c10::kShort, 2},
                                 {"I8", c10::kChar, 1},
                                 {"U8", c10::kByte, 1},
                                 {"U16", c10::kUInt16, 2},
                                 {"U32", c10::kUInt32, 4},
                                 {"U64", c10::kUInt64, 8},
                                 {"BOOL", c10::kBool, 1},
                                 {"F8_E4M3", c10::ScalarType::Float8_e4m3fn, 1},
                                 {"F8_E5M2", c10::ScalarType::Float8_e5m2, 1}};

const DtypeInfo* dtype_by_name(const std::string& n) {
  for (const auto& d : kDtypes)
    if (n == d.name) return &d;
  return nullptr;
}

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

uint64_t read_offset(const json& v, const std::string& where, const std::string& name) {
  if (!v.is_number_unsigned())
    fail(where, "tensor '" + name + "': data_offsets must be non-negative integers");
  return v.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const json& e, uint64_t data_bytes,
                             const std::string& where) {
  const std::string at = "tensor '" + name + "'";
  if (!e.is_object()) fail(where, at + ": entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) fail(where, at + ": missing \"" + key + "\"");
  SafetensorsEntry out;
  out.name = name;
  if (!e["dtype"].is_string()) fail(where, at + ": dtype is not a string");
  out.dtype = e["dtype"].get<std::string>();
  const DtypeInfo* dt = dtype_by_name(out.dtype);
  if (!dt) fail(where, at + ": unknown dtype '" + out.dtype + "'");
  out.scalar_type = dt->type;

  const json& shape = e["shape"];
  if (!shape.is_array()) fail(where, at + ": shape is not a list");
  // LibTorch multiplies the dimensions in int64 (for strides, a 0 counting as 1): beyond that
  // no tensor can have the shape, even one of no bytes like [0, 2^62, 2^62].
  uint64_t numel = 1, extent = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail(where, at + ": shape entries must be non-negative integers");
    const uint64_t v = d.get<uint64_t>();
    if (std::max<uint64_t>(v, 1) > uint64_t(std::numeric_limits<int64_t>::max()) / extent)
      fail(where, at + ": shape " + shape.dump() +
                      " has too many elements for LibTorch (dimensions multiply past 2^63)");
    extent *= std::max<uint64_t>(v, 1);
    numel *= v;  // <= extent
    out.shape.push_back(int64_t(v));
  }
  const json& offsets = e["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    fail(where, at + ": data_offsets must be [begin, end]");
  out.begin = read_offset(offsets[0], where, name);
  out.end = read_offset(offsets[1], where, name);
  if (out.begin > out.end) fail(where, at + ": data_offsets begin > end");
  if (out.end > data_bytes)
    fail(where, detail::concat(at, ": data_offsets [", out.begin, ", ", out.end,
                               "] out of range (data section has ", data_bytes, " bytes)"));
  const uint64_t elem = dt->bytes;
  const bool overflow = numel > std::numeric_limits<uint64_t>::max() / elem;
  if (overflow || numel * elem != out.end - out.begin)
    fail(where, detail::concat(at, ": dtype ", out.dtype, " and shape ", shape.dump(), " need ",
                               overflow ? std::string("too many") : std::to_string(numel * elem),
                               " bytes but data_offsets span ", out.end - out.begin));
  return out;
}

}  // namespace

// Duplicate keys are legal JSON but an ambiguous checkpoint; nlohmann keeps the last silently,
// so keys are checked while parsing. Nesting deeper than a header needs is refused early.
nlohmann::json parse_json_strict(const char* text, size_t size, const std::string& where) {
  std::vector<std::set<std::string>> keys_at_depth;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > 8) fail(where, "header JSON nested too deeply");
    if (event == json::parse_event_t::object_start) keys_at_depth.emplace_back();
    if (event == json::parse_event_t::object_end) keys_at_depth.pop_back();
    if (event == json::parse_event_t::key && !keys_at_depth.empty() &&
        !keys_at_depth.back().insert(parsed.get<std::string>()).second)
      fail(where, "duplicate name '" + parsed.get<std::string>() + "' in header");
    return true;
  };
  try {
    return json::parse(text, text + size, callback);
  } catch (const json::exception& e) {
    fail(where, std::string("invalid JSON header: ") + e.what());
  }
}

const char* safetensors_dtype_name(c10::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return d.name;
  return nullptr;
}

const SafetensorsEntry* SafetensorsHeader::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsHeader parse_safetensors_header(const char* text, size_t size, uint64_t data_bytes,
                                           const std::string& where) {
  if (size > kMaxSafetensorsHeaderBytes)
    fail(where, detail::concat("header of ", size, " bytes exceeds the 100 MB limit"));
  const json root = parse_json_strict(text, size, where);
  if (!root.is_object()) fail(where, "header is not a JSON object");
  SafetensorsHeader h;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(where, "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) fail(where, "__metadata__ value of '" + k + "' is not a string");
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(name, value, data_bytes, where));
  }
  std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const SafetensorsEntry* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (const auto& cur : h.tensors) {
    if (cur.begin == cur.end) continue;  // no bytes, nothing to overlap
    if (last && cur.begin < last->end)
      fail(where, "tensor '" + cur.name + "' overlaps tensor '" + last->name + "' in the data");
    if (!last || cur.end > last->end) last = &cur;
  }
  return h;
}

SafetensorsHeader parse_safetensors_bytes(const unsigned char* bytes, uint64_t size,
                                          const std::string& where, uint64_t* data_offset) {
  if (size < 8) fail(where, detail::concat("truncated: ", size, " bytes, no header length"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian, whatever the host
  if (n > kMaxSafetensorsHeaderBytes)
    fail(where, detail::concat("header length ", n, " exceeds the 100 MB limit"));
  if (n > size - 8)
    fail(where, detail::concat("truncated: header length ", n, " beyond the end of the file (",
                               size, " bytes)"));
  if (data_offset) *data_offset = 8 + n;
  return parse_safetensors_header(reinterpret_cast<const char*>(bytes) + 8, n, size - 8 - n, where);
}

}  // namespace switchyard
