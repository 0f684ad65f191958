// What rank 0 prints while training: a progress line (step, loss, tokens/s, ETA), redrawn in
// place on a terminal and printed once per log interval otherwise, and a compact per-rank load
// table from the load records of metrics.jsonl.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "trainer/trainer.h"

namespace switchyard {

class TrainProgress {
 public:
  TrainProgress(std::ostream& out, int64_t first_step, int64_t last_step, bool terminal);

  /// After every step: redraws the line (terminal) or does nothing between log intervals.
  void update(const StepMetrics& m, double world_tokens_per_s);
  /// At a log interval: the line for good, then the per-rank load table of `records`
  /// (metrics.jsonl lines of this step).
  void log(const StepMetrics& m, double world_tokens_per_s,
           const std::vector<std::string>& records);
  /// A line of its own (validation results, phase changes) that the bar does not overwrite.
  void message(const std::string& text);
  void finish();

 private:
  std::string line(const StepMetrics& m, double world_tokens_per_s) const;
  std::ostream& out_;
  int64_t first_, last_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace switchyard
