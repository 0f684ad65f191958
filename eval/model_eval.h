// Evaluating an MoE model on an evaluation set of its task: perplexity (causal LM) or accuracy
// and macro-F1 (sequence classification), routing statistics per MoE layer and expert, per-rank
// load and time, router latency, parameter counts.
#pragma once

#include <cstdint>

#include "eval/eval_report.h"
#include "eval/eval_set.h"
#include "models/task_model.h"
#include "parallel/process_groups.h"

namespace switchyard {

struct ModelEvalOptions {
  int64_t batch_size = 4;  ///< rows per forward on each rank
  /// Time router and MoE blocks (waits for the device around them, after one untimed warm-up
  /// forward); off for validation during training, which only needs the perplexity.
  bool time_moe = true;
  /// Forward passes under bf16 autocast on the model's device: the trainer's validation does
  /// what its training steps do (Trainer::bf16_autocast).
  bool bf16_autocast = false;
};

/// Splits the rows over the world (step s, rank r: rows [(s·W + r)·B, +B)), runs them and
/// reduces everything over the world, so the result does not depend on the world or EP size
/// (up to float summation order). Ranks left without rows in the last step run a discarded
/// forward so the EP collectives still line up. Statistics count real tokens only (padding of
/// token lines is excluded). Collective over the world; every rank returns the same report.
/// The set's task must be the model's (EvalSet::classification). Throws ConfigError otherwise.
///   usage: EvalReport r = evaluate_model(TaskModel::causal_lm(model), groups,
///                                        read_eval_set(path, {}), {});
EvalReport evaluate_model(const TaskModel& model, const ProcessGroups& groups, const EvalSet& set,
                          const ModelEvalOptions& options);

/// Parameter counts of a (possibly expert-sharded) model. Collective over the EP group.
ParameterCounts count_parameters(const TaskModel& model, const ProcessGroups& groups);

/// Accuracy and macro-F1 from a confusion matrix [C, C] (rows: true label, columns: predicted).
/// Macro-F1 averages the F1 of every label that occurs as a true or a predicted label
/// (scikit-learn's f1_score(average="macro")); a label never predicted right scores 0.
struct ClassificationScores {
  double accuracy = 0, macro_f1 = 0;
};
ClassificationScores classification_scores(const torch::Tensor& confusion);

}  // namespace switchyard
