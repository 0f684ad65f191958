#include "trainer/metrics_log.h"

#include <sys/resource.h>
#include <torch/cuda.h>
#ifdef SWITCHYARD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/errors.h"
#include "common/phase_clock.h"

namespace switchyard {

using json = nlohmann::json;

namespace {

// A run killed while writing a record leaves a line without its newline; a resumed run would
// glue its first record onto it. Cut the file back to its last complete line.
void drop_torn_last_line(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size == 0) return;
  std::ifstream in(path, std::ios::binary);
  in.seekg(std::streamoff(size - 1));
  if (in.get() == '\n') return;  // the common case: only the last byte is read
  in.seekg(0);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto last = text.rfind('\n');
  std::filesystem::resize_file(path, last == std::string::npos ? 0 : last + 1);
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, ProcessGroups groups, bool tensorboard,
                       std::vector<LayerPlacement> placements)
    : path_(path), groups_(std::move(groups)), placements_(std::move(placements)) {
  if (groups_.world->rank() != 0) return;
  drop_torn_last_line(path_);
  out_.open(path_, std::ios::app);
  SY_CHECK(out_.good(), path_, ": cannot open for writing");
  if (tensorboard) {
    const auto dir = std::filesystem::path(path_).parent_path();
    tensorboard_ = std::make_unique<TensorBoardWriter>(dir.empty() ? "." : dir.string());
  }
}

namespace {

// This rank's numbers as one flat row of doubles, so one all_gather carries them all:
// [tokens_per_s, grad_norm, peak_rss_gb, peak_gpu_gb, host_reads, seconds per StepPhase (zeros
//  unless profiled), then per layer: max_over_mean, token_entropy, load_entropy, drop_rate,
//  aux_loss, z_loss, received rows per local expert...].
constexpr int kPhaseAt = 5;  // where the seconds per StepPhase start
constexpr int kPhases = int(StepPhase::kCount);
constexpr int kRankScalars = kPhaseAt + kPhases;
constexpr int kPerLayerScalars = 6;

// The process's peak resident memory so far, in 1e9 bytes (what `switchyard plan` predicts).
double peak_rss_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) * 1024.0 / 1e9;  // ru_maxrss is in KiB on Linux
}

// The most GPU memory this rank's caching allocator has handed out, in 1e9 bytes (tensors, not
// the allocator's cached blocks or the CUDA context); 0 without a GPU.
double peak_gpu_gb() {
#ifdef SWITCHYARD_WITH_CUDA
  if (!torch::cuda::is_available()) return 0.0;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  return double(stats.allocated_bytes[0].peak) / 1e9;  // [0]: all pools together
#else
  return 0.0;
#endif
}

std::vector<double> flatten(const StepMetrics& m, double seconds) {
  std::vector<double> row{seconds > 0 ? double(m.tokens) / seconds : 0.0, m.grad_norm,
                          peak_rss_gb(), peak_gpu_gb(), double(m.host_reads)};
  for (int p = 0; p < kPhases; ++p)
    row.push_back(m.phase_seconds.empty() ? 0.0 : m.phase_seconds[size_t(p)]);
  for (size_t l = 0; l < m.layer_stats.size(); ++l) {
    const auto& s = m.layer_stats[l];
    row.insert(row.end(), {s.max_over_mean, s.token_entropy, s.load_entropy, s.drop_rate,
                           m.layer_aux_loss[l], m.layer_z_loss[l]});
    for (auto t : m.tokens_per_local_expert[l]) row.push_back(double(t));
  }
  return row;
}

// TensorBoard's view of one step, taken from the records metrics.jsonl gets, so the two agree:
// run-wide numbers once, and per layer the load over all experts (ranks of different
// data-parallel groups hold the same experts: their counts add up) and each rank's intake.
void add_summary(TensorBoardWriter& tb, const std::vector<json>& records) {
  const json* first = nullptr;
  double tokens_per_s = 0;
  struct Layer {
    std::vector<double> experts, rank_tokens;
    double entropy = 0, aux = 0, z = 0, drop = 0;
    int ranks = 0;
  };
  std::vector<Layer> layers;
  for (const auto& r : records) {
    if (r["kind"] == "loss") {
      if (!first) first = &r;
      tokens_per_s += record_number(r, "tokens_per_s");
      continue;
    }
    const auto l = r["layer"].get<size_t>();
    if (layers.size() <= l) layers.resize(l + 1);
    Layer& layer = layers[l];
    const auto counts = r["expert_tokens"].get<std::vector<int64_t>>();
    for (size_t s = 0; s < counts.size(); ++s) {  // a replicated expert's copies add up
      const auto e = r["experts"][s].get<size_t>();
      if (layer.experts.size() <= e) layer.experts.resize(e + 1);
      layer.experts[e] += double(counts[s]);
    }
    layer.entropy += record_number(r, "entropy");
    layer.aux += record_number(r, "aux_loss");
    layer.z += record_number(r, "z_loss");
    layer.drop += record_number(r, "drop_rate");
    layer.ranks += 1;
    layer.rank_tokens.push_back(record_number(r, "rank_tokens"));
    tb.scalar("load/layer" + std::to_string(l) + "/rank" + std::to_string(r["rank"].get<int>()) +
                  "_tokens",
              record_number(r, "rank_tokens"));
  }
  for (const char* key : {"loss", "task_loss", "router_loss", "lr", "grad_norm", "accuracy"})
    if (first->contains(key)) tb.scalar(std::string("train/") + key, record_number(*first, key));
  tb.scalar("train/tokens_per_s", tokens_per_s);
  for (size_t l = 0; l < layers.size(); ++l) {
    const Layer& layer = layers[l];
    const std::string tag = "load/layer" + std::to_string(l) + "/";
    double total = 0, peak = 0;
    for (double t : layer.experts) total += t, peak = std::max(peak, t);
    const double mean = total / double(layer.experts.size());
    tb.scalar(tag + "max_over_mean", mean > 0 ? peak / mean : 0.0);
    tb.scalar(tag + "rank_max_over_mean", max_over_mean(layer.rank_tokens));
    tb.scalar(tag + "entropy", layer.entropy / layer.ranks);
    tb.scalar(tag + "aux_loss", layer.aux / layer.ranks);
    tb.scalar(tag + "z_loss", layer.z / layer.ranks);
    tb.scalar(tag + "drop_rate", layer.drop / layer.ranks);
    tb.histogram(tag + "expert_tokens", layer.experts);
  }
}

}  // namespace

std::vector<std::string> MetricsLog::write(const StepMetrics& m, double seconds) {
  const auto row = flatten(m, seconds);
  auto mine = torch::tensor(row, torch::kDouble).unsqueeze(0);
  auto all = groups_.world->all_gather(mine).cpu();  // [world, row]
  if (groups_.world->rank() != 0) return {};
  std::vector<json> records;
  const int world = groups_.world->size();
  for (int r = 0; r < world; ++r) {
    auto v = all[r];
    json loss = {{"kind", "loss"},
                 {"step", m.step},
                 {"rank", r},
                 {"loss", m.loss},
                 {"task_loss", m.task_loss},
                 {"router_loss", m.router_loss},
                 {"lr", m.lr},
                 {"grad_norm", v[1].item<double>()},
                 {"tokens_per_s", v[0].item<double>()},
                 {"peak_rss_gb", v[2].item<double>()},
                 {"peak_gpu_gb", v[3].item<double>()},
                 {"host_reads", v[4].item<int64_t>()}};
    if (m.accuracy >= 0) loss["accuracy"] = m.accuracy;
    if (!m.phase_seconds.empty()) {  // a profiled step: its tokens_per_s is a little low
      loss["profiled"] = true;
      json phases = json::object();
      for (int p = 0; p < kPhases; ++p)
        phases[step_phase_name(StepPhase(p))] = 1e3 * v[kPhaseAt + p].item<double>();
      loss["phase_ms"] = std::move(phases);
    }
    if (m.distilling) {
      loss["distill_kl"] = m.distill_kl;
      loss["topk_agreement"] = m.topk_agreement;
    }
    records.push_back(std::move(loss));
    int64_t at = kRankScalars;
    for (size_t l = 0; l < m.layer_stats.size(); ++l) {
      const int64_t local_experts = int64_t(m.tokens_per_local_expert[l].size());
      std::vector<int64_t> received(local_experts);
      for (int64_t e = 0; e < local_experts; ++e)
        received[e] = int64_t(v[at + kPerLayerScalars + e].item<double>());
      double total = 0, peak = 0;
      for (auto t : received) total += double(t), peak = std::max(peak, double(t));
      // The expert each slot holds; the contiguous placement also keeps its older first_expert.
      const int ep_rank = r % groups_.ep_size();
      std::vector<int64_t> experts;
      if (l < placements_.size()) {
        experts = placements_[l].slots[size_t(ep_rank)];
      } else {
        for (int64_t e = 0; e < local_experts; ++e) experts.push_back(ep_rank * local_experts + e);
      }
      json load = {
          {"kind", "load"},
          {"step", m.step},
          {"rank", r},
          {"layer", l},
          {"experts", experts},
          {"expert_tokens", received},
          {"rank_tokens", int64_t(total)},
          {"max_over_mean_local", total > 0 ? peak / (total / double(local_experts)) : 0.0},
          {"max_over_mean", v[at].item<double>()},
          {"entropy", v[at + 1].item<double>()},
          {"load_entropy", v[at + 2].item<double>()},
          {"drop_rate", v[at + 3].item<double>()},
          {"aux_loss", v[at + 4].item<double>()},
          {"z_loss", v[at + 5].item<double>()}};
      bool consecutive = true;
      for (size_t s = 1; s < experts.size(); ++s)
        consecutive &= experts[s] == experts[0] + int64_t(s);
      if (consecutive && experts.front() == ep_rank * local_experts)
        load["first_expert"] = experts.front();
      records.push_back(std::move(load));
      at += kPerLayerScalars + local_experts;
    }
  }
  std::vector<std::string> lines;
  for (const auto& record : records) out_ << lines.emplace_back(record.dump()) << '\n';
  out_.flush();
  SY_CHECK(out_.good(), path_, ": write failed");
  if (tensorboard_) {
    add_summary(*tensorboard_, records);
    tensorboard_->write_step(m.step);
  }
  return lines;
}

std::string MetricsLog::write_placement(const PlacementChange& change) {
  placements_ = change.placements;
  if (groups_.world->rank() != 0) return "";
  json layers = json::array();
  for (size_t l = 0; l < change.layers.size(); ++l) {
    const auto& layer = change.layers[l];
    layers.push_back({{"layer", l},
                      {"before", layer.before},
                      {"after", layer.after},
                      {"slots_changed", layer.slots_changed},
                      {"experts", change.placements[l].slots}});
    if (tensorboard_) {
      const std::string tag = "placement/layer" + std::to_string(l) + "/";
      tensorboard_->scalar(tag + "predicted_before", layer.before);
      tensorboard_->scalar(tag + "predicted_after", layer.after);
    }
  }
  const json record = {{"kind", "placement"},
                       {"step", change.step},
                       {"rank", 0},
                       {"steps", {change.first_step, change.step}},
                       {"layers", layers}};
  const std::string line = record.dump();
  out_ << line << '\n';
  out_.flush();
  SY_CHECK(out_.good(), path_, ": write failed");
  if (tensorboard_) tensorboard_->write_step(change.step);
  return line;
}

double record_number(const nlohmann::json& record, const std::string& key) {
  const auto& value = record.at(key);
  return value.is_null() ? std::nan("") : value.get<double>();
}

std::string MetricsLog::write_skip(const StepMetrics& m, int consecutive) {
  if (groups_.world->rank() != 0) return {};
  const json record = {{"kind", "skip"},
                       {"step", m.step},
                       {"rank", m.skip_rank},
                       {"reason", m.skip_reason},
                       {"consecutive", consecutive}};
  const std::string line = record.dump();
  out_ << line << '\n';
  out_.flush();
  SY_CHECK(out_.good(), path_, ": write failed");
  if (tensorboard_) {
    tensorboard_->scalar("train/skipped_in_a_row", consecutive);
    tensorboard_->write_step(m.step);
  }
  return line;
}

std::string MetricsLog::write_validation(int64_t step, const ValidationResult& v) {
  if (groups_.world->rank() != 0) return {};
  json record = {
      {"kind", "valid"}, {"step", step}, {"rank", 0}, {"phase", v.phase}, {"loss", v.loss}};
  if (v.classification) {
    record["accuracy"] = v.accuracy;
    record["macro_f1"] = v.macro_f1;
    record["sequences"] = v.targets;
  } else {
    record["ppl"] = v.perplexity;
    record["tokens"] = v.targets;
  }
  const std::string line = record.dump();
  out_ << line << '\n';
  out_.flush();
  SY_CHECK(out_.good(), path_, ": write failed");
  if (tensorboard_) {
    tensorboard_->scalar("valid/loss", v.loss);
    if (v.classification) {
      tensorboard_->scalar("valid/accuracy", v.accuracy);
      tensorboard_->scalar("valid/macro_f1", v.macro_f1);
    } else {
      tensorboard_->scalar("valid/ppl", v.perplexity);
    }
    tensorboard_->write_step(step);
  }
  return line;
}

}  // namespace switchyard
