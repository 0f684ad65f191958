// safetensors: 8-byte little-endian header length N, N bytes of JSON, then the data section.
// Every length and offset read from a file is checked before it is used.
#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/errors.h"

namespace switchyard {
namespace {

using nlohmann::json;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
};
// The dtypes of the safetensors spec that LibTorch can hold.
constexpr DtypeInfo kDtypes[] = {{"F64", torch::kDouble},
                                 {"F32", torch::kFloat},
                                 {"F16", torch::kHalf},
                                 {"BF16", torch::kBFloat16},
                                 {"I64", torch::kLong},
                                 {"I32", torch::kInt},
                                 {"I16", torch::kShort},
                                 {"I8", torch::kChar},
                                 {"U8", torch::kByte},
                                 {"U16", torch::kUInt16},
                                 {"U32", torch::kUInt32},
                                 {"U64", torch::kUInt64},
                                 {"BOOL", torch::kBool},
                                 {"F8_E4M3", torch::kFloat8_e4m3fn},
                                 {"F8_E5M2", torch::kFloat8_e5m2}};

const DtypeInfo* dtype_by_name(const std::string& n) {
  for (const auto& d : kDtypes)
    if (n == d.name) return &d;
  return nullptr;
}
const char* dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return d.name;
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
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail(where, at + ": shape entries must be non-negative integers");
    const uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) overflow = true;
    numel = overflow ? numel : numel * v;
    out.shape.push_back(int64_t(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max())));
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
  const uint64_t elem = c10::elementSize(out.scalar_type);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem ||
      numel * elem != out.end - out.begin)
    fail(where, detail::concat(at, ": dtype ", out.dtype, " and shape ", shape.dump(), " need ",
                               overflow ? std::string("too many") : std::to_string(numel * elem),
                               " bytes but data_offsets span ", out.end - out.begin));
  return out;
}

// Duplicate keys are legal JSON but an ambiguous checkpoint; nlohmann keeps the last silently,
// so keys are checked while parsing. Nesting deeper than a header needs is refused early.
json parse_json_strict(const char* text, size_t size, const std::string& where) {
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

}  // namespace

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

// ---- reader ----------------------------------------------------------------------------------

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->self_ = f;
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const uint64_t file_bytes = uint64_t(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    fail(path, detail::concat("truncated: ", file_bytes, " bytes, no header length"));
  }
  // Private and writable: tensors handed out may be written in place without touching the file.
  f->map_ = mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    fail(path, std::string("mmap failed: ") + std::strerror(errno));
  }
  f->map_bytes_ = file_bytes;
  const auto* bytes = static_cast<const unsigned char*>(f->map_);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian, whatever the host
  if (n > kMaxSafetensorsHeaderBytes)
    fail(path, detail::concat("header length ", n, " exceeds the 100 MB limit"));
  if (n > file_bytes - 8)
    fail(path, detail::concat("truncated: header length ", n, " beyond the end of the file (",
                              file_bytes, " bytes)"));
  f->data_ = reinterpret_cast<const char*>(bytes) + 8 + n;
  f->header_ = parse_safetensors_header(reinterpret_cast<const char*>(bytes) + 8, n,
                                        file_bytes - 8 - n, path);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_bytes_);
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsEntry* e = header_.find(name);
  if (!e) fail(path_, "no tensor '" + name + "'");
  auto keep_alive = self_.lock();
  void* ptr = const_cast<char*>(data_ + e->begin);
  auto options = torch::TensorOptions().dtype(e->scalar_type);
  const size_t elem = c10::elementSize(e->scalar_type);
  if (reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
    // A writer that does not pad its header leaves data unaligned: copy rather than misread.
    auto out = torch::empty(e->shape, options);
    std::memcpy(out.data_ptr(), ptr, e->end - e->begin);
    return out;
  }
  return torch::from_blob(
      ptr, e->shape, [keep_alive](void*) {}, options);
}

// ---- writer ----------------------------------------------------------------------------------

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      fail(path, "duplicate or reserved tensor name '" + name + "'");
    const char* dt = dtype_name(t.scalar_type());
    if (!dt)
      fail(path, detail::concat("tensor '", name, "': dtype ", t.scalar_type(),
                                " has no safetensors name"));
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {
        {"dtype", dt}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as upstream does

  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path tmp = target.parent_path() /
                       ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fail(path, std::string("cannot create ") + tmp.string() + ": " + std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        fail(path, "write failed: " + why);
      }
      c += w;
      n -= size_t(w);
    }
  };
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint64_t(text.size()) >> (8 * i)) & 0xff;
  write_all(len, 8);
  write_all(text.data(), text.size());
  for (const auto& c : data) write_all(c.data_ptr(), c.numel() * c.element_size());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(path, std::string("fsync/close failed: ") + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    fail(path, "rename failed: " + ec.message());
  }
  // The rename itself must reach the disk before we report success.
  const int dir = ::open(target.has_parent_path() ? target.parent_path().c_str() : ".",
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

// ---- sharded checkpoints -----------------------------------------------------------------------

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path)) {
    folder_ = fs::path(path).parent_path().string();
    const std::string file = fs::path(path).filename().string();
    for (const auto& t : shard(file)->header().tensors) shard_of_[t.name] = file;
    return;
  }
  if (!fs::is_directory(path)) fail(path, "no such checkpoint file or folder");
  folder_ = path;
  const fs::path index = fs::path(path) / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    if (!fs::exists(fs::path(path) / "model.safetensors"))
      fail(path, "neither model.safetensors nor model.safetensors.index.json");
    for (const auto& t : shard("model.safetensors")->header().tensors)
      shard_of_[t.name] = "model.safetensors";
    return;
  }
  const std::string text = read_text_file(index.string());
  const json root = parse_json_strict(text.data(), text.size(), index.string());
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    fail(index.string(), "no \"weight_map\" object");
  for (const auto& [name, file] : root["weight_map"].items()) {
    if (!file.is_string()) fail(index.string(), "weight_map entry '" + name + "' is not a string");
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f == "..")
      fail(index.string(), "weight_map entry '" + name + "' points outside the folder: " + f);
    shard_of_[name] = f;
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsCheckpoint::shard(const std::string& file) const {
  auto it = open_.find(file);
  if (it != open_.end()) return it->second;
  auto f = SafetensorsFile::open((std::filesystem::path(folder_) / file).string());
  open_[file] = f;
  return f;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : shard_of_) out.push_back(name);
  return out;
}

torch::Tensor SafetensorsCheckpoint::get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) fail(path_, "no tensor '" + name + "' in the checkpoint");
  auto f = shard(it->second);
  if (!f->contains(name))
    fail(f->path(), "tensor '" + name + "' is listed in the index but not in this shard");
  return f->get(name);
}

}  // namespace switchyard
