// Live re-placement (parallel.rebalance_interval): the training loop counts each MoE layer's
// expert loads, and every N steps the ranks agree on a balanced placement from the loads of the
// N steps since the last one (summed over the world, so every rank computes the same one) and
// move the experts that change rank, with their AdamW moments, without a restart
// (Trainer::set_expert_placements).
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/placement.h"
#include "parallel/process_groups.h"
#include "trainer/trainer.h"

namespace switchyard {

/// One re-placement as metrics.jsonl records it ({"kind": "placement", ...}).
struct PlacementChange {
  int64_t step = 0;        ///< taken after this optimizer step
  int64_t first_step = 0;  ///< the loads are those of steps [first_step, step]
  struct Layer {
    /// Predicted rank max/mean on the window's loads under the old and the new placement (the
    /// new one is adopted only when it gains more than parallel.rebalance_min_gain).
    double before = 0, after = 0;
    int64_t slots_changed = 0;  ///< over all ranks; 0 when the layer kept its placement
  };
  std::vector<Layer> layers;
  std::vector<LayerPlacement> placements;  ///< in use from the next step
  double seconds = 0;                      ///< wall time of the agreement and the moves

  int64_t layers_moved() const;
};

///   usage: LivePlacement live(parallel.rebalance_interval(), parallel.rebalance_min_gain(),
///                             trainer, groups);
///          live.record(m);
///          if (live.due(m.step)) log.write_placement(live.rebalance(trainer, m.step));
class LivePlacement {
 public:
  /// `trainer`'s model gives the layer and expert counts; its placements keep their slot counts
  /// (the replicas of the placement in use) across re-placements.
  LivePlacement(int64_t interval, double min_gain, const Trainer& trainer, ProcessGroups groups);

  /// Adds a finished step's kept assignments per expert (this rank's). Not collective.
  void record(const StepMetrics& m);
  /// Whether a re-placement follows step `step`.
  bool due(int64_t step) const { return step > 0 && step % interval_ == 0; }

  /// Collective over the world: sums the window's loads over the world, balances each layer
  /// (parallel/placement.h's balanced_layer, the slot count in use) and moves the layers that
  /// gain enough. Starts the next window.
  PlacementChange rebalance(Trainer& trainer, int64_t step);

  /// Collective over the world: the loads counted since the last re-placement, summed over the
  /// world ([layers x experts], row-major), for a checkpoint.
  std::vector<int64_t> global_counts() const;
  /// A resumed run continues the window of the run that saved (`counts` from its
  /// global_counts()): rank 0 keeps them and the other ranks start from zero, so the next world
  /// sum is the uninterrupted run's. Throws Error when the shape differs.
  void restore_counts(const std::vector<int64_t>& counts, int64_t step);

  /// `trainer`'s placements as a switchyard.placement/1 file's JSON (what a checkpoint keeps).
  std::string placement_json(const Trainer& trainer, int64_t step) const;

 private:
  int64_t interval_;
  double min_gain_;
  ProcessGroups groups_;
  torch::Device device_;  ///< the model's: the world sum runs there
  int64_t num_layers_, num_experts_;
  int64_t first_step_ = 1;
  std::vector<int64_t> counts_;  ///< this rank's, [layers x experts]
};

}  // namespace switchyard
