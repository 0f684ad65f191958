// Moving expert slots between ranks when a layer's placement changes during training (live
// re-placement): every tensor that holds one row per expert slot — weights, quantized codes and
// scales, AdamW moments — is rearranged from the old placement's slots to the new one's, rows
// travelling between EP ranks in one uneven all-to-all per tensor.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "parallel/communicator.h"
#include "parallel/placement.h"

namespace switchyard {

/// Where each of this rank's new slots takes its row from: this rank's own old slot when it
/// held the expert already, else the expert's first holder under `from` (rank-major, then slot
/// order, as LayerPlacement::owned). Every rank computes the same plan from the two placements.
struct MigrationPlan {
  /// Per new local slot: the old local slot to copy, or -1 when the row arrives from a peer.
  std::vector<int64_t> local_source;
  /// Old local slots to send to each peer, in the order of the peer's new slots.
  std::vector<std::vector<int64_t>> send_slots;
  /// Per peer: rows that arrive from it, in the order of this rank's new slots.
  std::vector<int64_t> recv_counts;
  /// Per new local slot that arrives from a peer: the peer (else -1).
  std::vector<int> arrives_from;

  /// Rows this rank receives (slots that change rank).
  int64_t rows_received() const;
};

/// `from` and `to` must have the same ranks, the same slot count per rank and hold every expert.
MigrationPlan migration_plan(const LayerPlacement& from, const LayerPlacement& to, int rank);

/// Rearranges `tensor` ([slots, ...], this rank's rows under `from`) in place into its rows under
/// `to`. Collective over `ep` (every rank calls it with its own tensor of the same layer); a
/// no-op exchange when nothing crosses ranks. The tensor keeps its storage, so parameters stay
/// the ones the optimizer and autograd know.
void migrate_expert_rows(torch::Tensor& tensor, const MigrationPlan& plan, Communicator& ep);

/// Slots (over all ranks) whose expert changes: what a re-placement moves.
int64_t slots_changed(const LayerPlacement& from, const LayerPlacement& to);

}  // namespace switchyard
