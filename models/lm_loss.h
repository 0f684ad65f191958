// Cross-entropy over a large vocabulary computed a chunk of rows at a time, so a 151936-word
// vocabulary never has fp32 copies of all logits or of their gradient, and the LM head fused
// with it, which holds no more than a chunk of the logits themselves: the training loss of
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

/// Rows of logits the loss, and the fused head, take at a time: `asked` where positive (the
/// chunk_rows arguments below), else those of a V-wide fp32 chunk within loss_chunk_bytes (at
/// least one).
int64_t loss_chunk_rows(int64_t V, bool on_gpu, int64_t asked = 0);

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

/// How linear_cross_entropy_sum applies the head.
enum class HeadLossKernel {
  /// kFused on a GPU with a frozen weight, else kLogits. On the CPU, in fp32, the fused head's
  /// GEMMs of 16 MiB chunks each read the whole weight: twice the unfused time at 128 tokens
  /// (`switchyard bench head`, bench/RESULTS.md); in bf16 they are torch's CPU bf16 GEMMs, whose
  /// speed depends on the CPU's bf16 instructions (what cpu_linear avoids).
  kAuto,
  /// One chunk of rows at a time: the chunk's logits (in the GEMM's dtype, beside the loss's fp32
  /// chunk) are all that exists of them, and the input's gradient [N, H] is taken in forward
  /// while they do, so neither the logits [N, V] nor their gradient is ever held (2 x 1.2 GB at
  /// 4096 tokens of Qwen's vocabulary in bf16). The same GEMMs as kLogits with a frozen weight,
  /// no recomputation. Needs a frozen weight: a trained one's gradient sums over all rows, and
  /// chunked each chunk would write all of [V, H].
  kFused,
  /// The head's logits [N, V] (bf16 on a CPU without native bf16 GEMMs through cpu_linear), then
  /// cross_entropy_sum.
  kLogits,
};

/// The kernel `kernel` means on `device`: kAuto resolved (a weight trains when it requires grad
/// and grad mode is on); the others as given.
HeadLossKernel resolve_head_loss_kernel(HeadLossKernel kernel, torch::Device device,
                                        bool weight_trains);

/// Bytes `kernel` (kFused or kLogits) allocates beyond its inputs at its peak, forward and
/// backward, for N rows of hidden size H over a vocabulary of V, the logits `dtype_bytes` wide,
/// on a GPU or a CPU: what switchyard plan counts for the head and loss (a cast of the weight
/// under autocast aside). kLogits: the logits and their gradient, and the loss's fp32 chunk C
/// (two on a CPU for 2-byte logits, which it converts into a temporary first). kFused: a chunk's
/// logits beside C (and that conversion) and the input's gradient, or in backward that
/// gradient and its scaled copy. chunk_rows as for linear_cross_entropy_sum.
double head_loss_bytes(HeadLossKernel kernel, int64_t N, int64_t H, int64_t V, int64_t dtype_bytes,
                       bool on_gpu, int64_t chunk_rows = 0);

/// cross_entropy_sum(hidden @ weight^T, targets): an LM head without bias and its loss, in the
/// autocast dtype where autocast is on. hidden [N, H], weight [V, H], targets [N] (negative: no
/// target). chunk_rows as for cross_entropy_sum.
///   usage: auto loss_sum = linear_cross_entropy_sum(h.view({-1, H}), lm_head->weight, t.view(-1));
torch::Tensor linear_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets,
                                       HeadLossKernel kernel = HeadLossKernel::kAuto,
                                       int64_t chunk_rows = 0);

/// Mean over B * (S - 1) positions of -log softmax(logits[b, s])[input_ids[b, s + 1]], what
/// cross_entropy(logits[:, :-1].float(), input_ids[:, 1:]) gives. logits [B, S, V],
/// input_ids [B, S] int64.
///   usage: auto loss = next_token_loss(model->forward(ids).logits, ids);
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                              int64_t chunk_rows = 0);

}  // namespace switchyard
