// In-memory documents keep their two arrays in one owner object the spans point into.
#include "data/token_documents.h"

#include "common/errors.h"

namespace switchyard {
namespace {

struct Storage {
  std::vector<uint32_t> tokens;
  std::vector<uint64_t> offsets;
};

}  // namespace

TokenDocuments::TokenDocuments(std::span<const uint32_t> tokens, std::span<const uint64_t> offsets,
                               uint32_t vocab_size, std::optional<uint32_t> eos_id,
                               std::shared_ptr<const void> owner)
    : tokens_(tokens),
      offsets_(offsets),
      vocab_size_(vocab_size),
      eos_id_(eos_id),
      owner_(std::move(owner)) {}

TokenDocuments TokenDocuments::from_vectors(const std::vector<std::vector<uint32_t>>& docs,
                                            uint32_t vocab_size, std::optional<uint32_t> eos_id) {
  SY_CHECK(!eos_id || *eos_id < vocab_size, "eos id ", *eos_id, " not below vocab size ",
           vocab_size);
  auto storage = std::make_shared<Storage>();
  storage->offsets.reserve(docs.size() + 1);
  storage->offsets.push_back(0);
  for (size_t d = 0; d < docs.size(); ++d) {
    for (uint32_t id : docs[d])
      SY_CHECK(id < vocab_size, "document ", d, ": id ", id, " not below vocab size ", vocab_size);
    storage->tokens.insert(storage->tokens.end(), docs[d].begin(), docs[d].end());
    storage->offsets.push_back(storage->tokens.size());
  }
  std::span<const uint32_t> tokens(storage->tokens);
  std::span<const uint64_t> offsets(storage->offsets);
  return TokenDocuments(tokens, offsets, vocab_size, eos_id, std::move(storage));
}

std::span<const uint32_t> TokenDocuments::document(int64_t i) const {
  SY_CHECK(i >= 0 && i < size(), "document ", i, " of ", size());
  return tokens_.subspan(offsets_[size_t(i)], offsets_[size_t(i) + 1] - offsets_[size_t(i)]);
}

}  // namespace switchyard
