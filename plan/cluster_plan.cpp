#include "plan/cluster_plan.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"
#include "common/table.h"
#include "models/load_model.h"
#include "models/qwen2_moe.h"
#include "models/switchyard_checkpoint.h"
#include "parallel/placement.h"

namespace fs = std::filesystem;

namespace switchyard {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("--model " + path + ": cannot read it");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double gb(double bytes) {
  return bytes / 1e9;
}

// Whether a layout of EP size `ep` takes the run's own rank loads (its placement as it ran).
bool uses_runs_placement(const PlanRequest& r, int ep) {
  return !r.balanced_placement && r.workload.redundant_slots == 0 && !r.rank_loads.empty() &&
         ep == r.loads_ep;
}

// Each MoE layer's rank max/mean of the measured loads at EP `ep`: at the run's own EP size,
// the tokens its ranks received under the placement it used; else under the contiguous
// placement, or under the balanced one (with the redundant slots) when asked or implied.
std::vector<double> measured_imbalance(const PlanRequest& r, int ep) {
  const auto& loads = r.expert_loads;
  const int64_t E = r.workload.model.num_experts, R = r.workload.redundant_slots;
  const bool balanced = r.balanced_placement || R > 0;
  if (uses_runs_placement(r, ep)) {
    std::vector<double> out;
    for (const auto& ranks : r.rank_loads) out.push_back(std::max(1.0, max_over_mean(ranks)));
    return out;
  }
  const Placement contiguous = Placement::contiguous(int64_t(loads.size()), E, ep);
  std::vector<double> out;
  for (size_t l = 0; l < loads.size(); ++l) {
    const LayerPlacement placed = balanced ? balanced_layer(loads[l], ep, R) : contiguous.layers[l];
    out.push_back(std::max(1.0, max_over_mean(rank_loads(placed, loads[l]))));
  }
  return out;
}

}  // namespace

Qwen2MoeConfig plan_model_config(const std::string& model) {
  if (!fs::exists(model)) {
    if (model == "qwen1.5-moe-a2.7b" || model == "tiny") return Qwen2MoeConfig::preset(model);
    throw ConfigError("--model " + model +
                      ": no such file or folder, nor a preset (qwen1.5-moe-a2.7b, tiny)");
  }
  if (!fs::is_directory(model)) return Qwen2MoeConfig::from_json(read_text(model), model);
  const std::string dir = resolve_model_path(model);
  if (!is_switchyard_checkpoint(dir))
    return Qwen2MoeConfig::from_file((fs::path(dir) / "config.json").string());
  const auto manifest = read_checkpoint_manifest(dir);
  if (manifest.config().model().arch() != config::QWEN2_MOE)
    throw ConfigError("--model " + model +
                      ": plan models Qwen2-MoE only, this is another "
                      "architecture");
  if (!manifest.model_config_json().empty())
    return Qwen2MoeConfig::from_json(manifest.model_config_json(), dir + "/manifest.pb");
  // A training checkpoint without the config text: its base describes the model.
  return plan_model_config(manifest.config().model().checkpoint());
}

PlanWorkload plan_workload(const RunConfig& run, const Qwen2MoeConfig& model,
                           const std::string& dtype, const ClusterSpec& cluster) {
  PlanWorkload w;
  w.model = model;
  w.router = run.router();
  config::QuantConfig quant = run.model().quant();
  if (model.gptq && quant.experts() == config::QUANT_NONE) quant = gptq_expert_quant(*model.gptq);
  w.expert_quant = quant_options(quant);
  w.quantize_shared_expert = quant.experts() != config::QUANT_NONE && quant.shared_expert();
  const auto& t = run.train();
  w.routers_only = t.routers_only();
  w.recompute_layers = t.recompute_layers();
  w.micro_batch = t.micro_batch_size();
  w.seq_len = t.seq_len();
  w.accumulation = t.grad_accumulation();
  const torch::Dtype weights = parse_dtype(dtype, model.dtype);
  w.weight_bytes = int64_t(torch::elementSize(weights));
  // train.precision: auto is bf16 autocast on GPUs and the weights' dtype on CPUs.
  const bool gpu = !cluster.ranks_share_node;
  const bool bf16 =
      t.precision() == config::PRECISION_BF16 || (t.precision() == config::PRECISION_AUTO && gpu);
  w.activation_bytes = bf16 ? 2 : w.weight_bytes;
  // A checkpoint's weights are read in its own dtype.
  if (!run.model().has_init_config()) {
    w.checkpoint_bytes = int64_t(torch::elementSize(model.dtype));
    if (model.gptq) w.checkpoint_gptq_group = model.gptq->group_size;
  }
  return w;
}

std::vector<LayoutPlan> plan_cluster(const PlanRequest& r) {
  const std::vector<int> sizes =
      r.ep ? std::vector<int>{*r.ep} : feasible_ep_sizes(r.workload, r.cluster);
  if (sizes.empty())
    throw ConfigError(detail::concat(
        "plan: no EP size divides both the world of ", r.cluster.world(), " ranks and the ",
        r.workload.model.num_experts + r.workload.redundant_slots, " expert slots"));
  if (!r.expert_loads.empty() && int64_t(r.expert_loads.size()) != r.workload.moe_layers())
    throw ConfigError(detail::concat("--loads ", r.loads_source, ": ", r.expert_loads.size(),
                                     " MoE layers of loads, the model has ",
                                     r.workload.moe_layers()));
  std::vector<LayoutPlan> plans;
  for (int ep : sizes) {
    PlanWorkload w = r.workload;
    w.active_expert_share = r.active_expert_share;
    if (!r.expert_loads.empty() && ep > 1)
      w.rank_imbalance = measured_imbalance(r, ep);
    else if (ep > 1)
      w.rank_imbalance = {r.assumed_imbalance};
    plans.push_back(plan_layout(w, r.cluster, ep));
  }
  return plans;
}

void print_plans(std::ostream& os, const PlanRequest& r, const std::vector<LayoutPlan>& plans) {
  const auto& w = r.workload;
  const auto& c = r.cluster;
  os << "cluster " << c.name << ": " << c.nodes << " node(s) x " << c.devices_per_node
     << (c.ranks_share_node ? " ranks sharing " : " devices of ") << c.memory_gb << " GB; "
     << c.source << "\n";
  os << "model: " << w.model.num_hidden_layers << " layers (" << w.moe_layers() << " MoE), hidden "
     << w.model.hidden_size << ", " << w.model.num_experts << " experts top-" << w.top_k()
     << ", vocab " << w.model.vocab_size << "; experts " << quant_name(w.expert_quant.kind())
     << (w.routers_only ? ", routers only" : ", full training")
     << (w.recompute_layers ? ", layers recomputed" : "") << "; micro-batch " << w.micro_batch
     << " x " << w.seq_len << ", accumulation " << w.accumulation << "; weights "
     << w.weight_bytes * 8 << "-bit, activations " << w.activation_bytes * 8 << "-bit\n";
  os << "imbalance: "
     << (r.expert_loads.empty()
             ? detail::concat("assumed rank max/mean ", r.assumed_imbalance)
             : "measured in " + r.loads_source +
                   (r.balanced_placement || w.redundant_slots > 0
                        ? detail::concat(" (balanced placement with ", w.redundant_slots,
                                         " redundant slots at each EP size)")
                    : r.rank_loads.empty()
                        ? std::string(" (contiguous placement at each EP size)")
                        : detail::concat(" (at EP ", r.loads_ep,
                                         " the placement the run used, at other EP sizes "
                                         "the contiguous one)")))
     << "\n";
  if (!r.active_expert_share.empty()) {
    double sum = 0;
    for (double v : r.active_expert_share) sum += v;
    os << "experts with rows: " << Cell(sum / double(r.active_expert_share.size()), 3).text
       << " of a rank's slots on average, measured in " << r.loads_source
       << " (only they are dequantised)\n";
  }
  os << "\nmemory per rank, GB\n";
  Table memory({"EP", "DP", "replicated", "experts", "grads", "AdamW", "activations", "exchange",
                "logits", "dequant", "runtime", "total", "loading", "capacity", "fits"});
  for (const auto& p : plans) {
    const auto& m = p.memory;
    const double miss = m.peak() - p.capacity_bytes;
    memory.add({p.ep, p.dp, Cell(gb(m.replicated_weights), 2), Cell(gb(m.expert_weights), 2),
                Cell(gb(m.gradients), 2), Cell(gb(m.optimizer), 2), Cell(gb(m.activations), 2),
                Cell(gb(m.exchange), 2), Cell(gb(m.logits), 2), Cell(gb(m.dequantized), 2),
                Cell(gb(m.runtime), 2), Cell(gb(m.total()), 2), Cell(gb(m.loading), 2),
                Cell(gb(p.capacity_bytes), 1),
                p.fits() ? std::string("yes")
                         : detail::concat("no (", Cell(gb(miss), 2).text, " GB over)")});
  }
  memory.print(os);
  os << "\nstep time on the critical rank, ms\n";
  Table time({"EP", "DP", "imbalance", "experts", "attention", "rest", "LM head", "all-to-all",
              "grad sync", "optimizer", "step", "all-to-all share", "tokens/s"});
  for (const auto& p : plans) {
    const auto& t = p.time;
    double worst = 1.0;
    for (double v : p.imbalance) worst = std::max(worst, v);
    time.add({p.ep, p.dp, Cell(worst, 3), Cell(t.experts * 1e3, 1), Cell(t.attention * 1e3, 1),
              Cell(t.rest * 1e3, 1), Cell(t.lm_head * 1e3, 1), Cell(t.all_to_all * 1e3, 1),
              Cell(t.grad_allreduce * 1e3, 1), Cell(t.optimizer * 1e3, 1), Cell(t.total() * 1e3, 1),
              Cell(t.all_to_all / t.total(), 3), Cell(double(p.tokens_per_step) / t.total(), 0)});
  }
  time.print(os);
}

nlohmann::ordered_json plans_json(const PlanRequest& r, const std::vector<LayoutPlan>& plans) {
  nlohmann::ordered_json layouts = nlohmann::ordered_json::array();
  for (const auto& p : plans) {
    const auto& m = p.memory;
    const auto& t = p.time;
    layouts.push_back(
        {{"ep", p.ep},
         {"dp", p.dp},
         {"rank_imbalance", p.imbalance},
         {"active_expert_share", r.active_expert_share},
         {"parameters",
          {{"replicated", p.parameters.replicated},
           {"router", p.parameters.router},
           {"expert_slots", p.parameters.expert_slots},
           {"experts", p.parameters.experts},
           {"trainable", p.parameters.trainable_replicated + p.parameters.trainable_experts}}},
         {"memory_bytes",
          {{"replicated_weights", m.replicated_weights},
           {"expert_weights", m.expert_weights},
           {"gradients", m.gradients},
           {"optimizer", m.optimizer},
           {"activations", m.activations},
           {"exchange", m.exchange},
           {"logits", m.logits},
           {"dequantized", m.dequantized},
           {"runtime", m.runtime},
           {"total", m.total()},
           {"loading", m.loading},
           {"peak", m.peak()},
           {"capacity", p.capacity_bytes}}},
         {"fits", p.fits()},
         {"step_seconds",
          {{"experts", t.experts},
           {"attention", t.attention},
           {"rest", t.rest},
           {"lm_head", t.lm_head},
           {"all_to_all", t.all_to_all},
           {"grad_allreduce", t.grad_allreduce},
           {"optimizer", t.optimizer},
           {"total", t.total()}}},
         {"all_to_all_bytes_per_layer", t.all_to_all_bytes_per_layer},
         {"tokens_per_step", p.tokens_per_step},
         {"tokens_per_s", double(p.tokens_per_step) / t.total()}});
  }
  const auto& c = r.cluster;
  return {{"schema", "switchyard.plan/1"},
          {"cluster",
           {{"name", c.name},
            {"nodes", c.nodes},
            {"devices_per_node", c.devices_per_node},
            {"memory_gb", c.memory_gb},
            {"ranks_share_node", c.ranks_share_node},
            {"source", c.source}}},
          {"loads", r.loads_source},
          {"loads_ep", r.loads_ep},  // layouts of this EP size: the run's own placement
          {"layouts", layouts}};
}

}  // namespace switchyard
