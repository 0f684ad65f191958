// Dispatch and combine. Local permutation work (sort, gather, regroup) is kept apart from the two
// exchanges, which are the only collectives; both are autograd ops, so backward mirrors forward.
#include "parallel/all_to_all_dispatcher.h"

#include "common/errors.h"
#include "common/host_reads.h"
#include "parallel/all_to_all.h"

namespace switchyard {
namespace {

// Rows arrive source-major ([source rank][local expert]); experts want them expert-major.
// Returns the permutation that reorders them, built from the per-(source, expert) counts and
// their total `rows` (given, so repeat_interleave need not read it back from a GPU).
torch::Tensor expert_major_order(const torch::Tensor& counts_source_expert, int64_t ep,
                                 int64_t local_experts, int64_t rows) {
  auto device = counts_source_expert.device();
  auto chunk = torch::arange(ep * local_experts, torch::dtype(torch::kLong).device(device));
  auto key_of_chunk = (chunk % local_experts) * ep + chunk.div(local_experts, "floor");
  auto key_of_row = key_of_chunk.repeat_interleave(counts_source_expert.reshape(-1), 0, rows);
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
  const int64_t k = ids.size(1), ep = ep_->size(), local = num_local_experts(), slots = ep * local;
  auto device = hidden.device();

  DispatchHandle h;

  // ---- local permutation: assignments stably sorted by the global slot they go to -----------
  // Everything here stays on the device: no count is read back until the one read below, so a
  // GPU never waits in the middle of a layer. Dropped assignments sort after every slot (slot
  // `slots`), so the kept ones are a prefix whose length the counts give.
  auto flat_ids = ids.reshape(-1).to(device, torch::kLong);
  // The slot of each assignment: its expert's only copy, or copy (token index mod copies). In
  // the contiguous placement the slot is the expert id.
  torch::Tensor slot = flat_ids;
  if (!identity_) {
    // The tables move to the hidden states' device once and stay there (set_data keeps the
    // handles), so a forward does not copy them from the host in every layer.
    if (copy_slots_.device() != device) {
      copy_slots_.set_data(copy_slots_.to(device));
      copies_.set_data(copies_.to(device));
    }
    const auto &table = copy_slots_, &copies = copies_;
    auto token = torch::arange(flat_ids.numel(), flat_ids.options()).div(k, "floor");
    slot = replicated_ ? table.index({flat_ids, token.remainder(copies.index_select(0, flat_ids))})
                       : table.select(1, 0).index_select(0, flat_ids);
  }
  torch::Tensor expert = flat_ids;
  if (routing.dropped.defined()) {
    auto dropped = routing.dropped.reshape(-1).to(device);
    slot = slot.masked_fill(dropped, slots);
    expert = expert.masked_fill(dropped, num_experts_);
  }
  auto order = std::get<1>(slot.sort(/*stable=*/true, 0, false));  // t * k + choice
  // Counts by scatter-add, not bincount, which reads its input's maximum on a GPU.
  auto count = [&](const torch::Tensor& bins, int64_t n) {
    return torch::zeros({n + 1}, bins.options())
        .scatter_add_(0, bins, torch::ones_like(bins))
        .narrow(0, 0, n);
  };
  auto routed = count(expert, num_experts_);
  auto routed_slots = identity_ ? routed : count(slot, slots);

  // ---- the one read: counts to the host --------------------------------------------------------
  // With EP > 1 the per-(source, slot) counts are exchanged first, on the device (NCCL needs
  // device memory), and read together with this rank's.
  torch::Tensor counts_source_expert;
  std::vector<torch::Tensor> to_read{routed, routed_slots};
  if (ep > 1) {
    counts_source_expert =
        ep_->all_to_all_v(routed_slots.reshape({slots, 1}), std::vector<int64_t>(ep, local),
                          std::vector<int64_t>(ep, local))
            .reshape({ep, local});
    to_read.push_back(counts_source_expert.reshape(-1));
  }
  const std::vector<int64_t> host = read_counts_to_host(torch::cat(to_read));
  const auto at = host.begin();
  h.routed_per_expert.assign(at, at + num_experts_);
  const std::vector<int64_t> per_slot(at + num_experts_, at + num_experts_ + slots);
  int64_t kept = 0;
  for (int64_t c : per_slot) kept += c;
  h.num_dropped = flat_ids.numel() - kept;

  h.rows = TokenRows::from_order(order, k, kept);
  h.weight_of_row = routing.topk_weights.reshape(-1).index_select(
      0, order.narrow(0, 0, kept).to(routing.topk_weights.device()));
  auto permuted = copy_tokens_to_rows(hidden, h.rows);

  DispatchedTokens out;
  if (ep == 1) {
    out.tokens_per_expert = per_slot;
    out.hidden = permuted;
    return {std::move(out), std::move(h)};
  }

  // ---- exchange the rows --------------------------------------------------------------------
  const auto received = at + num_experts_ + slots;  // [source rank][local slot]
  h.send_counts.assign(size_t(ep), 0);
  h.recv_counts.assign(size_t(ep), 0);
  out.tokens_per_expert.assign(size_t(local), 0);
  for (int64_t r = 0; r < ep; ++r) {
    for (int64_t s = 0; s < local; ++s) {
      h.send_counts[size_t(r)] += per_slot[size_t(r * local + s)];
      h.recv_counts[size_t(r)] += received[r * local + s];
      out.tokens_per_expert[size_t(s)] += received[r * local + s];
    }
  }
  int64_t rows_in = 0;
  for (int64_t c : h.recv_counts) rows_in += c;

  auto rows = all_to_all_v_with_grad(ep_, permuted, h.send_counts, h.recv_counts);
  auto to_expert_major = expert_major_order(counts_source_expert, ep, local, rows_in);
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
  SY_CHECK(back.size(0) == h.rows.token_of_row.size(0), "combine: ", back.size(0),
           " rows came back for ", h.rows.token_of_row.size(0), " assignments");
  // Weights are cast to the activations' dtype, as Hugging Face's Qwen2MoeSparseMoeBlock does.
  auto weighted = back * h.weight_of_row.to(back.scalar_type()).unsqueeze(1);
  return sum_rows_to_tokens(weighted, h.rows);
}

}  // namespace switchyard
