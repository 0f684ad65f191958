#include "trainer/live_placement.h"

#include <chrono>

#include "common/errors.h"
#include "parallel/expert_migration.h"

namespace switchyard {

int64_t PlacementChange::layers_moved() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.slots_changed > 0 ? 1 : 0;
  return n;
}

LivePlacement::LivePlacement(int64_t interval, double min_gain, const Trainer& trainer,
                             ProcessGroups groups)
    : interval_(interval),
      min_gain_(min_gain),
      groups_(std::move(groups)),
      device_(trainer.model().device()) {
  SY_CHECK(interval_ > 0, "live re-placement: interval ", interval_, " must be positive");
  const auto blocks = trainer.model().moe_blocks();
  SY_CHECK(!blocks.empty(), "parallel.rebalance_interval: the model has no MoE layer");
  num_layers_ = int64_t(blocks.size());
  num_experts_ = blocks.front()->dispatcher().num_experts();
  counts_.assign(size_t(num_layers_ * num_experts_), 0);
}

void LivePlacement::record(const StepMetrics& m) {
  SY_CHECK(int64_t(m.layer_stats.size()) == num_layers_,
           "live re-placement: ", m.layer_stats.size(), " layers of statistics for ", num_layers_,
           " MoE layers");
  for (int64_t l = 0; l < num_layers_; ++l) {
    const auto& tokens = m.layer_stats[size_t(l)].expert_tokens;
    SY_CHECK(int64_t(tokens.size()) == num_experts_, "live re-placement: ", tokens.size(),
             " expert counts for ", num_experts_, " experts");
    for (int64_t e = 0; e < num_experts_; ++e)
      counts_[size_t(l * num_experts_ + e)] += tokens[size_t(e)];
  }
}

std::vector<int64_t> LivePlacement::global_counts() const {
  // Integer counts: the world sum is exact, so every rank balances the same loads.
  auto t = torch::tensor(counts_, torch::kLong);
  if (groups_.world->size() > 1) {
    // On the device the communicator works on (a bare NCCL group takes GPU tensors only).
    auto on_device = t.to(device_);
    groups_.world->all_reduce(on_device);
    t = on_device.cpu();
  }
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

void LivePlacement::restore_counts(const std::vector<int64_t>& counts, int64_t step) {
  SY_CHECK(counts.empty() || counts.size() == counts_.size(), "live re-placement: ", counts.size(),
           " saved expert loads, the model has ", num_layers_, " x ", num_experts_);
  counts_.assign(counts_.size(), 0);
  if (groups_.world->rank() == 0 && !counts.empty()) counts_ = counts;
  first_step_ = step / interval_ * interval_ + 1;
}

PlacementChange LivePlacement::rebalance(Trainer& trainer, int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  const auto global = global_counts();
  PlacementChange change;
  change.step = step;
  change.first_step = first_step_;
  change.placements = trainer.expert_placements();
  const int ep = groups_.ep_size();
  for (int64_t l = 0; l < num_layers_; ++l) {
    LayerPlacement& current = change.placements[size_t(l)];
    std::vector<double> load(global.begin() + l * num_experts_,
                             global.begin() + (l + 1) * num_experts_);
    const int64_t slots = int64_t(current.slots.size() * current.slots.front().size());
    PlacementChange::Layer layer;
    layer.before = max_over_mean(rank_loads(current, load));
    LayerPlacement balanced = balanced_layer(load, ep, slots - num_experts_);
    layer.after = max_over_mean(rank_loads(balanced, load));
    if (layer.after < layer.before * (1.0 - min_gain_)) {
      layer.slots_changed = slots_changed(current, balanced);
      current = std::move(balanced);
    } else {
      layer.after = layer.before;  // kept: the prediction is the current placement's
    }
    change.layers.push_back(layer);
  }
  trainer.set_expert_placements(change.placements);
  counts_.assign(counts_.size(), 0);
  first_step_ = step + 1;
  change.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return change;
}

std::string LivePlacement::placement_json(const Trainer& trainer, int64_t step) const {
  Placement p;
  p.num_experts = num_experts_;
  p.expert_parallel = groups_.ep_size();
  p.layers = trainer.expert_placements();
  p.slots_per_rank = int64_t(p.layers.front().slots.front().size());
  p.source = {{"live_replacement_step", step}};
  return p.to_json().dump();
}

}  // namespace switchyard
