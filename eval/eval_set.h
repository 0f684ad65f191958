// The evaluation set of a causal language model: rows of input ids with their next-token
// targets, cut from a packed token file (`switchyard data prepare`) or read from token-id lines.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace switchyard {

/// N rows of S positions. Position s of row n predicts targets[n][s] from input_ids[n][..s].
struct EvalSet {
  torch::Tensor input_ids;       ///< [N, S] int64
  torch::Tensor attention_mask;  ///< [N, S] int64, 1 on real tokens (0: padding of short lines)
  torch::Tensor targets;         ///< [N, S] int64, the next token id, -1 where there is none
  std::string source;            ///< the file, for reports
  std::string format;            ///< "token file" or "token lines"

  int64_t rows() const { return input_ids.size(0); }
  int64_t real_tokens() const { return attention_mask.sum().item<int64_t>(); }
  int64_t predicted_tokens() const { return targets.ge(0).sum().item<int64_t>(); }
};

struct EvalSetOptions {
  int64_t seq_len = 128;      ///< S for token files: blocks of S + 1 packed tokens
  int64_t max_sequences = 0;  ///< keep the first rows only; 0: all
};

/// Reads PATH: a token file (recognised by its magic) is packed in document order, documents
/// joined by EOS, into blocks of S + 1 tokens overlapping by one, so every token but the first is
/// predicted exactly once; any other file is read as token-id lines, each line one row.
/// Throws ConfigError naming PATH for an unreadable or empty set.
///   usage: EvalSet set = read_eval_set("data/valid.tok", {.seq_len = 256});
EvalSet read_eval_set(const std::string& path, const EvalSetOptions& options);

/// Throws ConfigError naming the set's file when an input or target id is not below vocab_size.
void check_vocabulary(const EvalSet& set, int64_t vocab_size);

}  // namespace switchyard
