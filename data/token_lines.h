// Token-id text files: one sequence per line, ids separated by whitespace. The simplest way to
// hand a model exact inputs (parity checks, `switchyard eval --tokens`).
#pragma once

#include <torch/torch.h>

#include <string>

namespace switchyard {

/// Sequences right-padded with id 0 to the longest line; attention_mask is 1 on real tokens.
struct TokenBatch {
  torch::Tensor input_ids;       ///< [N, S] int64
  torch::Tensor attention_mask;  ///< [N, S] int64
};

/// Reads FILE. Blank lines are skipped. Throws ConfigError (bad input) naming file:line for a
/// malformed id, and
/// for a file with no sequences.
TokenBatch read_token_lines(const std::string& path);

}  // namespace switchyard
