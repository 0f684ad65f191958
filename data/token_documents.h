// Tokenized documents as two flat arrays (ids, and where each document starts): held in memory
// or mapped from a token file, and read the same way by packing and statistics.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace switchyard {

/// A read-only view; copies share the storage.
///   usage: auto docs = TokenDocuments::from_vectors({{5, 6}, {7}}, 8192, 0);
///          std::span<const uint32_t> first = docs.document(0);
class TokenDocuments {
 public:
  TokenDocuments() = default;
  /// Copies `docs`. Throws Error if an id is not below vocab_size or eos_id is not.
  static TokenDocuments from_vectors(const std::vector<std::vector<uint32_t>>& docs,
                                     uint32_t vocab_size, std::optional<uint32_t> eos_id);
  /// A view of storage `owner` keeps alive: offsets has size()+1 entries, from 0 to
  /// tokens.size(), non-decreasing (the caller has checked).
  TokenDocuments(std::span<const uint32_t> tokens, std::span<const uint64_t> offsets,
                 uint32_t vocab_size, std::optional<uint32_t> eos_id,
                 std::shared_ptr<const void> owner);

  int64_t size() const { return offsets_.empty() ? 0 : int64_t(offsets_.size()) - 1; }
  int64_t num_tokens() const { return int64_t(tokens_.size()); }
  std::span<const uint32_t> document(int64_t i) const;
  std::span<const uint32_t> tokens() const { return tokens_; }
  std::span<const uint64_t> offsets() const { return offsets_; }
  uint32_t vocab_size() const { return vocab_size_; }
  std::optional<uint32_t> eos_id() const { return eos_id_; }

 private:
  std::span<const uint32_t> tokens_;
  std::span<const uint64_t> offsets_;
  uint32_t vocab_size_ = 0;
  std::optional<uint32_t> eos_id_;
  std::shared_ptr<const void> owner_;
};

}  // namespace switchyard
