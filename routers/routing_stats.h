// RoutingStats: the load-balance numbers a router paper reports, computed from one Routing.
// Later the trainer logs them per rank and per layer, and the eval tool aggregates them.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "routers/gating.h"

namespace switchyard {

struct RoutingStats {
  int64_t num_tokens = 0;
  int64_t num_assignments = 0;         ///< tokens * k
  int64_t num_dropped = 0;             ///< assignments dropped by capacity
  std::vector<int64_t> expert_tokens;  ///< kept assignments per expert
  double utilisation = 0;              ///< share of experts that received at least one token
  double max_over_mean = 0;            ///< max expert load / mean expert load (1 = perfect balance)
  double cv = 0;             ///< coefficient of variation of the load (population std / mean)
  double token_entropy = 0;  ///< mean over tokens of the routing distribution's entropy (nats)
  double load_entropy = 0;   ///< entropy of the normalised load distribution (nats)
  double drop_rate = 0;      ///< num_dropped / num_assignments

  /// Statistics of one routing decision over E experts.
  static RoutingStats from_routing(const Routing& routing, int64_t num_experts);

  /// Sums counts of several decisions (ranks, micro-batches) and recomputes the load ratios;
  /// token entropy is averaged weighted by tokens.
  static RoutingStats merge(const std::vector<RoutingStats>& parts);

  /// Load-derived fields (utilisation, max/mean, cv, load entropy, drop rate) from the counts.
  void recompute_load_metrics();

  std::string to_json() const;
};

/// Each token's entropy of its routing distribution (scores renormalised, for sigmoid gating),
/// [T] in double on the scores' device, outside autograd: RoutingStats::from_routing takes the
/// mean, the trainer sums it on the device and reads it with the step's other numbers.
torch::Tensor per_token_routing_entropy(const Routing& routing);

}  // namespace switchyard
