// Evaluating a causal MoE language model on an evaluation set: perplexity, routing statistics
// per MoE layer and expert, per-rank load and time, router latency, parameter counts.
#pragma once

#include <cstdint>

#include "eval/eval_report.h"
#include "eval/eval_set.h"
#include "models/qwen2_moe.h"
#include "parallel/process_groups.h"

namespace switchyard {

struct CausalLmEvalOptions {
  int64_t batch_size = 4;  ///< rows per forward on each rank
  /// Time router and MoE blocks (waits for the device around them, after one untimed warm-up
  /// forward); off for validation during training, which only needs the perplexity.
  bool time_moe = true;
};

/// Splits the rows over the world (step s, rank r: rows [(s·W + r)·B, +B)), runs them and
/// reduces everything over the world, so the result does not depend on the world or EP size
/// (up to float summation order). Ranks left without rows in the last step run a discarded
/// forward so the EP collectives still line up. Statistics count real tokens only (padding of
/// token lines is excluded). Collective over the world; every rank returns the same report.
///   usage: EvalReport r = evaluate_causal_lm(*model, groups, read_eval_set(path, {}), {});
EvalReport evaluate_causal_lm(Qwen2MoeForCausalLMImpl& model, const ProcessGroups& groups,
                              const EvalSet& set, const CausalLmEvalOptions& options);

/// Parameter counts of a (possibly expert-sharded) model. Collective over the EP group.
ParameterCounts count_parameters(Qwen2MoeForCausalLMImpl& model, const ProcessGroups& groups);

}  // namespace switchyard
