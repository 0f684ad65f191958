// The causal language-model loss (next-token cross-entropy) computed a chunk of rows at a time,
// so a 151936-word vocabulary never has fp32 copies of all logits or of their gradient.
#pragma once

#include <torch/torch.h>

namespace switchyard {

/// Mean over B * (S - 1) positions of -log softmax(logits[b, s])[input_ids[b, s + 1]], what
/// cross_entropy(logits[:, :-1].float(), input_ids[:, 1:]) gives, in fp32 whatever the logits'
/// dtype. logits [B, S, V], input_ids [B, S] int64. Forward keeps one fp32 log-sum-exp per
/// row; backward writes the logits' gradient in their dtype, chunk by chunk. chunk_rows: rows
/// per fp32 chunk (0: as many as fit in 16 MB; tests pass small values).
///   usage: auto loss = next_token_loss(model->forward(ids).logits, ids);
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                              int64_t chunk_rows = 0);

}  // namespace switchyard
