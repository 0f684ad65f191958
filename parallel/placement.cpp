// Placement files and the balancing of one layer's experts over ranks.
#include "parallel/placement.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "common/errors.h"

namespace switchyard {

using json = nlohmann::json;

std::vector<int64_t> LayerPlacement::copies(int64_t num_experts) const {
  std::vector<int64_t> n(size_t(num_experts), 0);
  for (const auto& rank : slots)
    for (int64_t e : rank)
      if (e >= 0 && e < num_experts) ++n[size_t(e)];
  return n;
}

bool LayerPlacement::replicated() const {
  std::set<int64_t> seen;
  for (const auto& rank : slots)
    for (int64_t e : rank)
      if (!seen.insert(e).second) return true;
  return false;
}

std::vector<int64_t> LayerPlacement::owned(int rank) const {
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  for (int r = 0; r <= rank && r < int(slots.size()); ++r)
    for (int64_t e : slots[size_t(r)]) {
      const bool first = seen.insert(e).second;
      if (r == rank) out.push_back(first ? e : -1);
    }
  return out;
}

Placement Placement::contiguous(int64_t num_layers, int64_t num_experts, int expert_parallel) {
  if (expert_parallel <= 0 || num_experts <= 0 || num_experts % expert_parallel != 0)
    throw ConfigError(detail::concat("placement: EP ", expert_parallel,
                                     " must divide the number of experts (", num_experts, ")"));
  Placement p;
  p.num_experts = num_experts;
  p.expert_parallel = expert_parallel;
  p.slots_per_rank = num_experts / expert_parallel;
  LayerPlacement layer;
  layer.slots.resize(size_t(expert_parallel));
  for (int64_t e = 0; e < num_experts; ++e) layer.slots[size_t(e / p.slots_per_rank)].push_back(e);
  p.layers.assign(size_t(num_layers), layer);
  return p;
}

namespace {

template <typename T>
T field(const json& j, const char* key, const std::string& what) {
  if (!j.is_object() || !j.contains(key)) throw ConfigError(what + ": no field '" + key + "'");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw ConfigError(what + ": field '" + key + "' has the wrong type");
  }
}

}  // namespace

Placement Placement::from_json(const json& j, const std::string& what) {
  const auto schema = field<std::string>(j, "schema", what);
  if (schema != kPlacementSchema)
    throw ConfigError(what + ": schema '" + schema + "', expected " + kPlacementSchema);
  Placement p;
  p.num_experts = field<int64_t>(j, "num_experts", what);
  p.expert_parallel = field<int>(j, "expert_parallel", what);
  p.slots_per_rank = field<int64_t>(j, "slots_per_rank", what);
  if (p.num_experts <= 0 || p.expert_parallel <= 0 || p.slots_per_rank <= 0)
    throw ConfigError(what + ": num_experts, expert_parallel and slots_per_rank must be positive");
  if (p.slots_per_rank * p.expert_parallel < p.num_experts)
    throw ConfigError(detail::concat(what, ": ", p.expert_parallel, " ranks x ", p.slots_per_rank,
                                     " slots cannot hold ", p.num_experts, " experts"));
  if (j.contains("source")) p.source = j.at("source");
  const auto layers = field<json>(j, "layers", what);
  if (!layers.is_array() || layers.empty()) throw ConfigError(what + ": 'layers' is empty");
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string at = what + " layer " + std::to_string(l);
    const auto slots = field<std::vector<std::vector<int64_t>>>(layers[l], "slots", at);
    if (int64_t(slots.size()) != p.expert_parallel)
      throw ConfigError(detail::concat(at, ": ", slots.size(), " ranks, expected expert_parallel ",
                                       p.expert_parallel));
    LayerPlacement layer;
    for (size_t r = 0; r < slots.size(); ++r) {
      if (int64_t(slots[r].size()) != p.slots_per_rank)
        throw ConfigError(detail::concat(at, " rank ", r, ": ", slots[r].size(),
                                         " slots, expected slots_per_rank ", p.slots_per_rank));
      for (int64_t e : slots[r])
        if (e < 0 || e >= p.num_experts)
          throw ConfigError(detail::concat(at, " rank ", r, ": expert ", e, " is not in [0, ",
                                           p.num_experts, ")"));
    }
    layer.slots = slots;
    const auto n = layer.copies(p.num_experts);
    for (int64_t e = 0; e < p.num_experts; ++e)
      if (n[size_t(e)] == 0) throw ConfigError(detail::concat(at, ": expert ", e, " has no slot"));
    p.layers.push_back(std::move(layer));
  }
  return p;
}

Placement Placement::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the placement file");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(path + ": not JSON (" + std::string(e.what()) + ")");
  }
  Placement p = from_json(j, path);
  p.path = path;
  return p;
}

nlohmann::ordered_json Placement::to_json() const {
  nlohmann::ordered_json j;
  j["schema"] = kPlacementSchema;
  j["num_experts"] = num_experts;
  j["expert_parallel"] = expert_parallel;
  j["slots_per_rank"] = slots_per_rank;
  if (!source.is_null()) j["source"] = source;
  j["layers"] = nlohmann::ordered_json::array();
  for (size_t l = 0; l < layers.size(); ++l)
    j["layers"].push_back({{"layer", l}, {"slots", layers[l].slots}});
  return j;
}

void Placement::write(const std::string& path) const {
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial);
    out << to_json().dump(1) << "\n";
    out.flush();
    if (!out) throw Error(partial + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) throw Error(path + ": cannot rename " + partial + " into place: " + ec.message());
}

void Placement::check_fits(int64_t num_layers, int64_t model_experts, int ep,
                           const std::string& what) const {
  if (int64_t(layers.size()) != num_layers)
    throw ConfigError(detail::concat(what, ": ", layers.size(), " layers, the model has ",
                                     num_layers, " MoE layers"));
  if (num_experts != model_experts)
    throw ConfigError(
        detail::concat(what, ": ", num_experts, " experts, the model has ", model_experts));
  if (expert_parallel != ep)
    throw ConfigError(
        detail::concat(what, ": made for EP ", expert_parallel, ", this run is EP ", ep));
}

bool Placement::replicated() const {
  for (const auto& layer : layers)
    if (layer.replicated()) return true;
  return false;
}

PlacementPtr placement_from_config(const std::string& path) {
  if (path.empty()) return nullptr;
  try {
    return std::make_shared<const Placement>(Placement::read(path));
  } catch (const ConfigError& e) {
    throw ConfigError("parallel.placement: " + std::string(e.what()), "parallel.placement");
  }
}

std::vector<double> rank_loads(const LayerPlacement& layer, const std::vector<double>& load) {
  const auto n = layer.copies(int64_t(load.size()));
  std::vector<double> out;
  for (const auto& rank : layer.slots) {
    double sum = 0;
    for (int64_t e : rank) sum += load.at(size_t(e)) / double(n[size_t(e)]);
    out.push_back(sum);
  }
  return out;
}

double max_over_mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  const double total = std::accumulate(values.begin(), values.end(), 0.0);
  if (total <= 0) return 0;
  return *std::max_element(values.begin(), values.end()) / (total / double(values.size()));
}

namespace {

struct Copy {
  int64_t expert;
  double weight;  ///< the expert's load over its number of copies
};

bool holds(const std::vector<Copy>& rank, int64_t expert, const Copy* except = nullptr) {
  for (const auto& c : rank)
    if (&c != except && c.expert == expert) return true;
  return false;
}

double sum_of(const std::vector<Copy>& rank) {
  double s = 0;
  for (const auto& c : rank) s += c.weight;
  return s;
}

// Packing can be left with two copies of an expert on one rank (the last free slots were all on
// ranks holding it). Each such copy is exchanged with a copy elsewhere that fits there, the
// exchange that keeps the larger of the two ranks' loads lowest; none is left where none fits.
void separate_copies(std::vector<std::vector<Copy>>& ranks) {
  for (size_t h = 0; h < ranks.size(); ++h)
    for (size_t a = 0; a < ranks[h].size(); ++a) {
      if (!holds(ranks[h], ranks[h][a].expert, &ranks[h][a])) continue;
      double best = 0;
      size_t best_b = 0, best_c = 0;
      bool found = false;
      for (size_t b = 0; b < ranks.size(); ++b) {
        if (b == h) continue;
        for (size_t c = 0; c < ranks[b].size(); ++c) {
          const Copy &x = ranks[h][a], &y = ranks[b][c];
          if (holds(ranks[b], x.expert, &y) || holds(ranks[h], y.expert, &x)) continue;
          const double worse = std::max(sum_of(ranks[h]) - x.weight + y.weight,
                                        sum_of(ranks[b]) - y.weight + x.weight);
          if (!found || worse < best) best = worse, best_b = b, best_c = c, found = true;
        }
      }
      if (found) std::swap(ranks[h][a], ranks[best_b][best_c]);
    }
}

// Pass 3: the best exchange between the most loaded rank and any other, while one helps.
void improve_by_swaps(std::vector<std::vector<Copy>>& ranks) {
  for (int round = 0; round < 10000; ++round) {
    std::vector<double> loads;
    for (const auto& r : ranks) loads.push_back(sum_of(r));
    const size_t h = size_t(std::max_element(loads.begin(), loads.end()) - loads.begin());
    const double top = loads[h];
    double best = top - 1e-9 * std::max(1.0, top);
    size_t best_a = 0, best_b = 0, best_c = 0;
    bool found = false;
    for (size_t a = 0; a < ranks[h].size(); ++a)
      for (size_t b = 0; b < ranks.size(); ++b) {
        if (b == h) continue;
        for (size_t c = 0; c < ranks[b].size(); ++c) {
          const Copy &x = ranks[h][a], &y = ranks[b][c];
          if (x.weight <= y.weight || x.expert == y.expert) continue;
          // Never two copies of one expert on one rank.
          if (holds(ranks[b], x.expert, &y) || holds(ranks[h], y.expert, &x)) continue;
          const double worse = std::max(top - x.weight + y.weight, loads[b] - y.weight + x.weight);
          if (worse < best) best = worse, best_a = a, best_b = b, best_c = c, found = true;
        }
      }
    if (!found) return;
    std::swap(ranks[h][best_a], ranks[best_b][best_c]);
  }
}

}  // namespace

namespace {

// Packs the copies (pass 2) and improves the packing (pass 3).
std::vector<std::vector<Copy>> pack(const std::vector<double>& load,
                                    const std::vector<int64_t>& copies, int ep, int64_t slots) {
  std::vector<Copy> items;
  for (size_t e = 0; e < load.size(); ++e)
    for (int64_t c = 0; c < copies[e]; ++c)
      items.push_back({int64_t(e), load[e] / double(copies[e])});
  std::stable_sort(items.begin(), items.end(),
                   [](const Copy& a, const Copy& b) { return a.weight > b.weight; });
  std::vector<std::vector<Copy>> ranks(static_cast<size_t>(ep));
  std::vector<double> loads(static_cast<size_t>(ep), 0.0);
  for (const Copy& item : items) {
    int best = -1;
    for (bool allow_second_copy : {false, true}) {
      for (int r = 0; r < ep; ++r) {
        if (int64_t(ranks[size_t(r)].size()) >= slots) continue;
        if (!allow_second_copy && holds(ranks[size_t(r)], item.expert)) continue;
        if (best < 0 || loads[size_t(r)] < loads[size_t(best)]) best = r;
      }
      // Only when every rank with room already holds this expert (rare, with many replicas)
      // does a rank get a second copy: harmless, the copies share the tokens either way.
      if (best >= 0) break;
    }
    ranks[size_t(best)].push_back(item);
    loads[size_t(best)] += item.weight;
  }
  separate_copies(ranks);
  improve_by_swaps(ranks);
  return ranks;
}

// One more copy for the expert with the largest (hot) or smallest (filler) load per copy,
// among those with fewer than `ep` copies; ties go to the lower id.
void add_copy(const std::vector<double>& load, std::vector<int64_t>& copies, int ep, bool hot) {
  int64_t pick = -1;
  for (size_t e = 0; e < load.size(); ++e) {
    if (copies[e] >= ep) continue;
    const double per_copy = load[e] / double(copies[e]);
    if (pick < 0) {
      pick = int64_t(e);
      continue;
    }
    const double best = load[size_t(pick)] / double(copies[size_t(pick)]);
    if (hot ? per_copy > best : per_copy < best) pick = int64_t(e);
  }
  ++copies[size_t(pick)];
}

}  // namespace

LayerPlacement balanced_layer(const std::vector<double>& load, int ep, int64_t redundant) {
  const int64_t E = int64_t(load.size());
  if (E == 0 || ep <= 0) throw ConfigError("placement: no experts or no ranks");
  if (redundant < 0 || redundant > E * (ep - 1))
    throw ConfigError(detail::concat("placement: --redundant ", redundant, " must be in [0, ",
                                     E * (ep - 1), "] (each expert at most once per rank)"));
  if ((E + redundant) % ep != 0)
    throw ConfigError(detail::concat("placement: ", E, " experts + ", redundant,
                                     " redundant slots do not divide over EP ", ep,
                                     " ranks (E + R must be a multiple of EP)"));
  for (double l : load)
    if (!(l >= 0)) throw ConfigError("placement: expert loads must be non-negative numbers");
  const int64_t slots = (E + redundant) / ep;

  // Pass 1 tries every split of the R extra slots into `hot` copies of the experts with the
  // largest load per copy and fillers for the coldest ones: splitting a hot expert further is not
  // always best, as equal-sized copies can pack worse than one fewer copy and a small filler.
  // The packing with the lightest most-loaded rank wins (ties: fewer hot copies).
  std::vector<std::vector<Copy>> best;
  double best_peak = 0;
  for (int64_t hot = 0; hot <= redundant; ++hot) {
    std::vector<int64_t> copies(size_t(E), 1);
    for (int64_t i = 0; i < redundant; ++i) add_copy(load, copies, ep, /*hot=*/i < hot);
    auto ranks = pack(load, copies, ep, slots);
    double peak = 0;
    for (const auto& r : ranks) peak = std::max(peak, sum_of(r));
    if (best.empty() || peak < best_peak - 1e-9 * std::max(1.0, best_peak))
      best = std::move(ranks), best_peak = peak;
  }

  LayerPlacement out;
  for (auto& rank : best) {
    std::vector<int64_t> experts;
    for (const auto& c : rank) experts.push_back(c.expert);
    std::sort(experts.begin(), experts.end());  // slot order: by expert id, for readable files
    out.slots.push_back(std::move(experts));
  }
  return out;
}

}  // namespace switchyard
