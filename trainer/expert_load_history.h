// The per-expert loads a training run measured, read back from its metrics.jsonl: what
// `switchyard placement` balances.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard {

struct ExpertLoadHistory {
  int64_t first_step = 0, last_step = 0;  ///< the steps found within the window asked for
  int64_t steps = 0;                      ///< how many distinct steps were summed
  /// per MoE layer, per global expert: assignments its experts received, summed over the steps
  /// and over the ranks holding it (an expert's data-parallel copies add up).
  std::vector<std::vector<double>> per_layer;
  /// The run's EP size: how many ranks held different experts at its first step.
  int64_t expert_parallel = 0;
  /// per MoE layer, per EP rank: the tokens its experts received ("rank_tokens"), summed over
  /// the steps and over the rank's data-parallel copies, under the placement the run used (its
  /// placement file, replicas, live re-placement). Empty when the records carry no rank_tokens.
  std::vector<std::vector<double>> per_ep_rank;
  /// per MoE layer: the share of a rank's expert slots that received at least one assignment,
  /// averaged over the steps and the ranks. An expert bank skips an expert without rows (no
  /// GEMM, no dequantisation), so this is the share of its experts a step pays for.
  std::vector<double> active_share;
};

/// Reads the "load" records of RUN_DIR/metrics.jsonl (or a metrics.jsonl path) for steps in
/// [first_step, last_step] (last_step < 0: to the end). A step logged twice (a resumed run redoes
/// the steps after its last checkpoint) counts once, with its last record. Throws ConfigError
/// naming the file for a missing file, a malformed record or a window without load records.
ExpertLoadHistory read_expert_loads(const std::string& run_dir_or_file, int64_t first_step = 0,
                                    int64_t last_step = -1);

}  // namespace switchyard
