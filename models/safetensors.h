// safetensors I/O: a strict header parser (the fuzzed surface), a memory-mapped reader whose
// tensors are zero-copy views, an atomic writer, and sharded checkpoints
// (model.safetensors.index.json).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/safetensors_header.h"

namespace switchyard {

/// A memory-mapped .safetensors file. Tensors are views of the mapping (private, copy-on-write:
/// writing to one never changes the file) that keep it alive.
///   usage: auto f = SafetensorsFile::open("model.safetensors");
///          torch::Tensor w = f->get("model.embed_tokens.weight");
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();

  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return header_.find(name) != nullptr; }
  /// Throws Error naming the file when `name` is absent.
  torch::Tensor get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const char* data_ = nullptr;
  SafetensorsHeader header_;
  std::weak_ptr<SafetensorsFile> self_;
};

/// A file as written: its size and FNV-1a 64 checksum (common/fnv1a.h), computed while writing.
struct WrittenFile {
  uint64_t bytes = 0;
  uint64_t fnv1a64 = 0;
};

/// fsync of a folder (so renames in it reach the disk); throws Error naming it on failure.
void fsync_directory(const std::string& dir);

/// Writes tensors (any device; stored contiguous, on the CPU) in order, atomically: a temporary
/// file in the same folder, fsync, rename, fsync of the folder. Throws Error on duplicate names
/// or I/O failure (a full disk included); returns what was written.
WrittenFile save_safetensors(const std::string& path,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

/// A Hugging Face checkpoint: a folder with model.safetensors, or with
/// model.safetensors.index.json naming shards, or a single .safetensors file. Shards are mapped
/// on first use, so a rank that reads only its experts touches only those bytes.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path);
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return shard_of_.count(name) > 0; }
  torch::Tensor get(const std::string& name) const;
  /// The header entry (dtype, shape, byte range) without touching the tensor's bytes.
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<SafetensorsFile> shard(const std::string& file) const;
  std::shared_ptr<SafetensorsFile> shard_holding(const std::string& tensor) const;
  std::string path_, folder_;
  std::map<std::string, std::string> shard_of_;  ///< tensor -> shard file name
  mutable std::map<std::string, std::shared_ptr<SafetensorsFile>> open_;
};

/// Writes `chunks` to `path` atomically: a temporary file in the same folder, fsync, rename,
/// fsync of the folder. A crash at any moment leaves either the old file or the new one.
WrittenFile write_file_atomic(const std::string& path,
                              const std::vector<std::pair<const void*, size_t>>& chunks);
void write_text_file_atomic(const std::string& path, const std::string& text);

/// Reads a whole (small) text file; throws Error naming it.
std::string read_text_file(const std::string& path);

}  // namespace switchyard
