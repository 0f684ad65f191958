// Shared gating: scores, top-k, renormalisation, capacity and the router losses.
#include "routers/gating.h"

#include <cmath>
#include <tuple>

namespace switchyard {

GatingOptions GatingOptions::from_config(const config::RouterConfig& r, int64_t num_experts) {
  GatingOptions o;
  o.num_experts = num_experts;
  o.top_k = r.top_k();
  o.score_function = r.score_function();
  o.norm_topk_prob = r.norm_topk_prob();
  o.capacity_factor = r.capacity_factor();
  o.aux_loss_coef = r.aux_loss_coef();
  o.z_loss_coef = r.z_loss_coef();
  return o;
}

namespace {
// Softmax of bf16/fp16 logits loses too much to rank experts reliably: compute in fp32.
torch::Tensor at_least_fp32(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat);
}
}  // namespace

int64_t expert_capacity(int64_t num_tokens, const GatingOptions& o) {
  if (o.capacity_factor <= 0) return -1;
  return static_cast<int64_t>(
      std::ceil(o.capacity_factor * double(num_tokens * o.top_k) / double(o.num_experts)));
}

torch::Tensor capacity_drop_mask(const torch::Tensor& topk_ids, int64_t num_experts,
                                 int64_t capacity) {
  const int64_t T = topk_ids.size(0), k = topk_ids.size(1);
  if (capacity < 0) return torch::zeros({T, k}, topk_ids.options().dtype(torch::kBool));
  // Slot-major order: row s*T + t is token t's s-th choice.
  auto one_hot = torch::one_hot(topk_ids.t().reshape({-1}), num_experts);  // [k*T, E]
  auto position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1;               // rank within expert
  return (position >= capacity).reshape({k, T}).t().contiguous();
}

torch::Tensor capacity_drop_mask(const torch::Tensor& topk_ids, const GatingOptions& o) {
  const int64_t T = topk_ids.size(0), k = topk_ids.size(1), E = o.num_experts;
  if (o.capacity_factor <= 0) return torch::zeros({T, k}, topk_ids.options().dtype(torch::kBool));
  // one_hot[s][t][e]: token t's s-th choice is expert e.
  auto one_hot = torch::one_hot(topk_ids.t().to(torch::kLong), E).reshape({k, T, E});
  auto counts = one_hot.sum(1);  // [k, E] this rank's assignments per slot and expert
  torch::Tensor slot_totals = counts, lower_ranks = torch::zeros_like(counts);
  auto total_tokens = torch::full({}, T, counts.options());
  Communicator* group = o.balance_group.get();
  if (group && group->size() > 1) {
    // Every rank's [k * E] counts and its token count, in one all-gather (on the ids' device).
    auto mine = torch::cat({counts.reshape(-1), total_tokens.reshape({1})});
    auto all = group->all_gather(mine).reshape({group->size(), k * E + 1});
    auto all_counts = all.narrow(1, 0, k * E).reshape({group->size(), k, E});
    slot_totals = all_counts.sum(0);
    lower_ranks = all_counts.narrow(0, 0, group->rank()).sum(0);
    total_tokens = all.select(1, k * E).sum();
  }
  // Queue position of each assignment at its expert: every earlier slot of every rank, then this
  // slot on lower ranks, then this rank's earlier tokens in this slot.
  auto ahead = (slot_totals.cumsum(0) - slot_totals + lower_ranks).unsqueeze(1);  // [k, 1, E]
  auto position = ((one_hot.cumsum(1) - 1 + ahead) * one_hot).sum(-1);            // [k, T]
  // ceil(capacity_factor * T * k / E) in double, as expert_capacity computes it on the host.
  auto capacity = (total_tokens * k).to(torch::kDouble).mul(o.capacity_factor).div(E).ceil();
  return position.ge(capacity.to(position.device())).t().contiguous();
}

torch::Tensor load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& topk_ids,
                                  int64_t num_experts, Communicator* balance_group) {
  const int64_t T = probs.size(0);
  // Counts and the token total travel together: [n_0 .. n_{E-1}, T].
  auto counts = torch::zeros({num_experts + 1}, probs.options());
  counts.narrow(0, 0, num_experts)
      .index_add_(0, topk_ids.reshape({-1}), torch::ones({topk_ids.numel()}, probs.options()));
  counts[num_experts] = double(T);
  // Every rank of the group takes part, also one with no tokens, or the others would wait.
  if (balance_group && balance_group->size() > 1) balance_group->all_reduce(counts);
  if (T == 0) return torch::zeros({}, probs.options());
  // The total is at least this rank's T > 0; dividing by the tensor keeps the device unsynced.
  auto f = counts.narrow(0, 0, num_experts) / counts[num_experts];
  auto P = probs.mean(0);
  return (f * P).sum() * double(num_experts);
}

torch::Tensor router_z_loss(const torch::Tensor& logits) {
  if (logits.size(0) == 0) return torch::zeros({}, at_least_fp32(logits).options());
  return at_least_fp32(logits).logsumexp(-1).square().mean();
}

Routing gate(const torch::Tensor& logits, const GatingOptions& o,
             const torch::Tensor& selection_bias) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == o.num_experts,
              "router logits must be [tokens, ", o.num_experts, "], got ", logits.sizes());
  TORCH_CHECK(o.top_k >= 1 && o.top_k <= o.num_experts, "top_k ", o.top_k, " not in [1, ",
              o.num_experts, "]");
  Routing r;
  r.logits = logits;
  auto l32 = at_least_fp32(logits);
  r.scores = o.score_function == config::SIGMOID ? l32.sigmoid() : l32.softmax(-1);

  torch::Tensor weights, ids;
  if (selection_bias.defined()) {
    TORCH_CHECK(selection_bias.dim() == 1 && selection_bias.size(0) == o.num_experts,
                "expert bias must be [", o.num_experts, "], got ", selection_bias.sizes());
    // The bias chooses; the unbiased scores weigh. No gradient flows through the choice.
    auto biased = r.scores.detach() + selection_bias.to(r.scores.device(), r.scores.scalar_type());
    ids = std::get<1>(biased.topk(o.top_k, /*dim=*/-1, /*largest=*/true, /*sorted=*/true));
    weights = r.scores.gather(-1, ids);
  } else {
    std::tie(weights, ids) = r.scores.topk(o.top_k, /*dim=*/-1, /*largest=*/true, /*sorted=*/true);
  }
  if (o.norm_topk_prob) weights = weights / weights.sum(-1, /*keepdim=*/true).clamp_min(1e-20);
  r.topk_ids = ids;
  r.dropped = capacity_drop_mask(ids, o);
  r.topk_weights = weights.masked_fill(r.dropped, 0.0);

  // Sigmoid scores do not sum to one; the balancing loss wants a distribution per token.
  auto probs = o.score_function == config::SIGMOID
                   ? r.scores / r.scores.sum(-1, true).clamp_min(1e-20)
                   : r.scores;
  r.aux_loss = load_balancing_loss(probs, ids, o.num_experts, o.balance_group.get());
  r.z_loss = router_z_loss(logits);
  r.loss = r.aux_loss * o.aux_loss_coef + r.z_loss * o.z_loss_coef;
  return r;
}

}  // namespace switchyard
