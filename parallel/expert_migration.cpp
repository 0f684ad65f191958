#include "parallel/expert_migration.h"

#include <map>

#include "common/errors.h"

namespace switchyard {

int64_t MigrationPlan::rows_received() const {
  int64_t n = 0;
  for (int64_t c : recv_counts) n += c;
  return n;
}

MigrationPlan migration_plan(const LayerPlacement& from, const LayerPlacement& to, int rank) {
  const size_t ranks = from.slots.size();
  SY_CHECK(ranks == to.slots.size() && ranks > 0 && size_t(rank) < ranks,
           "expert migration: placements of ", from.slots.size(), " and ", to.slots.size(),
           " ranks (rank ", rank, ")");
  const size_t slots = from.slots.front().size();
  // The first holder of each expert under `from`, and where each rank holds it.
  std::map<int64_t, std::pair<int, int64_t>> first;
  std::vector<std::map<int64_t, int64_t>> held(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    SY_CHECK(from.slots[r].size() == slots && to.slots[r].size() == slots,
             "expert migration: rank ", r, " has ", from.slots[r].size(), " slots before and ",
             to.slots[r].size(), " after, expected ", slots);
    for (size_t s = 0; s < slots; ++s) {
      const int64_t e = from.slots[r][s];
      first.emplace(e, std::make_pair(int(r), int64_t(s)));
      held[r].emplace(e, int64_t(s));
    }
  }
  // Where new slot s of rank d takes its row from.
  auto source = [&](size_t d, size_t s) -> std::pair<int, int64_t> {
    const int64_t e = to.slots[d][s];
    if (auto it = held[d].find(e); it != held[d].end()) return {int(d), it->second};
    auto it = first.find(e);
    SY_CHECK(it != first.end(), "expert migration: expert ", e, " is in no slot before");
    return it->second;
  };
  MigrationPlan plan;
  plan.send_slots.resize(ranks);
  plan.recv_counts.assign(ranks, 0);
  for (size_t s = 0; s < slots; ++s) {
    const auto [r, old_slot] = source(size_t(rank), s);
    plan.local_source.push_back(r == rank ? old_slot : -1);
    plan.arrives_from.push_back(r == rank ? -1 : r);
    if (r != rank) ++plan.recv_counts[size_t(r)];
  }
  for (size_t d = 0; d < ranks; ++d) {
    if (int(d) == rank) continue;
    for (size_t s = 0; s < slots; ++s) {
      const auto [r, old_slot] = source(d, s);
      if (r == rank) plan.send_slots[d].push_back(old_slot);
    }
  }
  return plan;
}

void migrate_expert_rows(torch::Tensor& tensor, const MigrationPlan& plan, Communicator& ep) {
  const int64_t slots = int64_t(plan.local_source.size());
  SY_CHECK(tensor.dim() >= 1 && tensor.size(0) == slots, "expert migration: a tensor of shape ",
           tensor.sizes(), " for ", slots, " slots");
  torch::NoGradGuard no_grad;
  const auto device = tensor.device();
  auto index = [&](const std::vector<int64_t>& rows) {
    return torch::tensor(rows, torch::kLong).to(device);
  };
  std::vector<int64_t> send_rows, send_counts;
  for (const auto& rows : plan.send_slots) {
    send_rows.insert(send_rows.end(), rows.begin(), rows.end());
    send_counts.push_back(int64_t(rows.size()));
  }
  torch::Tensor received;
  if (ep.size() > 1) {
    // Every rank takes part, even with nothing to send: the peers' exchange is collective.
    auto send = tensor.index_select(0, index(send_rows)).contiguous();
    received = ep.all_to_all_v(send, send_counts, plan.recv_counts);
  }
  // Rows from peer p arrive in p's block, in the order of this rank's new slots.
  std::vector<int64_t> offset(plan.recv_counts.size(), 0);
  for (size_t p = 1; p < offset.size(); ++p) offset[p] = offset[p - 1] + plan.recv_counts[p - 1];
  std::vector<torch::Tensor> rows;
  rows.reserve(size_t(slots));
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t local = plan.local_source[size_t(s)];
    if (local >= 0) {
      rows.push_back(tensor[local]);
    } else {
      const int p = plan.arrives_from[size_t(s)];
      rows.push_back(received[offset[size_t(p)]++]);
    }
  }
  // Stacked into a new tensor first: copying row by row in place could overwrite a row that a
  // later slot still reads.
  tensor.copy_(torch::stack(rows));
}

int64_t slots_changed(const LayerPlacement& from, const LayerPlacement& to) {
  int64_t n = 0;
  for (size_t r = 0; r < from.slots.size() && r < to.slots.size(); ++r)
    for (size_t s = 0; s < from.slots[r].size() && s < to.slots[r].size(); ++s)
      n += from.slots[r][s] != to.slots[r][s] ? 1 : 0;
  return n;
}

}  // namespace switchyard
