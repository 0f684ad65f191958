// safetensors files: the memory-mapped reader, the atomic writer and sharded checkpoints. The
// header itself is parsed (and fuzzed) in safetensors_header.cpp.
#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/errors.h"
#include "common/fnv1a.h"

namespace switchyard {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

}  // namespace

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
  uint64_t data_offset = 0;
  f->header_ = parse_safetensors_bytes(bytes, file_bytes, path, &data_offset);
  f->data_ = reinterpret_cast<const char*>(bytes) + data_offset;
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
    // An empty tensor has no buffer (data_ptr() is null), and memcpy wants one even for 0 bytes.
    if (e->end > e->begin) std::memcpy(out.data_ptr(), ptr, e->end - e->begin);
    return out;
  }
  return torch::from_blob(
      ptr, e->shape, [keep_alive](void*) {}, options);
}

// ---- writer ----------------------------------------------------------------------------------

WrittenFile write_file_atomic(const std::string& path,
                              const std::vector<std::pair<const void*, size_t>>& chunks) {
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
  // The checksum of what is written, as it is written: a checkpoint's manifest needs no re-read.
  WrittenFile written;
  Fnv1a64 checksum;
  for (const auto& [p, n] : chunks) {
    checksum.update(std::string_view(static_cast<const char*>(p), n));
    written.bytes += n;
    write_all(p, n);
  }
  written.fnv1a64 = checksum.value();
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
  fsync_directory(target.has_parent_path() ? target.parent_path().string() : ".");
  return written;
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, std::string("cannot open the folder to fsync it: ") + std::strerror(errno));
  const bool synced = ::fsync(fd) == 0;
  const std::string why = synced ? "" : std::strerror(errno);
  ::close(fd);
  if (!synced) fail(dir, "fsync of the folder failed: " + why);
}

void write_text_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, {{text.data(), text.size()}});
}

WrittenFile save_safetensors(const std::string& path,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      fail(path, "duplicate or reserved tensor name '" + name + "'");
    const char* dt = safetensors_dtype_name(t.scalar_type());
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

  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint64_t(text.size()) >> (8 * i)) & 0xff;
  std::vector<std::pair<const void*, size_t>> chunks = {{len, 8}, {text.data(), text.size()}};
  for (const auto& c : data) chunks.push_back({c.data_ptr(), c.numel() * c.element_size()});
  return write_file_atomic(path, chunks);
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

std::shared_ptr<SafetensorsFile> SafetensorsCheckpoint::shard_holding(
    const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) fail(path_, "no tensor '" + name + "' in the checkpoint");
  auto f = shard(it->second);
  if (!f->contains(name))
    fail(f->path(), "tensor '" + name + "' is listed in the index but not in this shard");
  return f;
}

torch::Tensor SafetensorsCheckpoint::get(const std::string& name) const {
  return shard_holding(name)->get(name);
}

const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string& name) const {
  return *shard_holding(name)->header().find(name);  // the shard stays open in open_
}

}  // namespace switchyard
