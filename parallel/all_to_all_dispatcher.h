// The token dispatcher of expert parallelism: permute tokens by expert, send them to the ranks
// that own those experts, and bring the expert outputs back, weighted and summed per token.
#pragma once

#include <torch/torch.h>

#include <utility>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/placement.h"
#include "parallel/token_rows.h"
#include "routers/gating.h"

namespace switchyard {

/// Rows handed to this rank's expert slots, grouped by slot (slot-major, and within a slot by
/// source rank, then by token order on that rank).
struct DispatchedTokens {
  torch::Tensor hidden;                    ///< [R, H]
  std::vector<int64_t> tokens_per_expert;  ///< one count per local slot, summing to R
};

/// Everything combine needs to undo a dispatch (the DeepEP handle). Counts live on the host.
struct DispatchHandle {
  TokenRows rows;                      ///< each kept assignment's token, in expert order, and back
  torch::Tensor weight_of_row;         ///< [N] its combine weight (carries the router's gradient)
  std::vector<int64_t> send_counts;    ///< rows sent to each EP peer
  std::vector<int64_t> recv_counts;    ///< rows received from each EP peer
  torch::Tensor rows_to_source_order;  ///< [R] expert-major -> source-major (EP > 1 only)
  std::vector<int64_t> routed_per_expert;  ///< [E] assignments this rank sent to each expert
  int64_t num_dropped = 0;                 ///< assignments capacity dropped on this rank
};

/// Stateless apart from its shape, placement and group; one instance per MoE block.
///   usage: AllToAllDispatcher d(60, groups.ep);
///          auto [tokens, handle] = d.dispatch(hidden, routing);
///          auto y = d.combine(experts->forward(tokens.hidden, tokens.tokens_per_expert), handle);
class AllToAllDispatcher {
 public:
  /// `placement` says which global expert each rank's slots hold (parallel/placement.h); left
  /// empty, experts are split into EP blocks of consecutive ids: rank r owns
  /// [r * E / EP, (r + 1) * E / EP). An expert in several slots is replicated: each of its
  /// assignments goes to copy (source token index mod copies), in placement order, so every copy
  /// gets a share and the choice never depends on other ranks. Throws ConfigError when EP does
  /// not divide E (contiguous) or the placement does not fit E and EP.
  AllToAllDispatcher(int64_t num_experts, CommunicatorPtr ep_group, LayerPlacement placement = {});

  /// hidden [T, H], routing.topk_ids/topk_weights/dropped [T, k]. Collective over the EP group.
  std::pair<DispatchedTokens, DispatchHandle> dispatch(const torch::Tensor& hidden,
                                                       const Routing& routing) const;

  /// expert_output [R, H] in dispatch's row order -> [T, H]: sum over each token's kept
  /// assignments of weight * expert output; zero for a token whose assignments all dropped.
  torch::Tensor combine(const torch::Tensor& expert_output, const DispatchHandle& handle) const;

  int64_t num_experts() const { return num_experts_; }
  /// Expert slots on each rank, (E + R) / EP.
  int64_t num_local_experts() const { return int64_t(placement_.slots.front().size()); }
  /// The global expert each of this rank's slots holds, in slot order.
  const std::vector<int64_t>& local_experts() const {
    return placement_.slots[size_t(ep_->rank())];
  }
  const LayerPlacement& placement() const { return placement_; }

 private:
  int64_t num_experts_;
  CommunicatorPtr ep_;
  LayerPlacement placement_;
  /// [E, max copies] global slot (rank * slots + slot) of each copy, in placement order, the
  /// unused tail repeating the first; [E] number of copies. Moved to the device on first use.
  torch::Tensor copy_slots_, copies_;
  bool replicated_ = false;
  bool identity_ = false;  ///< slot g holds expert g (the contiguous placement)
};

}  // namespace switchyard
