// Sequence packing for causal language modelling: documents joined by an end-of-sequence token
// into one stream and cut into fixed [S+1]-token blocks (inputs are the first S, targets the
// last S), so no position is spent on padding.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "data/token_documents.h"

namespace switchyard {

struct PackedSequencesOptions {
  int64_t seq_len = 0;             ///< S; a block holds S + 1 tokens
  std::optional<uint32_t> eos_id;  ///< the separator; default: the documents' own
  uint64_t seed = 0;
  bool shuffle_documents = true;  ///< documents in a new order (so packed anew) every epoch
};

/// Epoch e's stream is doc, EOS, doc, EOS, ... over the documents in e's order; block i is its
/// tokens [i·S, i·S + S + 1), so consecutive blocks share one token and every token but the
/// first is a target exactly once. The number of blocks, (stream length − 1) / S, is the same
/// every epoch. Shuffling blocks into batches is BatchSampler's job.
///   usage: PackedSequences packed(read_token_file("train.tok"), {.seq_len = 1024});
///          torch::Tensor tokens = packed.batch(epoch, sampler.next().indices);  // [b, 1025]
class PackedSequences {
 public:
  /// Throws ConfigError without an EOS id, for seq_len < 1, or for documents too short to fill
  /// one block.
  PackedSequences(TokenDocuments docs, const PackedSequencesOptions& options);

  int64_t size() const { return num_blocks_; }  ///< blocks per epoch
  int64_t seq_len() const { return options_.seq_len; }
  uint32_t eos_id() const { return eos_; }

  /// Writes block `index` of `epoch` (S + 1 ids) into `out`.
  void block(int64_t epoch, int64_t index, std::span<uint32_t> out);
  /// The blocks `indices` of `epoch` as int64 [indices.size(), S + 1].
  torch::Tensor batch(int64_t epoch, std::span<const int64_t> indices);

 private:
  void layout(int64_t epoch);
  TokenDocuments docs_;
  PackedSequencesOptions options_;
  uint32_t eos_ = 0;
  int64_t num_blocks_ = 0;
  int64_t layout_epoch_ = -1;
  std::vector<int64_t> order_;   // documents in the epoch's order
  std::vector<uint64_t> start_;  // stream position of each of them, and the stream's length
};

}  // namespace switchyard
