#include "trainer/expert_load_history.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/errors.h"

namespace switchyard {
namespace {

// One rank's load record of one layer at one step.
struct LoadRecord {
  std::vector<int64_t> experts, counts;  ///< the expert of each slot, and its assignments
  int64_t rank_tokens = -1;              ///< -1: not logged (older records)
};

}  // namespace

ExpertLoadHistory read_expert_loads(const std::string& run_dir_or_file, int64_t first_step,
                                    int64_t last_step) {
  namespace fs = std::filesystem;
  const std::string path = fs::is_directory(run_dir_or_file)
                               ? (fs::path(run_dir_or_file) / "metrics.jsonl").string()
                               : run_dir_or_file;
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open (expected a run folder or its metrics.jsonl)");
  // (step, rank, layer) -> its record; a later line replaces an earlier one.
  std::map<std::tuple<int64_t, int64_t, int64_t>, LoadRecord> loads;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    const std::string at = path + ":" + std::to_string(number);
    nlohmann::json r;
    try {
      r = nlohmann::json::parse(line);
      if (r.value("kind", "") != "load") continue;
      const int64_t step = r.at("step").get<int64_t>();
      if (step < first_step || (last_step >= 0 && step > last_step)) continue;
      auto counts = r.at("expert_tokens").get<std::vector<int64_t>>();
      // The expert of each slot: "experts", or (older logs) first_expert onwards.
      std::vector<int64_t> experts;
      if (r.contains("experts")) {
        experts = r.at("experts").get<std::vector<int64_t>>();
      } else {
        for (size_t s = 0; s < counts.size(); ++s)
          experts.push_back(r.at("first_expert").get<int64_t>() + int64_t(s));
      }
      const auto layer = r.at("layer").get<int64_t>();
      if (experts.size() != counts.size())
        throw ConfigError(at + ": experts and expert_tokens differ in length");
      for (int64_t e : experts)
        if (e < 0 || layer < 0) throw ConfigError(at + ": a negative expert or layer");
      loads[{step, r.at("rank").get<int64_t>(), layer}] = {std::move(experts), std::move(counts),
                                                           r.value("rank_tokens", int64_t(-1))};
    } catch (const nlohmann::json::exception& e) {
      // A torn last line (a killed run) is not a load record; anything else is a broken file.
      if (in.peek() == std::char_traits<char>::eof()) continue;
      throw ConfigError(at + ": not a metrics record (" + std::string(e.what()) + ")");
    }
  }
  if (loads.empty())
    throw ConfigError(
        detail::concat(path, ": no load records for steps ", first_step, " to ",
                       last_step < 0 ? std::string("the end") : std::to_string(last_step)));
  ExpertLoadHistory h;
  std::set<int64_t> steps;
  int64_t layers = 0, experts = 0;
  for (const auto& [key, value] : loads) {
    layers = std::max(layers, std::get<2>(key) + 1);
    for (int64_t e : value.experts) experts = std::max(experts, e + 1);
    steps.insert(std::get<0>(key));
  }
  h.per_layer.assign(size_t(layers), std::vector<double>(size_t(experts), 0.0));
  // Per layer: the records' shares of slots with rows, summed, and how many records there were.
  std::vector<double> active(size_t(layers), 0.0), records(size_t(layers), 0.0);
  for (const auto& [key, value] : loads) {
    const auto l = size_t(std::get<2>(key));
    int64_t busy = 0;
    for (size_t i = 0; i < value.counts.size(); ++i) {  // a replicated expert's copies add up
      h.per_layer[l][size_t(value.experts[i])] += double(value.counts[i]);
      busy += value.counts[i] > 0 ? 1 : 0;
    }
    if (value.counts.empty()) continue;
    active[l] += double(busy) / double(value.counts.size());
    records[l] += 1;
  }
  for (size_t l = 0; l < active.size(); ++l)
    h.active_share.push_back(records[l] > 0 ? active[l] / records[l] : 1.0);
  h.first_step = *steps.begin();
  h.last_step = *steps.rbegin();
  h.steps = int64_t(steps.size());
  // EP ranks hold different experts; data-parallel copies the same (metrics_log.cpp logs world
  // rank r as EP rank r % EP).
  std::set<std::vector<int64_t>> held;
  for (const auto& [key, value] : loads)
    if (std::get<0>(key) == h.first_step && std::get<2>(key) == 0) held.insert(value.experts);
  h.expert_parallel = int64_t(held.size());
  const bool logged = std::all_of(loads.begin(), loads.end(),
                                  [](const auto& item) { return item.second.rank_tokens >= 0; });
  if (logged) {
    h.per_ep_rank.assign(size_t(layers), std::vector<double>(size_t(h.expert_parallel), 0.0));
    for (const auto& [key, value] : loads)
      h.per_ep_rank[size_t(std::get<2>(key))][size_t(std::get<1>(key) % h.expert_parallel)] +=
          double(value.rank_tokens);
  }
  return h;
}

}  // namespace switchyard
