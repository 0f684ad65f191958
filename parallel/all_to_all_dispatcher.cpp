// Dispatch and combine. Local permutation work (sort, gather, regroup) is kept apart from the two
// exchanges, which are the only collectives; both are autograd ops, so backward mirrors forward.
#include "parallel/all_to_all_dispatcher.h"

#include "common/errors.h"
#include "parallel/all_to_all.h"

namespace switchyard {
namespace {

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// Rows arrive source-major ([source rank][local expert]); experts want them expert-major.
// Returns the permutation that reorders them, built from the per-(source, expert) counts.
torch::Tensor expert_major_order(const torch::Tensor& counts_source_expert, int64_t ep,
                                 int64_t local_experts) {
  auto device = counts_source_expert.device();
  auto chunk = torch::arange(ep * local_experts, torch::dtype(torch::kLong).device(device));
  auto key_of_chunk = (chunk % local_experts) * ep + chunk.div(local_experts, "floor");
  auto key_of_row = key_of_chunk.repeat_interleave(counts_source_expert.reshape(-1));
  return std::get<1>(key_of_row.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
}

}  // namespace

AllToAllDispatcher::AllToAllDispatcher(int64_t num_experts, CommunicatorPtr ep_group,
                                       LayerPlacement placement)
    : num_experts_(num_experts), ep_(std::move(ep_group)), placement_(std::move(placement)) {
  SY_CHECK(ep_, "AllToAllDispatcher: no EP group");
  const int ep = ep_->size();
  if (placement_.slots.empty()) {
    if (num_experts_ <= 0 || num_experts_ % ep != 0)
      throw ConfigError(detail::concat("parallel.expert_parallel = ", ep,
                                       ": must divide the number of experts (", num_experts_, ")"),
                        "parallel.expert_parallel");
    placement_ = Placement::contiguous(1, num_experts_, ep).layers.front();
  }
  if (int64_t(placement_.slots.size()) != ep)
    throw ConfigError(detail::concat("placement: ", placement_.slots.size(), " ranks for EP ", ep),
                      "parallel.placement");
  const int64_t slots = int64_t(placement_.slots.front().size());
  std::vector<std::vector<int64_t>> where(static_cast<size_t>(num_experts_));
  for (int r = 0; r < ep; ++r) {
    SY_CHECK(int64_t(placement_.slots[size_t(r)].size()) == slots,
             "placement: ranks hold different numbers of slots");
    for (int64_t s = 0; s < slots; ++s) {
      const int64_t e = placement_.slots[size_t(r)][size_t(s)];
      SY_CHECK(e >= 0 && e < num_experts_, "placement: expert ", e, " of ", num_experts_);
      where[size_t(e)].push_back(int64_t(r) * slots + s);
    }
  }
  int64_t most = 1;
  for (int64_t e = 0; e < num_experts_; ++e) {
    if (where[size_t(e)].empty())
      throw ConfigError(detail::concat("placement: expert ", e, " has no slot"),
                        "parallel.placement");
    most = std::max(most, int64_t(where[size_t(e)].size()));
  }
  replicated_ = most > 1;
  identity_ = slots * ep == num_experts_;
  for (int64_t g = 0; identity_ && g < num_experts_; ++g)
    identity_ = placement_.slots[size_t(g / slots)][size_t(g % slots)] == g;
  copy_slots_ = torch::empty({num_experts_, most}, torch::kLong);
  copies_ = torch::empty({num_experts_}, torch::kLong);
  for (int64_t e = 0; e < num_experts_; ++e) {
    const auto& w = where[size_t(e)];
    copies_[e] = int64_t(w.size());
    for (int64_t c = 0; c < most; ++c) copy_slots_[e][c] = w[size_t(c) % w.size()];
  }
}

std::pair<DispatchedTokens, DispatchHandle> AllToAllDispatcher::dispatch(
    const torch::Tensor& hidden, const Routing& routing) const {
  SY_CHECK(hidden.dim() == 2, "dispatch: hidden must be [tokens, hidden], got ", hidden.sizes());
  const auto& ids = routing.topk_ids;
  SY_CHECK(ids.dim() == 2 && ids.size(0) == hidden.size(0), "dispatch: topk_ids ", ids.sizes(),
           " does not match hidden ", hidden.sizes());
  const int64_t k = ids.size(1), ep = ep_->size(), local = num_local_experts();
  auto device = hidden.device();

  DispatchHandle h;
  h.num_tokens = hidden.size(0);

  // ---- local permutation: kept assignments, stably sorted by the global slot they go to -------
  auto flat_ids = ids.reshape(-1).to(device, torch::kLong);
  torch::Tensor kept = torch::arange(flat_ids.numel(), flat_ids.options());
  if (routing.dropped.defined()) {
    auto keep_mask = routing.dropped.reshape(-1).logical_not().to(device);
    kept = keep_mask.nonzero().reshape(-1);
    h.num_dropped = flat_ids.numel() - kept.numel();
  }
  auto expert_of_kept = flat_ids.index_select(0, kept);
  // The slot of each assignment: its expert's only copy, or copy (token index mod copies). In
  // the contiguous placement the slot is the expert id.
  torch::Tensor slot_of_kept = expert_of_kept;
  if (!identity_) {
    // The tables move to the hidden states' device once and stay there (set_data keeps the
    // handles), so a forward does not copy them from the host in every layer.
    if (copy_slots_.device() != device) {
      copy_slots_.set_data(copy_slots_.to(device));
      copies_.set_data(copies_.to(device));
    }
    const auto &table = copy_slots_, &copies = copies_;
    slot_of_kept =
        replicated_
            ? table.index({expert_of_kept,
                           kept.div(k, "floor").remainder(copies.index_select(0, expert_of_kept))})
            : table.select(1, 0).index_select(0, expert_of_kept);
  }
  auto order = std::get<1>(slot_of_kept.sort(/*stable=*/true, 0, false));
  auto assignment = kept.index_select(0, order);  // t * k + choice, in slot order
  h.token_of_row = assignment.div(k, "floor");
  h.weight_of_row = routing.topk_weights.reshape(-1).index_select(
      0, assignment.to(routing.topk_weights.device()));
  auto routed = torch::bincount(expert_of_kept, /*weights=*/{}, num_experts_);
  auto routed_slots =
      identity_ ? routed : torch::bincount(slot_of_kept, /*weights=*/{}, ep * local);
  auto permuted = hidden.index_select(0, h.token_of_row);
  h.routed_per_expert = to_vector(routed);

  DispatchedTokens out;
  if (ep == 1) {
    out.tokens_per_expert = identity_ ? h.routed_per_expert : to_vector(routed_slots);
    out.hidden = permuted;
    return {std::move(out), std::move(h)};
  }

  // ---- exchange: per-slot counts first, then the rows ---------------------------------------
  // Counts travel as a tensor on the hidden states' device (NCCL needs device memory).
  auto counts_source_expert =
      ep_->all_to_all_v(routed_slots.reshape({ep * local, 1}), std::vector<int64_t>(ep, local),
                        std::vector<int64_t>(ep, local))
          .reshape({ep, local});
  h.send_counts = to_vector(routed_slots.reshape({ep, local}).sum(1));
  h.recv_counts = to_vector(counts_source_expert.sum(1));
  out.tokens_per_expert = to_vector(counts_source_expert.sum(0));

  auto rows = all_to_all_v_with_grad(ep_, permuted, h.send_counts, h.recv_counts);
  auto to_expert_major = expert_major_order(counts_source_expert, ep, local);
  h.rows_to_source_order = torch::empty_like(to_expert_major);
  h.rows_to_source_order.index_put_(
      {to_expert_major}, torch::arange(to_expert_major.numel(), to_expert_major.options()));
  out.hidden = rows.index_select(0, to_expert_major);
  return {std::move(out), std::move(h)};
}

torch::Tensor AllToAllDispatcher::combine(const torch::Tensor& expert_output,
                                          const DispatchHandle& h) const {
  torch::Tensor back = expert_output;
  if (ep_->size() > 1) {
    auto source_major = expert_output.index_select(0, h.rows_to_source_order);
    back = all_to_all_v_with_grad(ep_, source_major, h.recv_counts, h.send_counts);
  }
  SY_CHECK(back.size(0) == h.token_of_row.size(0), "combine: ", back.size(0),
           " rows came back for ", h.token_of_row.size(0), " assignments");
  // Weights are cast to the activations' dtype, as Hugging Face's Qwen2MoeSparseMoeBlock does.
  auto weighted = back * h.weight_of_row.to(back.scalar_type()).unsqueeze(1);
  return torch::zeros({h.num_tokens, back.size(1)}, back.options())
      .index_add(0, h.token_of_row, weighted);
}

}  // namespace switchyard
