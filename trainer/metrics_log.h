// A run's metrics.jsonl: one JSON object per line. Loss records (step, rank, loss, lr,
// tokens_per_s, ...) and load records (step, rank, layer, expert_tokens, max_over_mean,
// entropy, aux_loss, ...) for every rank, gathered to rank 0, which alone writes the file, so
// lines from several processes never interleave. Rank 0 also writes the same numbers as
// TensorBoard events next to it (trainer/tensorboard_writer.h).
#pragma once

#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>
#include <string>

#include "parallel/placement.h"
#include "parallel/process_groups.h"
#include "trainer/live_placement.h"
#include "trainer/tensorboard_writer.h"
#include "trainer/trainer.h"

namespace switchyard {

/// One validation pass as the log records it.
struct ValidationResult {
  std::string phase;    ///< "start", "step 40", "end", ...
  double loss = 0;      ///< mean cross-entropy per target
  int64_t targets = 0;  ///< predicted tokens (causal LM) or sequences (classification)
  bool classification = false;
  double perplexity = 0;              ///< causal LM
  double accuracy = 0, macro_f1 = 0;  ///< classification
};

/// JSON has no NaN or infinity: a non-finite number is written as null (nlohmann's rule), and
/// record_number() reads null back as NaN.
double record_number(const nlohmann::json& record, const std::string& key);

///   usage: MetricsLog log(run_dir + "/metrics.jsonl", groups);
///          log.write(trainer.step(batches), seconds);   // collective
class MetricsLog {
 public:
  /// Appends when the file exists (a resumed run continues its log). With `tensorboard`, rank 0
  /// also starts a new events file in the same folder (a resumed run adds one more), with per
  /// step: train/{loss,task_loss,router_loss,lr,grad_norm,tokens_per_s (all ranks),
  /// accuracy (classification)} and per MoE
  /// layer l: load/layer<l>/{max_over_mean (over all experts), entropy, aux_loss, z_loss,
  /// drop_rate (means over ranks), rank<r>_tokens, rank_max_over_mean (max / mean of the
  /// ranks' tokens: the measured imbalance that placement acts on)} and the histogram
  /// load/layer<l>/expert_tokens (tokens each expert received, over all experts). `placements` (one
  /// per MoE layer; empty: contiguous) say which experts each rank's slots hold: load records list
  /// them ("experts").
  MetricsLog(const std::string& path, ProcessGroups groups, bool tensorboard = true,
             std::vector<LayerPlacement> placements = {});

  /// Collective over the world: every rank's loss record and per-layer load records, in rank
  /// order. `seconds` is this rank's wall time for the step. Returns the lines written (rank 0)
  /// or that would have been (other ranks get an empty vector).
  std::vector<std::string> write(const StepMetrics& m, double seconds);

  /// Rank 0 appends a validation record {"kind": "valid", step, rank 0, phase, loss, then ppl
  /// and tokens (causal LM) or accuracy, macro_f1 and sequences (classification)}; other ranks
  /// do nothing. Returns the line.
  std::string write_validation(int64_t step, const ValidationResult& v);

  /// Rank 0 appends {"kind": "skip", step, rank (the rank named, -1 when none), reason,
  /// consecutive} for a skipped step (StepMetrics::skipped) and the TensorBoard scalar
  /// train/skipped_in_a_row; other ranks do nothing. Not collective. Returns the line.
  std::string write_skip(const StepMetrics& m, int consecutive);

  /// Rank 0 appends {"kind": "placement", step, rank 0, steps: [first, last] (the loads it
  /// balanced), layers: [{layer, before, after (predicted rank max/mean), slots_changed,
  /// experts (per rank, its slots' experts)}]} and the TensorBoard scalars
  /// placement/layer<l>/{predicted_before,predicted_after}; every rank's load records list the
  /// new placement's experts from the next step on. Not collective. Returns the line (rank 0).
  std::string write_placement(const PlacementChange& change);

 private:
  std::string path_;
  ProcessGroups groups_;
  std::vector<LayerPlacement> placements_;
  std::ofstream out_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  ///< rank 0, when enabled
};

}  // namespace switchyard
