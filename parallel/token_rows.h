// Moving hidden states between token order and assignment rows, without atomics. Dispatch copies
// each token's row to its k assignment rows; combine sums each token's k weighted rows back. The
// two are each other's adjoint, so each one's backward is the other: gradients flow by gathers
// alone. The scatter-add (index_add) they replace takes atomic adds on a GPU, k of them into each
// token's row, in an order that changes from run to run, so bf16 results and gradients did too.
// Here every token sums its rows in one reduction (in fp32 for bf16 rows, rounded once): the
// bits the CPU's index_add gave, on every device.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace switchyard {

/// Which token each assignment row came from, and the other way round.
struct TokenRows {
  int64_t num_tokens = 0;
  torch::Tensor token_of_row;  ///< [R] the token of each row
  /// [k, T] each token's rows, ascending down each column: every row once. Undefined when some
  /// assignments were dropped (capacity), whose tokens have fewer than k rows: then the two
  /// moves below fall back to index_select and index_add.
  torch::Tensor rows_of_token;

  /// `order` [T * k]: the assignment (t * k + choice) each row holds, its first `kept` entries
  /// the rows (the stable sort of assignments by slot, dropped ones last).
  static TokenRows from_order(const torch::Tensor& order, int64_t k, int64_t kept);
};

/// hidden [T, H] -> [R, H]: row r is hidden[token_of_row[r]]. Backward sums each token's rows.
torch::Tensor copy_tokens_to_rows(const torch::Tensor& hidden, const TokenRows& map);

/// rows [R, H] -> [T, H]: each token's rows summed (bf16 in fp32), zero for a token without
/// rows. Backward copies each token's gradient to its rows.
torch::Tensor sum_rows_to_tokens(const torch::Tensor& rows, const TokenRows& map);

}  // namespace switchyard
