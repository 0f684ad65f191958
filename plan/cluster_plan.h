// `switchyard plan` as a library: a model, a run config and a cluster in; per-rank memory and
// step time for one EP x DP layout or for every one that divides the world out, with the
// imbalance measured in a run's metrics.jsonl when one is given.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "plan/cost_model.h"

namespace switchyard {

/// What `switchyard plan` was asked.
struct PlanRequest {
  PlanWorkload workload;
  ClusterSpec cluster;
  std::optional<int> ep;  ///< one layout; unset: every EP size that divides the world
  /// Per MoE layer, per expert: loads measured in a run (--loads). Each layout's imbalance is
  /// then the rank max/mean they give under its placement; without them, `assumed_imbalance`.
  std::vector<std::vector<double>> expert_loads;
  std::string loads_source;  ///< the run they came from
  /// The same run's tokens per MoE layer and EP rank under the placement it used, and its EP
  /// size: a layout of that EP size, not asked to balance, takes its imbalance from these.
  std::vector<std::vector<double>> rank_loads;
  int loads_ep = 0;
  /// The same run's share of expert slots with rows, per MoE layer (ExpertLoadHistory): the
  /// experts a step dequantises. Empty: all of them.
  std::vector<double> active_expert_share;
  /// With loads: plan under the placement `switchyard placement` would make from them
  /// (balanced_layer with the redundant slots) instead of the contiguous one. Replicas imply it.
  bool balanced_placement = false;
  double assumed_imbalance = 1.0;
};

/// The model a path or name describes: a preset ("qwen1.5-moe-a2.7b", "tiny"), a config.json,
/// a Hugging Face folder, or a Switchyard checkpoint or run folder (the config.json its manifest
/// keeps). Throws ConfigError naming the path when it is none of these.
Qwen2MoeConfig plan_model_config(const std::string& model);

/// The workload a run config describes for `model`: router, expert quantization (a GPTQ
/// model's int4 codes), routers-only or full training, micro-batch, sequence length,
/// accumulation; `dtype` is train's --dtype ("float32", "bfloat16", "checkpoint");
/// train.precision and whether the cluster has GPUs decide the activations' width.
PlanWorkload plan_workload(const RunConfig& run, const Qwen2MoeConfig& model,
                           const std::string& dtype, const ClusterSpec& cluster);

/// The layouts asked for, each with its imbalance.
std::vector<LayoutPlan> plan_cluster(const PlanRequest& request);

/// Prints the plans as tables (memory, then time), with the inputs on top.
void print_plans(std::ostream& os, const PlanRequest& request,
                 const std::vector<LayoutPlan>& plans);

/// The same as JSON (schema switchyard.plan/1), bytes and seconds unrounded.
nlohmann::ordered_json plans_json(const PlanRequest& request, const std::vector<LayoutPlan>& plans);

}  // namespace switchyard
