// Token files: tokenized documents on disk, written by `switchyard data prepare` or by
// scripts/token_file.py (e.g. with the real Qwen tokenizer), memory-mapped for training.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "data/token_documents.h"

namespace switchyard {

// ---- format, version 1 (all integers little-endian) ----------------------------------------
//
//   offset  size          field
//        0  8             magic "SYTOKENS"
//        8  4  u32        version = 1
//       12  4  u32        header_bytes = 64
//       16  8  u64        num_documents D
//       24  8  u64        num_tokens T
//       32  4  u32        vocab_size V: every id is below it
//       36  4  u32        eos_id, or 0xFFFFFFFF for none (packing then needs one given)
//       40 24             zero
//       64 4·T u32        token ids, documents one after another, no separators
//        …  0 or 4        zero padding to a multiple of 8 bytes
//        …  8·(D+1) u64   offsets: document d is ids [offsets[d], offsets[d+1]);
//                         offsets[0] = 0, non-decreasing, offsets[D] = T
//
// Offsets come last so a writer can stream ids without knowing the documents in advance; the
// file size is exactly what the header implies, so truncation is always detected.

inline constexpr char kTokenFileMagic[8] = {'S', 'Y', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr uint32_t kTokenFileHeaderBytes = 64;
inline constexpr uint32_t kTokenFileNoEos = 0xFFFFFFFFu;

/// Writes a token file document by document, atomically: into PATH.partial, renamed to PATH by
/// finish(). Destroying an unfinished writer removes the partial file.
///   usage: TokenFileWriter w("train.tok", tok.vocab_size(), eos);
///          w.add(tok.encode(text)); ...; w.finish();
class TokenFileWriter {
 public:
  TokenFileWriter(const std::string& path, uint32_t vocab_size, std::optional<uint32_t> eos_id);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  /// Throws Error for an id not below vocab_size.
  void add(std::span<const uint32_t> document);
  void finish();
  int64_t documents() const { return int64_t(offsets_.size()) - 1; }
  int64_t tokens() const { return int64_t(offsets_.back()); }

 private:
  void write(const void* data, size_t bytes);
  std::string path_, partial_;
  std::FILE* file_ = nullptr;
  uint32_t vocab_size_;
  std::optional<uint32_t> eos_id_;
  std::vector<uint64_t> offsets_{0};
};

/// Writes `docs` to PATH (atomically, as above).
void write_token_file(const std::string& path, const TokenDocuments& docs);

struct TokenFileReadOptions {
  bool check_ids = true;  ///< read every id once to check it is below vocab_size
};

/// Maps PATH read-only; the documents are views into the mapping. A file that is not a valid
/// version-1 token file (magic, version, sizes, offsets, ids) is refused with one ConfigError
/// line naming the file and what is wrong.
///   usage: TokenDocuments train = read_token_file("data/train.tok");
TokenDocuments read_token_file(const std::string& path, const TokenFileReadOptions& options = {});

}  // namespace switchyard
