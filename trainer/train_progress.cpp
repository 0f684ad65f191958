#include "trainer/train_progress.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "common/table.h"
#include "trainer/metrics_log.h"

namespace switchyard {

TrainProgress::TrainProgress(std::ostream& out, int64_t first_step, int64_t last_step,
                             bool terminal)
    : out_(out), first_(first_step), last_(last_step), terminal_(terminal) {}

namespace {

std::string duration(double seconds) {
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(s / 3600), long(s / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  return buf;
}

}  // namespace

std::string TrainProgress::line(const StepMetrics& m, double tokens_per_s) const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = m.step - first_, total = std::max<int64_t>(1, last_ - first_);
  const double eta = done > 0 ? elapsed / double(done) * double(last_ - m.step) : 0.0;
  constexpr int kWidth = 20;
  const int filled = int(kWidth * std::min<int64_t>(done, total) / total);
  char phase[64] = "";
  if (m.distilling)
    std::snprintf(phase, sizeof phase, " (distill KL, top-k agree %.2f)", m.topk_agreement);
  char buf[320];
  std::snprintf(
      buf, sizeof buf, "[%s%s] step %ld/%ld | loss %.4f%s | lr %.2e | %.0f tok/s | ETA %s",
      std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(), long(m.step),
      long(last_), m.loss, phase, m.lr, tokens_per_s, duration(eta).c_str());
  return buf;
}

void TrainProgress::update(const StepMetrics& m, double tokens_per_s) {
  if (terminal_) out_ << "\r" << line(m, tokens_per_s) << std::flush;
}

void TrainProgress::log(const StepMetrics& m, double tokens_per_s,
                        const std::vector<std::string>& records) {
  out_ << (terminal_ ? "\r" : "") << line(m, tokens_per_s) << "\n";
  // Per rank, summed over MoE layers: rows its experts received and the worst layer's
  // max/mean over its local experts.
  std::map<int64_t, std::pair<int64_t, double>> per_rank;
  double aux = 0;
  int64_t layers = 0;
  for (const auto& text : records) {
    auto r = nlohmann::json::parse(text);
    if (r["kind"] != "load") continue;
    auto& [tokens, worst] = per_rank[r["rank"].get<int64_t>()];
    tokens += r["rank_tokens"].get<int64_t>();
    worst = std::max(worst, record_number(r, "max_over_mean_local"));
    if (r["rank"] == 0) aux += record_number(r, "aux_loss"), ++layers;
  }
  if (per_rank.empty()) return;
  Table table({"rank", "rows_received", "worst_layer_max/mean"});
  for (const auto& [rank, v] : per_rank) table.add({rank, v.first, Cell(v.second, 2)});
  table.print(out_);
  out_ << "mean aux loss over " << layers
       << " MoE layers (rank 0): " << aux / std::max<int64_t>(1, layers) << "\n";
}

void TrainProgress::message(const std::string& text) {
  // On a terminal: back to the start of the bar's line and clear it first.
  out_ << (terminal_ ? "\r\033[K" : "") << text << "\n" << std::flush;
}

void TrainProgress::finish() {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  out_ << (terminal_ ? "\n" : "") << "training finished in " << duration(elapsed) << "\n";
}

}  // namespace switchyard
