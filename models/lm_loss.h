// Cross-entropy over a large vocabulary computed a chunk of rows at a time, so a 151936-word
// vocabulary never has fp32 copies of all logits or of their gradient: the training loss of
// causal LMs (models/task_model.cpp) and the benches' next-token loss.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace switchyard {

/// Bytes of the one fp32 chunk of logits the loss holds at a time on `device`: 16 MB on a CPU,
/// 256 MB on a GPU, where a 16 MB chunk is ~27 rows of a 151936-word vocabulary and a
/// micro-batch of 4096 tokens would take ~150 rounds of small kernels (switchyard plan counts
/// these bytes in its `logits` column).
int64_t loss_chunk_bytes(bool on_gpu);

/// Sum over the rows r with targets[r] >= 0 of -log softmax(logits[r])[targets[r]], in fp32
/// whatever the logits' dtype: what cross_entropy(logits.float(), targets, sum) gives with
/// negative targets ignored. logits [N, V], targets [N] int64 on the logits' device. Reads
/// nothing back to the host. One fp32 chunk at a time, whatever the logits' dtype and device;
/// forward keeps one log-sum-exp per row, backward writes the logits' gradient in their dtype
/// (zero on rows without a target). chunk_rows: rows per fp32 chunk (0: loss_chunk_bytes of
/// the logits' device; tests pass small values).
///   usage: auto loss_sum = cross_entropy_sum(logits.view({-1, V}), targets.view(-1));
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets,
                                int64_t chunk_rows = 0);

/// Mean over B * (S - 1) positions of -log softmax(logits[b, s])[input_ids[b, s + 1]], what
/// cross_entropy(logits[:, :-1].float(), input_ids[:, 1:]) gives. logits [B, S, V],
/// input_ids [B, S] int64.
///   usage: auto loss = next_token_loss(model->forward(ids).logits, ids);
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                              int64_t chunk_rows = 0);

}  // namespace switchyard
