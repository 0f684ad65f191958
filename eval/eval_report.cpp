// EvalReport <-> JSON and its tables. Parsing is strict about what the report needs: a missing
// or mistyped field is one line naming the file and the field, never a default that looks real.
#include "eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "common/errors.h"
#include "common/table.h"
#include "parallel/placement.h"

namespace switchyard {

using json = nlohmann::ordered_json;

std::vector<double> LayerReport::rank_tokens() const {
  std::vector<double> load(routing.expert_tokens.begin(), routing.expert_tokens.end());
  return rank_loads(LayerPlacement{placement}, load);
}

double LayerReport::rank_max_over_mean() const {
  return max_over_mean(rank_tokens());
}

double EvalReport::mean_rank_max_over_mean() const {
  double sum = 0;
  for (const auto& l : layers) sum += l.rank_max_over_mean();
  return layers.empty() ? 0.0 : sum / double(layers.size());
}

std::string experts_text(const std::vector<int64_t>& experts) {
  std::string out;
  for (size_t i = 0; i < experts.size();) {
    size_t j = i;
    while (j + 1 < experts.size() && experts[j + 1] == experts[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(experts[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(experts[j]);
    }
    i = j + 1;
  }
  return out;
}

std::string EvalReport::rank_experts_text(int ep_rank) const {
  if (layers.empty() || size_t(ep_rank) >= layers.front().placement.size()) return "";
  const auto& first = layers.front().placement[size_t(ep_rank)];
  for (const auto& l : layers)
    if (l.placement[size_t(ep_rank)] != first) return "per layer";
  return experts_text(first);
}

double EvalReport::router_s() const {
  double s = 0;
  for (const auto& l : layers) s += l.router_s;
  return s;
}

double EvalReport::moe_s() const {
  double s = 0;
  for (const auto& l : layers) s += l.moe_s;
  return s;
}

double EvalReport::router_share() const {
  return moe_s() > 0 ? router_s() / moe_s() : 0.0;
}

RoutingStats EvalReport::mean_routing() const {
  RoutingStats m;
  if (layers.empty()) return m;
  for (const auto& l : layers) {
    m.num_tokens += l.routing.num_tokens;
    m.num_assignments += l.routing.num_assignments;
    m.num_dropped += l.routing.num_dropped;
    m.utilisation += l.routing.utilisation;
    m.max_over_mean += l.routing.max_over_mean;
    m.cv += l.routing.cv;
    m.token_entropy += l.routing.token_entropy;
    m.load_entropy += l.routing.load_entropy;
  }
  const double n = double(layers.size());
  m.utilisation /= n;
  m.max_over_mean /= n;
  m.cv /= n;
  m.token_entropy /= n;
  m.load_entropy /= n;
  m.drop_rate = m.num_assignments ? double(m.num_dropped) / double(m.num_assignments) : 0.0;
  return m;
}

// ---- JSON ---------------------------------------------------------------------------------------

json EvalReport::to_json() const {
  json layer_list = json::array();
  for (const auto& l : layers) {
    const auto& r = l.routing;
    layer_list.push_back({{"layer", l.layer},
                          {"tokens", r.num_tokens},
                          {"assignments", r.num_assignments},
                          {"dropped", r.num_dropped},
                          {"expert_tokens", r.expert_tokens},
                          {"utilisation", r.utilisation},
                          {"max_over_mean", r.max_over_mean},
                          {"cv", r.cv},
                          {"entropy", r.token_entropy},
                          {"load_entropy", r.load_entropy},
                          {"drop_rate", r.drop_rate},
                          {"router_s", l.router_s},
                          {"moe_s", l.moe_s}});
    if (!l.expert_bias.empty()) layer_list.back()["expert_bias"] = l.expert_bias;
    layer_list.back()["placement"] = l.placement;
    layer_list.back()["rank_tokens"] = l.rank_tokens();
    layer_list.back()["rank_max_over_mean"] = l.rank_max_over_mean();
  }
  json rank_list = json::array();
  for (const auto& r : ranks)
    rank_list.push_back({{"rank", r.rank},
                         {"ep_rank", r.ep_rank},
                         {"tokens_received", r.tokens_received},
                         {"forward_s", r.forward_s},
                         {"moe_s", r.moe_s},
                         {"experts_s", r.experts_s}});
  const RoutingStats mean = mean_routing();
  json out{
      {"schema", kEvalSchema},
      {"task", task},
      {"model", model},
      {"data", data},
      {"data_format", data_format},
      {"router", router},
      {"router_config", router_config},
      {"dtype", dtype},
      {"device", device},
      {"num_experts", num_experts},
      {"top_k", top_k},
      {"world_size", world_size},
      {"expert_parallel", expert_parallel},
      {"sequences", sequences},
      {"tokens", tokens},
      {"predicted_tokens", predicted},
      {"mean_nll", mean_nll},
      {"perplexity", perplexity},
      {"parameters",
       {{"total", parameters.total},
        {"active", parameters.active},
        {"router", parameters.router},
        {"routed_experts", parameters.routed_experts}}},
      {"router_latency", {{"router_s", router_s()}, {"moe_s", moe_s()}, {"share", router_share()}}},
      {"summary",
       {{"utilisation", mean.utilisation},
        {"max_over_mean", mean.max_over_mean},
        {"cv", mean.cv},
        {"entropy", mean.token_entropy},
        {"load_entropy", mean.load_entropy},
        {"drop_rate", mean.drop_rate},
        {"rank_max_over_mean", mean_rank_max_over_mean()}}},
      {"layers", layer_list},
      {"ranks", rank_list}};
  if (classification()) {
    out["accuracy"] = accuracy;
    out["macro_f1"] = macro_f1;
    out["labels"] = label_names;
  }
  return out;
}

namespace {

// Field access that names the file and the field when it is missing or of the wrong type.
template <typename T>
T field(const json& j, const char* key, const std::string& what) {
  if (!j.is_object() || !j.contains(key))
    throw ConfigError(what + ": missing field \"" + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw ConfigError(what + ": field \"" + key + "\" has the wrong type");
  }
}

}  // namespace

EvalReport EvalReport::from_json(const json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("schema") || j["schema"] != kEvalSchema)
    throw ConfigError(what + ": not a `switchyard eval --json` result (schema " + kEvalSchema +
                      ")");
  EvalReport r;
  // Results written before classification existed have no task: causal LM.
  if (j.contains("task")) r.task = field<std::string>(j, "task", what);
  if (r.task != "causal_lm" && r.task != "classification")
    throw ConfigError(what + ": unknown task \"" + r.task + "\"");
  if (r.classification()) {
    r.accuracy = field<double>(j, "accuracy", what);
    r.macro_f1 = field<double>(j, "macro_f1", what);
    r.label_names = field<std::vector<std::string>>(j, "labels", what);
  }
  r.model = field<std::string>(j, "model", what);
  r.data = field<std::string>(j, "data", what);
  r.data_format = field<std::string>(j, "data_format", what);
  r.router = field<std::string>(j, "router", what);
  r.router_config = field<std::string>(j, "router_config", what);
  r.dtype = field<std::string>(j, "dtype", what);
  if (j.contains("device")) r.device = field<std::string>(j, "device", what);  // newer results
  r.num_experts = field<int64_t>(j, "num_experts", what);
  r.top_k = field<int64_t>(j, "top_k", what);
  r.world_size = field<int>(j, "world_size", what);
  r.expert_parallel = field<int>(j, "expert_parallel", what);
  r.sequences = field<int64_t>(j, "sequences", what);
  r.tokens = field<int64_t>(j, "tokens", what);
  r.predicted = field<int64_t>(j, "predicted_tokens", what);
  r.mean_nll = field<double>(j, "mean_nll", what);
  r.perplexity = field<double>(j, "perplexity", what);
  const json p = field<json>(j, "parameters", what);
  r.parameters.total = field<int64_t>(p, "total", what + " parameters");
  r.parameters.active = field<int64_t>(p, "active", what + " parameters");
  r.parameters.router = field<int64_t>(p, "router", what + " parameters");
  r.parameters.routed_experts = field<int64_t>(p, "routed_experts", what + " parameters");
  for (const json& l : field<json>(j, "layers", what)) {
    const std::string at = what + " layers[" + std::to_string(r.layers.size()) + "]";
    LayerReport lr;
    lr.layer = field<int64_t>(l, "layer", at);
    lr.routing.num_tokens = field<int64_t>(l, "tokens", at);
    lr.routing.num_assignments = field<int64_t>(l, "assignments", at);
    lr.routing.num_dropped = field<int64_t>(l, "dropped", at);
    lr.routing.expert_tokens = field<std::vector<int64_t>>(l, "expert_tokens", at);
    lr.routing.token_entropy = field<double>(l, "entropy", at);
    lr.routing.recompute_load_metrics();
    lr.router_s = field<double>(l, "router_s", at);
    lr.moe_s = field<double>(l, "moe_s", at);
    if (l.contains("expert_bias")) {
      lr.expert_bias = field<std::vector<double>>(l, "expert_bias", at);
      if (int64_t(lr.expert_bias.size()) != r.num_experts)
        throw ConfigError(at + ": expert_bias has " + std::to_string(lr.expert_bias.size()) +
                          " entries, expected " + std::to_string(r.num_experts));
    }
    if (int64_t(lr.routing.expert_tokens.size()) != r.num_experts)
      throw ConfigError(at + ": expert_tokens has " +
                        std::to_string(lr.routing.expert_tokens.size()) + " entries, expected " +
                        std::to_string(r.num_experts));
    // Results written before placements existed used the contiguous split.
    if (l.contains("placement")) {
      lr.placement = field<std::vector<std::vector<int64_t>>>(l, "placement", at);
      Placement check;  // the placement file's checks: ranks, slot counts, every expert placed
      check.num_experts = r.num_experts;
      check.expert_parallel = r.expert_parallel;
      check.slots_per_rank = lr.placement.empty() ? 0 : int64_t(lr.placement.front().size());
      check.layers = {LayerPlacement{lr.placement}};
      Placement::from_json(check.to_json(), at + " placement");
    } else if (r.expert_parallel > 0 && r.num_experts % r.expert_parallel == 0) {
      lr.placement =
          Placement::contiguous(1, r.num_experts, r.expert_parallel).layers.front().slots;
    } else {
      throw ConfigError(at + ": no placement, and EP " + std::to_string(r.expert_parallel) +
                        " does not divide " + std::to_string(r.num_experts) + " experts");
    }
    r.layers.push_back(std::move(lr));
  }
  if (r.layers.empty()) throw ConfigError(what + ": no MoE layers");
  for (const json& k : field<json>(j, "ranks", what)) {
    const std::string at = what + " ranks[" + std::to_string(r.ranks.size()) + "]";
    RankReport rr;
    rr.rank = field<int>(k, "rank", at);
    rr.ep_rank = field<int>(k, "ep_rank", at);
    rr.tokens_received = field<int64_t>(k, "tokens_received", at);
    rr.forward_s = field<double>(k, "forward_s", at);
    rr.moe_s = field<double>(k, "moe_s", at);
    rr.experts_s = field<double>(k, "experts_s", at);
    r.ranks.push_back(rr);
  }
  return r;
}

EvalReport EvalReport::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open eval result");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    throw ConfigError(path + ": not JSON (" + e.what() + ")");
  }
  return from_json(j, path);
}

// ---- tables -------------------------------------------------------------------------------------

void EvalReport::print(std::ostream& os) const {
  os << "model " << model << " (router " << router << ", " << num_experts << " experts, top-"
     << top_k << ", " << dtype << " on " << device << ") on " << data << " (" << data_format
     << "): " << sequences << " sequences, " << tokens << " tokens, world " << world_size << ", EP "
     << expert_parallel << "\n\n";
  const RoutingStats mean = mean_routing();
  // The task's quality first: perplexity, or accuracy and macro-F1 (with the mean loss).
  std::vector<std::string> columns =
      classification() ? std::vector<std::string>{"accuracy", "macro_f1", "mean_loss"}
                       : std::vector<std::string>{"perplexity", "mean_nll"};
  std::vector<Cell> row =
      classification() ? std::vector<Cell>{Cell(accuracy, 4), Cell(macro_f1, 4), Cell(mean_nll, 5)}
                       : std::vector<Cell>{Cell(perplexity, 4), Cell(mean_nll, 5)};
  for (const char* c : {"params", "active", "router_params", "router_share", "utilisation",
                        "max/mean", "cv", "entropy", "drop_rate"})
    columns.emplace_back(c);
  for (Cell c : {Cell(parameters.total), Cell(parameters.active), Cell(parameters.router),
                 Cell(router_share(), 4), Cell(mean.utilisation, 4), Cell(mean.max_over_mean, 4),
                 Cell(mean.cv, 4), Cell(mean.token_entropy, 4), Cell(mean.drop_rate, 4)})
    row.push_back(c);
  Table summary(columns);
  summary.add(std::move(row));
  summary.print(os);

  os << "\nper MoE layer\n";
  Table per_layer({"layer", "tokens", "utilisation", "max/mean", "rank_max/mean", "cv", "entropy",
                   "load_entropy", "drop_rate", "router_ms", "moe_ms", "router_share"});
  for (const auto& l : layers) {
    const auto& r = l.routing;
    per_layer.add({l.layer, r.num_tokens, Cell(r.utilisation, 4), Cell(r.max_over_mean, 4),
                   Cell(l.rank_max_over_mean(), 4), Cell(r.cv, 4), Cell(r.token_entropy, 4),
                   Cell(r.load_entropy, 4), Cell(r.drop_rate, 4), Cell(l.router_s * 1e3, 2),
                   Cell(l.moe_s * 1e3, 2), Cell(l.moe_s > 0 ? l.router_s / l.moe_s : 0.0, 4)});
  }
  per_layer.print(os);

  // Tokens per EP rank and layer under the placement in use: what makes a rank the straggler.
  os << "\nrank tokens per MoE layer (experts each EP rank's slots held)\n";
  std::vector<std::string> rank_columns{"layer"};
  for (int k = 0; k < expert_parallel; ++k) rank_columns.push_back("ep" + std::to_string(k));
  rank_columns.push_back("rank_max/mean");
  Table rank_load(rank_columns);
  for (const auto& l : layers) {
    std::vector<Cell> cells{l.layer};
    const auto tokens = l.rank_tokens();
    for (size_t k = 0; k < tokens.size(); ++k)
      cells.emplace_back(
          detail::concat(std::llround(tokens[k]), " (", experts_text(l.placement[k]), ")"));
    cells.emplace_back(l.rank_max_over_mean(), 4);
    rank_load.add(std::move(cells));
  }
  rank_load.print(os);

  os << "\nload per expert (assignments kept; columns: experts)\n";
  std::vector<std::string> expert_columns{"layer"};
  for (int64_t e = 0; e < num_experts; ++e) expert_columns.push_back("e" + std::to_string(e));
  Table load(expert_columns);
  for (const auto& l : layers) {
    std::vector<Cell> counts{l.layer};
    for (int64_t t : l.routing.expert_tokens) counts.emplace_back(t);
    load.add(std::move(counts));
  }
  load.print(os);

  if (std::any_of(layers.begin(), layers.end(),
                  [](const LayerReport& l) { return !l.expert_bias.empty(); })) {
    os << "\nexpert bias (router.expert_bias: added to the scores when experts are chosen)\n";
    Table bias(expert_columns);
    for (const auto& l : layers) {
      std::vector<Cell> values{l.layer};
      for (double b : l.expert_bias) values.emplace_back(b, 4);
      bias.add(std::move(values));
    }
    bias.print(os);
  }

  os << "\nper rank\n";
  Table per_rank(
      {"rank", "ep_rank", "experts", "tokens_received", "forward_s", "moe_s", "experts_s"});
  for (const auto& r : ranks)
    per_rank.add({r.rank, r.ep_rank, rank_experts_text(r.ep_rank), r.tokens_received,
                  Cell(r.forward_s, 4), Cell(r.moe_s, 4), Cell(r.experts_s, 4)});
  per_rank.print(os);
}

}  // namespace switchyard
