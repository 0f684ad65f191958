// `switchyard plan`: per-rank memory and step time of a training run on a cluster, for one
// EP x DP layout or every one, before the cluster is booked (plan/cluster_plan.h).
#include <iostream>

#include "common/errors.h"
#include "launch/cli.h"
#include "plan/cluster_plan.h"
#include "trainer/expert_load_history.h"

namespace switchyard {
namespace {

int run_plan(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  PlanRequest request;
  request.cluster = cluster_preset(args.vars["cluster"].as<std::string>());
  if (args.vars.count("cluster-set"))
    for (const auto& s : args.vars["cluster-set"].as<std::vector<std::string>>())
      set_cluster_field(request.cluster, s);
  request.cluster.validate();
  const Qwen2MoeConfig model = plan_model_config(args.vars["model"].as<std::string>());
  request.workload =
      plan_workload(config, model, args.vars["dtype"].as<std::string>(), request.cluster);
  request.workload.redundant_slots = args.vars["redundant"].as<int64_t>();
  request.assumed_imbalance = args.vars["imbalance"].as<double>();
  if (!(request.assumed_imbalance >= 1.0))
    throw ConfigError(detail::concat("--imbalance ", request.assumed_imbalance,
                                     ": a rank max/mean is at least 1"));
  if (args.vars.count("ep")) request.ep = args.vars["ep"].as<int>();
  if (args.vars.count("loads")) {
    request.loads_source = args.vars["loads"].as<std::string>();
    const ExpertLoadHistory loads = read_expert_loads(request.loads_source);
    request.expert_loads = loads.per_layer;
    request.rank_loads = loads.per_ep_rank;
    request.loads_ep = int(loads.expert_parallel);
    request.active_expert_share = loads.active_share;
  }
  request.balanced_placement = args.vars["balanced"].as<bool>();
  const auto plans = plan_cluster(request);
  if (args.vars["json"].as<bool>())
    std::cout << plans_json(request, plans).dump(2) << "\n";
  else
    print_plans(std::cout, request, plans);
  if (request.ep && !plans.front().fits()) {
    const auto& p = plans.front();
    std::cerr << "switchyard plan: EP " << p.ep << " x DP " << p.dp
              << " does not fit: " << p.memory.peak() / 1e9 << " GB per rank, "
              << (p.memory.peak() - p.capacity_bytes) / 1e9 << " GB more than the "
              << p.capacity_bytes / 1e9 << " GB a rank has\n";
    return 1;
  }
  return 0;
}

}  // namespace

Subcommand plan_command() {
  Subcommand c;
  c.name = "plan";
  c.summary = "predict per-rank memory and step time of a run on a cluster layout";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("model", po::value<std::string>()->required()->value_name("PATH|NAME"),
                       "config.json, Hugging Face folder, Switchyard checkpoint or run folder, "
                       "or a preset (qwen1.5-moe-a2.7b, tiny)")(
        "cluster", po::value<std::string>()->default_value("8xh100")->value_name("PRESET"),
        "8xh100, 8xh200 or cpu")(
        "cluster-set", po::value<std::vector<std::string>>()->value_name("FIELD=VALUE"),
        ("override a cluster field (repeatable): " + cluster_field_names()).c_str())(
        "ep", po::value<int>()->value_name("N"),
        "plan this EP size only (DP = world / N); exits 1 when it does not fit")(
        "dtype", po::value<std::string>()->default_value("float32")->value_name("DTYPE"),
        "master weights as train --dtype: float32, bfloat16, float16, checkpoint")(
        "redundant", po::value<int64_t>()->default_value(0)->value_name("R"),
        "redundant expert slots per MoE layer (a placement with replicas)")(
        "loads", po::value<std::string>()->value_name("RUN_DIR"),
        "take each layer's rank imbalance from this run's measured loads: at the run's EP size "
        "the tokens its ranks received under the placement it used, at others its expert "
        "loads under the contiguous placement; and the share of experts that got rows (only "
        "they are dequantised)")(
        "imbalance", po::value<double>()->default_value(1.0)->value_name("X"),
        "assumed rank max/mean of received tokens without --loads (1 = balanced)")(
        "balanced", po::bool_switch(),
        "with --loads: under the placement `switchyard placement` makes from them")(
        "json", po::bool_switch(), "print JSON (switchyard.plan/1) instead of tables");
  };
  c.run = run_plan;
  return c;
}

}  // namespace switchyard
