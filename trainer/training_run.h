// One training run, what `switchyard train` drives: the model for the task (fine-tuning a
// checkpoint or training from scratch), its data, router distillation's teachers, the step loop
// with validation, checkpoints every train.checkpoint_interval steps and at the end, --resume,
// --stop-after and the export. Single-process or under mpirun with experts sharded across
// ranks; every rank runs the same calls.
// Every rank reads its own share of each global batch; rank 0 prints progress and the load
// table and writes RUN_DIR/metrics.jsonl; every rank writes RUN_DIR/rank<r>.log.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "data/batch_sampler.h"
#include "eval/eval_report.h"
#include "models/load_model.h"
#include "parallel/compute_device.h"
#include "trainer/checkpoint.h"
#include "trainer/live_placement.h"
#include "trainer/metrics_log.h"
#include "trainer/train_progress.h"
#include "trainer/trainer.h"
#include "trainer/training_data.h"

namespace switchyard {

/// What the command line adds to the run config.
struct TrainingRunOptions {
  std::string run_dir;            ///< empty: logging.run_dir
  std::string dtype = "float32";  ///< checkpoint, float32, bfloat16 or float16
  bool resume = false;            ///< continue from the run folder's newest checkpoint
  int64_t stop_after = 0;         ///< checkpoint and stop after this many steps; 0: run on
  std::string export_hf;          ///< at the end, also write the hub layout here (new folder)
  std::ostream* out = nullptr;    ///< rank 0's progress and messages; nullptr: std::cout
  bool redraw_progress = false;   ///< redraw the progress line in place (a terminal)
  /// Resume fingerprint items allowed to differ from the checkpoint's (resume_fingerprint.h).
  std::vector<std::string> allow_resume_changes;
};

/// How a run ended.
struct TrainingRunResult {
  int64_t step = 0;            ///< optimizer steps done, over every invocation of the run
  bool stopped_early = false;  ///< by stop_after
  std::string checkpoint;      ///< the last checkpoint written
  /// The last validation (the end's, when data.valid_path is set).
  std::optional<EvalReport> validation;
};

///   usage: TrainingRun run(config, {.run_dir = "runs/a", .resume = true});
///          TrainingRunResult r = run.run();
class TrainingRun {
 public:
  /// Checks the inputs (one ConfigError per problem, before any work), then reads the data,
  /// loads or builds the model, restores the newest checkpoint when resuming, and opens the
  /// run folder's logs. Collective over the world.
  TrainingRun(const RunConfig& config, TrainingRunOptions options);
  ~TrainingRun();

  /// Trains to train.steps (or stop_after steps of this invocation), validating and saving
  /// checkpoints as the config asks. Collective.
  TrainingRunResult run();

  const LoadedModel& model() const { return model_; }
  Trainer& trainer() { return *trainer_; }
  const std::string& run_dir() const { return options_.run_dir; }

 private:
  void validate(const std::string& phase);
  /// Logs a skipped step; throws Error after train.max_skipped_steps in a row.
  void skipped_in_a_row(const StepMetrics& m);
  std::string checkpoint();
  /// Whether the host must see every pending step's numbers once step `next` is launched: a
  /// log line, a checkpoint, a validation, the end of distillation, a re-placement,
  /// --stop-after, the last step, or a profiled step (read alone, so its seconds are its own).
  bool must_read_after(int64_t next, int64_t first_step) const;
  /// What the loop does with one step's metrics once read: the skip guard, the logs, live
  /// re-placement, checkpoints, progress and validation. `seconds`: its share of the wall time.
  void finish_step(const StepMetrics& m, double seconds, TrainingRunResult& result);
  /// Live re-placement after step `step`: agree, move, log, print.
  void replace_experts(int64_t step);
  /// A resume under live re-placement continues with the checkpoint's placement (when it fits
  /// this EP size) and its window of loads.
  void resume_live_placement(const CheckpointState& state, const std::string& folder);
  void print(const std::string& line);  ///< rank 0 only

  RunConfig config_;
  TrainingRunOptions options_;
  const ComputeWorld& compute_;
  std::unique_ptr<TrainingData> data_;
  LoadedModel model_;
  TaskModel task_;
  std::unique_ptr<BatchSampler> sampler_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<LivePlacement> live_;  ///< parallel.rebalance_interval > 0
  std::unique_ptr<std::ofstream> rank_log_;
  config::ResumeFingerprint fingerprint_;  ///< what this run trains on, saved with checkpoints
  int64_t last_saved_step_ = -1;           ///< the step of last_saved_ (or of the resumed one)
  std::string last_saved_;                 ///< the folder this invocation last wrote
  std::unique_ptr<TrainProgress> progress_;
  std::optional<EvalReport> last_validation_;
  int consecutive_skips_ = 0;
};

/// Whether the progress line is redrawn in place for `mode` (auto, bar or lines): mpirun hands
/// rank 0 a pseudo-terminal even when its own output goes to a file, so under a launcher "auto"
/// prints whole lines. Throws ConfigError for another mode.
bool redraw_progress(const std::string& mode);

}  // namespace switchyard
