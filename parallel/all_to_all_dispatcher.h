// The token dispatcher of expert parallelism: permute tokens by expert, send them to the ranks
// that own those experts, and bring the expert outputs back, weighted and summed per token.
#pragma once

#include <torch/torch.h>

#include <utility>
#include <vector>

#include "parallel/communicator.h"
#include "routers/gating.h"

namespace switchyard {

/// Rows handed to this rank's experts, grouped by local expert (expert-major, and within an
/// expert by source rank, then by token order on that rank).
struct DispatchedTokens {
  torch::Tensor hidden;                    ///< [R, H]
  std::vector<int64_t> tokens_per_expert;  ///< one count per local expert, summing to R
};

/// Everything combine needs to undo a dispatch (the DeepEP handle). Counts live on the host.
struct DispatchHandle {
  int64_t num_tokens = 0;
  torch::Tensor token_of_row;        ///< [N] source token of each kept assignment, in expert order
  torch::Tensor weight_of_row;       ///< [N] its combine weight (carries the router's gradient)
  std::vector<int64_t> send_counts;  ///< rows sent to each EP peer
  std::vector<int64_t> recv_counts;  ///< rows received from each EP peer
  torch::Tensor rows_to_source_order;      ///< [R] expert-major -> source-major (EP > 1 only)
  std::vector<int64_t> routed_per_expert;  ///< [E] assignments this rank sent to each expert
  int64_t num_dropped = 0;                 ///< assignments capacity dropped on this rank
};

/// Stateless apart from its shape and group; one instance per MoE block.
///   usage: AllToAllDispatcher d(60, groups.ep);
///          auto [tokens, handle] = d.dispatch(hidden, routing);
///          auto y = d.combine(experts->forward(tokens.hidden, tokens.tokens_per_expert), handle);
class AllToAllDispatcher {
 public:
  /// Experts are split into EP blocks of consecutive ids: rank r owns
  /// [r * E / EP, (r + 1) * E / EP). Throws ConfigError when EP does not divide E.
  AllToAllDispatcher(int64_t num_experts, CommunicatorPtr ep_group);

  /// hidden [T, H], routing.topk_ids/topk_weights/dropped [T, k]. Collective over the EP group.
  std::pair<DispatchedTokens, DispatchHandle> dispatch(const torch::Tensor& hidden,
                                                       const Routing& routing) const;

  /// expert_output [R, H] in dispatch's row order -> [T, H]: sum over each token's kept
  /// assignments of weight * expert output; zero for a token whose assignments all dropped.
  torch::Tensor combine(const torch::Tensor& expert_output, const DispatchHandle& handle) const;

  int64_t num_experts() const { return num_experts_; }
  int64_t num_local_experts() const { return num_experts_ / ep_->size(); }
  int64_t first_local_expert() const { return ep_->rank() * num_local_experts(); }

 private:
  int64_t num_experts_;
  CommunicatorPtr ep_;
};

}  // namespace switchyard
