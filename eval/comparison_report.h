// The router comparison report: several `switchyard eval --json` results (and optionally the
// training runs' metrics.jsonl) as one self-contained HTML page and a Markdown twin.
#pragma once

#include <string>
#include <vector>

#include "eval/eval_report.h"

namespace switchyard {

/// A training run's loss curve: the mean over ranks of each logged step's loss.
struct LossCurve {
  std::string name;
  std::vector<double> steps, loss;
};

/// Reads RUN_DIR/metrics.jsonl (or a metrics.jsonl path). Throws ConfigError naming the file
/// and line for a line that is not JSON, and for a log without loss records.
LossCurve read_loss_curve(const std::string& run_dir_or_file);

struct ComparisonRun {
  std::string name;  ///< column/legend label
  EvalReport eval;
};

struct ComparisonReport {
  std::string title = "Switchyard router comparison";
  std::vector<ComparisonRun> runs;
  std::vector<LossCurve> curves;
};

/// Everything in one HTML document: inline CSS and SVG, no scripts, no external resources.
/// Stable hooks for tests and scrapers: table#comparison (one tbody row per run),
/// svg.heatmap per run (layers x experts rect.cell), svg.rank-load, svg#entropy-per-layer,
/// svg#loss-curves (when curves are given).
std::string render_html(const ComparisonReport& report);

/// The same content as Markdown; figures are referenced as the .svg files write_report writes.
std::string render_markdown(const ComparisonReport& report);

/// Writes OUT_DIR/report.html, OUT_DIR/report.md and the figures as OUT_DIR/*.svg, each through
/// a temporary name renamed into place. Creates OUT_DIR. Returns the paths written.
std::vector<std::string> write_report(const ComparisonReport& report, const std::string& out_dir);

}  // namespace switchyard
