// Validation perplexity of a causal LM over a packed token set, shared across the ranks of an
// expert-parallel run: what `switchyard train` reports before, during and after training.
#pragma once

#include <torch/torch.h>

#include "models/qwen2_moe.h"
#include "trainer/packed_sequences.h"

namespace switchyard {

struct LmEvaluation {
  double nll = 0;      ///< mean next-token negative log-likelihood over every evaluated target
  int64_t tokens = 0;  ///< targets evaluated, over all ranks
  double perplexity() const { return std::exp(nll); }
};

struct LmEvaluationOptions {
  int64_t batch_size = 4;   ///< blocks per forward on each rank
  int64_t max_blocks = 0;   ///< the first N blocks of the set; 0: all of them
};

/// Collective over the world. Blocks are dealt to ranks round-robin in order (epoch 0 of `set`,
/// which should be built with shuffle_documents = false so the set is the same every time); a
/// rank that runs out of blocks keeps making forwards on a copy of its last batch whose tokens
/// it does not count, because every forward is an expert-parallel exchange the others wait on.
/// The result is identical on every rank and equals a single-process evaluation of the same
/// blocks (up to float summation order).
///   usage: LmEvaluation v = evaluate_lm(model, groups, valid, {.batch_size = 4});
LmEvaluation evaluate_lm(Qwen2MoeForCausalLM& model, const ProcessGroups& groups,
                         PackedSequences& set, const LmEvaluationOptions& options);

}  // namespace switchyard
