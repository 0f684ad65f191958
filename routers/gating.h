// Gating shared by every router: score function, top-k, optional renormalisation, capacity
// dropping, and the auxiliary losses. Routers only produce logits; this turns them into a Routing.
#pragma once

#include <torch/torch.h>

#include "configs/switchyard.pb.h"
#include "parallel/communicator.h"

namespace switchyard {

/// Everything a router hands to the dispatcher and the loss. Shapes: T tokens, E experts, k.
struct Routing {
  torch::Tensor logits;        ///< [T, E] raw router outputs (router dtype)
  torch::Tensor scores;        ///< [T, E] softmax or sigmoid of logits, at least fp32
  torch::Tensor topk_ids;      ///< [T, k] int64 expert ids, best first
  torch::Tensor topk_weights;  ///< [T, k] combine weights, 0 where the assignment was dropped
  torch::Tensor dropped;       ///< [T, k] bool, true where capacity dropped the assignment
  torch::Tensor aux_loss;      ///< scalar, Switch/GShard load balancing E * sum_e f_e * P_e
  torch::Tensor z_loss;        ///< scalar, ST-MoE router z-loss mean(logsumexp(logits)^2)
  torch::Tensor loss;          ///< aux_loss_coef * aux_loss + z_loss_coef * z_loss
};

/// Gating hyper-parameters; `from_config` reads them from the run config's router section.
struct GatingOptions {
  int64_t num_experts = 0;
  int64_t top_k = 1;
  config::ScoreFunction score_function = config::SOFTMAX;
  bool norm_topk_prob = false;
  double capacity_factor = 0.0;  ///< <= 0: dropless
  double aux_loss_coef = 0.0;
  double z_loss_coef = 0.0;
  /// Ranks whose tokens together form the batch the load-balancing loss balances (the world,
  /// set by the trainer): their expert counts are summed before the loss is taken, so the loss,
  /// averaged over ranks, is the one a single process computes on the global batch and
  /// training does not depend on how the batch is split. Null: this rank's tokens alone.
  CommunicatorPtr balance_group;

  static GatingOptions from_config(const config::RouterConfig& router, int64_t num_experts);
};

/// logits [T, E] -> Routing. Scores are computed in fp32 (fp64 stays fp64, for gradient tests).
/// `selection_bias` [E] (router.expert_bias; undefined when off) is added to the scores when the
/// top-k experts are chosen, and only then: the combine weights are the chosen experts'
/// unbiased scores (DeepSeek-V3's aux-loss-free balancing), and the losses see unbiased scores.
///   usage: Routing r = gate(router_logits, GatingOptions::from_config(cfg.router(), 60));
Routing gate(const torch::Tensor& logits, const GatingOptions& options,
             const torch::Tensor& selection_bias = {});

/// Tokens an expert accepts out of a batch of `num_tokens`: ceil(capacity_factor * T * k / E);
/// -1 when dropless.
int64_t expert_capacity(int64_t num_tokens, const GatingOptions& options);

/// [T, k] bool: assignments beyond an expert's capacity. Priority is slot-major (every token's
/// first choice before any second choice), then token order, as in GShard and Switch.
torch::Tensor capacity_drop_mask(const torch::Tensor& topk_ids, int64_t num_experts,
                                 int64_t capacity);

/// The same rule over the batch of `options.balance_group`'s ranks (this rank's mask returned):
/// the batch is their tokens concatenated in rank order, the capacity counts all of them, and
/// within a slot a rank's assignments queue behind those of lower ranks. So the assignments
/// dropped are exactly those one process drops on the concatenated batch, whatever the split
/// (one all-gather of [k, E] counts per call; none without a group or when dropless).
torch::Tensor capacity_drop_mask(const torch::Tensor& topk_ids, const GatingOptions& options);

/// E * sum_e (n_e / T) * P_e, with n_e the number of top-k selections of expert e and P_e the
/// mean routing probability; equal to transformers' load_balancing_loss_func on one layer.
/// With `balance_group`, n_e and T are summed over its ranks (a count carries no gradient) while
/// P_e stays this rank's: the mean over equal-sized ranks is the global batch's loss.
torch::Tensor load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& topk_ids,
                                  int64_t num_experts, Communicator* balance_group = nullptr);

/// mean over tokens of logsumexp(logits)^2 (ST-MoE), computed in fp32.
torch::Tensor router_z_loss(const torch::Tensor& logits);

}  // namespace switchyard
