// A block is found by binary search over the epoch's document start positions, so no stream is
// ever materialised: memory is O(documents) whatever the corpus size.
#include "data/packed_sequences.h"

#include <algorithm>

#include "common/errors.h"
#include "data/epoch_shuffle.h"

namespace switchyard {
namespace {

constexpr uint64_t kDocumentStream = 0x646f63756d656e74ull;  // "document"

}  // namespace

PackedSequences::PackedSequences(TokenDocuments docs, const PackedSequencesOptions& options)
    : docs_(std::move(docs)), options_(options) {
  if (options_.seq_len < 1)
    throw ConfigError(
        detail::concat("packing: sequence length ", options_.seq_len, " must be positive"));
  const auto eos = options_.eos_id ? options_.eos_id : docs_.eos_id();
  if (!eos) throw ConfigError("packing: no end-of-sequence id (the token file names none)");
  if (*eos >= docs_.vocab_size())
    throw ConfigError(
        detail::concat("packing: eos id ", *eos, " not below vocab size ", docs_.vocab_size()));
  eos_ = *eos;
  const uint64_t stream = uint64_t(docs_.num_tokens()) + uint64_t(docs_.size());
  if (stream < uint64_t(options_.seq_len) + 1)
    throw ConfigError(detail::concat("packing: ", docs_.size(), " documents make a stream of ",
                                     stream, " tokens, less than one block of ",
                                     options_.seq_len + 1));
  num_blocks_ = int64_t((stream - 1) / uint64_t(options_.seq_len));
}

void PackedSequences::layout(int64_t epoch) {
  if (epoch == layout_epoch_) return;
  const int64_t n = docs_.size();
  if (options_.shuffle_documents) {
    order_ = epoch_permutation(n, options_.seed, kDocumentStream, epoch);
  } else if (int64_t(order_.size()) != n) {
    order_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) order_[size_t(i)] = i;
  }
  start_.resize(size_t(n) + 1);
  start_[0] = 0;
  for (int64_t k = 0; k < n; ++k)
    start_[size_t(k) + 1] = start_[size_t(k)] + docs_.document(order_[size_t(k)]).size() + 1;
  layout_epoch_ = epoch;
}

void PackedSequences::block(int64_t epoch, int64_t index, std::span<uint32_t> out) {
  SY_CHECK(index >= 0 && index < num_blocks_, "block ", index, " of ", num_blocks_);
  SY_CHECK(int64_t(out.size()) == options_.seq_len + 1, "block buffer of ", out.size());
  layout(epoch);
  const uint64_t pos = uint64_t(index) * uint64_t(options_.seq_len);
  // The document holding stream position `pos`, and how far into it (its EOS at its length).
  size_t k = size_t(std::upper_bound(start_.begin(), start_.end(), pos) - start_.begin()) - 1;
  uint64_t offset = pos - start_[k];
  size_t filled = 0;
  while (filled < out.size()) {
    const auto doc = docs_.document(order_[k]);
    if (offset < doc.size()) {
      const size_t n = std::min<size_t>(doc.size() - offset, out.size() - filled);
      std::copy_n(doc.begin() + std::ptrdiff_t(offset), n, out.begin() + std::ptrdiff_t(filled));
      filled += n;
      offset += n;
    } else {
      out[filled++] = eos_;
      ++k;
      offset = 0;
    }
  }
}

torch::Tensor PackedSequences::batch(int64_t epoch, std::span<const int64_t> indices) {
  const int64_t width = options_.seq_len + 1;
  auto out = torch::empty({int64_t(indices.size()), width}, torch::kLong);
  std::vector<uint32_t> row(size_t(width), 0);
  auto* dst = out.data_ptr<int64_t>();
  for (size_t b = 0; b < indices.size(); ++b) {
    block(epoch, indices[b], row);
    std::copy(row.begin(), row.end(), dst + int64_t(b) * width);
  }
  return out;
}

}  // namespace switchyard
