// `switchyard placement`: a placement of experts on EP ranks that balances the loads a training
// run measured (metrics.jsonl), with the predicted rank max/mean before and after, per layer.
#include <iostream>

#include "common/errors.h"
#include "common/table.h"
#include "launch/cli.h"
#include "parallel/placement.h"
#include "trainer/expert_load_history.h"

namespace switchyard {
namespace {

// "A:B", "A:" or ":B" -> [A, B] (B = -1: to the end).
std::pair<int64_t, int64_t> parse_steps(const std::string& text) {
  const auto colon = text.find(':');
  try {
    if (colon == std::string::npos) throw std::invalid_argument(text);
    const std::string a = text.substr(0, colon), b = text.substr(colon + 1);
    size_t used = 0;
    const int64_t first = a.empty() ? 0 : std::stoll(a, &used);
    if (!a.empty() && used != a.size()) throw std::invalid_argument(a);
    const int64_t last = b.empty() ? -1 : std::stoll(b, &used);
    if (!b.empty() && used != b.size()) throw std::invalid_argument(b);
    if (first < 0 || (last >= 0 && last < first)) throw std::invalid_argument(text);
    return {first, last};
  } catch (const std::exception&) {
    throw ConfigError("--steps " + text +
                      ": expected A:B with 0 <= A <= B (either may be left out)");
  }
}

int run_placement(const CommandArgs& args) {
  const std::string run = args.vars["run"].as<std::string>();
  const int ep = args.vars["ep"].as<int>();
  const int64_t redundant = args.vars["redundant"].as<int64_t>();
  const std::string out = args.vars["out"].as<std::string>();
  if (ep <= 0) throw ConfigError("--ep " + std::to_string(ep) + ": must be positive");
  const auto [first, last] = args.vars.count("steps")
                                 ? parse_steps(args.vars["steps"].as<std::string>())
                                 : std::pair<int64_t, int64_t>{0, -1};
  const ExpertLoadHistory loads = read_expert_loads(run, first, last);
  const int64_t E = int64_t(loads.per_layer.front().size());
  if (E % ep != 0)
    throw ConfigError(detail::concat("--ep ", ep, ": must divide the run's ", E, " experts"));

  Placement placement;
  placement.num_experts = E;
  placement.expert_parallel = ep;
  placement.slots_per_rank = (E + redundant) / ep;
  const Placement contiguous = Placement::contiguous(int64_t(loads.per_layer.size()), E, ep);
  Table table({"layer", "assignments", "contiguous max/mean", "placed max/mean", "replicated"});
  nlohmann::ordered_json predicted = nlohmann::ordered_json::array();
  for (size_t l = 0; l < loads.per_layer.size(); ++l) {
    const auto& load = loads.per_layer[l];
    placement.layers.push_back(balanced_layer(load, ep, redundant));
    const double before = max_over_mean(rank_loads(contiguous.layers[l], load));
    const double after = max_over_mean(rank_loads(placement.layers[l], load));
    std::string replicated;
    const auto copies = placement.layers[l].copies(E);
    for (int64_t e = 0; e < E; ++e)
      if (copies[size_t(e)] > 1)
        replicated += (replicated.empty() ? "" : " ") + detail::concat("e", e, "x", copies[e]);
    double total = 0;
    for (double v : load) total += v;
    table.add({int64_t(l), int64_t(total), Cell(before, 4), Cell(after, 4),
               replicated.empty() ? "-" : replicated});
    predicted.push_back({{"layer", l}, {"contiguous", before}, {"placed", after}});
  }
  placement.source = {{"run", run},
                      {"steps", {loads.first_step, loads.last_step}},
                      {"redundant", redundant},
                      {"predicted_rank_max_over_mean", predicted}};
  placement.write(out);
  std::cout << "expert loads of " << loads.steps << " steps (" << loads.first_step << " to "
            << loads.last_step << ") of " << run << "; EP " << ep << ", " << redundant
            << " redundant slot(s) per layer; rank max/mean predicted from those loads\n";
  table.print(std::cout);
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

Subcommand placement_command() {
  Subcommand c;
  c.name = "placement";
  c.summary = "expert placement that balances a run's measured loads";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("run", po::value<std::string>()->required()->value_name("RUN_DIR"),
                       "training run folder (or its metrics.jsonl) whose loads to balance")(
        "steps", po::value<std::string>()->value_name("A:B"),
        "only the load records of steps A to B (default: all)")(
        "ep", po::value<int>()->required()->value_name("N"), "expert-parallel size to place for")(
        "redundant", po::value<int64_t>()->default_value(0)->value_name("R"),
        "extra expert slots per layer for replicas of hot experts (E + R divisible by N)")(
        "out", po::value<std::string>()->required()->value_name("FILE"),
        "the placement, as JSON (switchyard.placement/1)");
  };
  c.run = run_placement;
  return c;
}

}  // namespace switchyard
