// The dispatcher alone, at whatever world size mpirun gives (EP = world): skewed routing, ranks
// that send or receive nothing, capacity drops, and dispatch -> combine with known experts.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/errors.h"
#include "common/host_reads.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/expert_migration.h"
#include "parallel/process_groups.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

// A routing decision written by hand: ids [T, k], weights [T, k], optional drops.
Routing routing_of(torch::Tensor ids, torch::Tensor weights, torch::Tensor dropped = {}) {
  Routing r;
  r.topk_ids = std::move(ids);
  r.topk_weights = std::move(weights);
  r.dropped = std::move(dropped);
  return r;
}

// "Expert" e multiplies its rows by (e + 1): combine must then give sum_k w_k (e_k + 1) x.
torch::Tensor scale_by_expert(const AllToAllDispatcher& d, const DispatchedTokens& tokens) {
  std::vector<torch::Tensor> parts;
  auto slices = tokens.hidden.split_with_sizes(tokens.tokens_per_expert);
  for (size_t e = 0; e < slices.size(); ++e)
    parts.push_back(slices[e] * double(d.local_experts()[e] + 1));
  return torch::cat(parts);
}

torch::Tensor expected_output(const torch::Tensor& x, const Routing& r) {
  auto w = r.topk_weights.clone();
  if (r.dropped.defined()) w.masked_fill_(r.dropped, 0.0);
  auto factor = (w * (r.topk_ids.to(torch::kDouble) + 1)).sum(1, true);
  return x * factor;
}

void check_round_trip(int64_t experts, const Routing& r, const torch::Tensor& x,
                      LayerPlacement placement = {}) {
  AllToAllDispatcher d(experts, world(), std::move(placement));
  auto xg = x.clone().requires_grad_(true);
  auto [tokens, handle] = d.dispatch(xg, r);
  auto y = d.combine(scale_by_expert(d, tokens), handle);
  EXPECT_TRUE(torch::allclose(y, expected_output(x, r), 1e-12, 1e-12));
  // d(sum y)/dx = per-token factor, which had to travel back through the reverse exchange.
  y.sum().backward();
  auto factor = expected_output(torch::ones_like(x), r);
  EXPECT_TRUE(torch::allclose(xg.grad(), factor, 1e-12, 1e-12));
}

TEST(Dispatcher, AllTokensToOneExpert) {
  const int me = world()->rank();
  const int64_t E = 2 * world()->size(), T = 7 + me;
  auto x = torch::randn({T, 3}, torch::kDouble);
  // Everyone sends everything to the last rank's last expert; other ranks receive nothing.
  auto ids = torch::full({T, 1}, E - 1, torch::kLong);
  check_round_trip(E, routing_of(ids, torch::full({T, 1}, 0.5, torch::kDouble)), x);
}

TEST(Dispatcher, RanksThatSendNothing) {
  const int me = world()->rank();
  const int64_t E = world()->size(), T = me % 2 ? 0 : 6;
  auto x = torch::randn({T, 4}, torch::kDouble);
  auto ids = torch::stack({torch::arange(T) % E, (torch::arange(T) + 1) % E}, 1);
  check_round_trip(E, routing_of(ids, torch::rand({T, 2}, torch::kDouble)), x);
}

TEST(Dispatcher, DroppedAssignmentsContributeNothingAndAreCounted) {
  const int64_t E = world()->size(), T = 10;
  auto x = torch::randn({T, 4}, torch::kDouble);
  auto ids = torch::stack({torch::zeros({T}, torch::kLong), torch::arange(T) % E}, 1);
  auto dropped = torch::zeros({T, 2}, torch::kBool);
  dropped.index_put_({torch::indexing::Slice(0, 4), 0}, true);
  dropped[9][1] = true;
  auto r = routing_of(ids, torch::rand({T, 2}, torch::kDouble), dropped);
  check_round_trip(E, r, x);
  AllToAllDispatcher d(E, world());
  EXPECT_EQ(d.dispatch(x, r).second.num_dropped, 5);
}

TEST(Dispatcher, IdentityExpertsReturnTheInput) {
  const int64_t E = 4 * world()->size(), T = 33, k = std::min<int64_t>(8, E);
  auto x = torch::randn({T, 5}, torch::kDouble);
  auto ids =
      torch::rand({T, E}).argsort(int64_t(1)).narrow(1, 0, k);  // k distinct experts per token
  auto w = torch::full({T, k}, 1.0 / double(k), torch::kDouble);
  AllToAllDispatcher d(E, world());
  auto [tokens, handle] = d.dispatch(x, routing_of(ids, w));
  EXPECT_TRUE(torch::allclose(d.combine(tokens.hidden, handle), x, 1e-12, 1e-12));
  int64_t received = 0;
  for (auto n : tokens.tokens_per_expert) received += n;
  auto total = torch::tensor({received});
  world()->all_reduce(total);
  EXPECT_EQ(total.item<int64_t>(), T * k * world()->size());
}

TEST(ProcessGroupsTest, ShapesAndBadSizes) {
  const int n = world()->size();
  for (int ep = 1; ep <= n; ++ep) {
    if (n % ep) {
      EXPECT_THROW(make_process_groups(world(), ep), ConfigError);
      continue;
    }
    auto g = make_process_groups(world(), ep);
    EXPECT_EQ(g.ep_size(), ep);
    EXPECT_EQ(g.dp_size(), n / ep);
    EXPECT_EQ(g.ep_rank(), world()->rank() % ep);
    EXPECT_EQ(g.dp_rank(), world()->rank() / ep);
    // The DP group joins ranks with the same ep_rank.
    auto mine = torch::tensor({int64_t(g.ep_rank())});
    auto all = g.dp->all_gather(mine);
    EXPECT_TRUE(all.eq(g.ep_rank()).all().item<bool>());
  }
  if (n > 1) EXPECT_THROW(AllToAllDispatcher(n + 1, world()), ConfigError);
}

}  // namespace

// Any placement computes the same thing: the experts permuted over ranks, and hot experts
// replicated (their tokens split among the copies), give the contiguous placement's output and
// input gradient on skewed routing with drops. Every copy gets a share of its expert's rows.
TEST(Dispatcher, PermutedAndReplicatedPlacementsGiveTheSameOutput) {
  const int W = world()->size(), me = world()->rank();
  const int64_t E = 2 * W, T = 9 + 2 * me;
  torch::manual_seed(100 + me);
  auto x = torch::randn({T, 3}, torch::kDouble);
  // Expert 0 takes every first choice; second choices spread.
  auto ids = torch::stack({torch::zeros({T}, torch::kLong), 1 + torch::arange(T) % (E - 1)}, 1);
  auto dropped = torch::zeros({T, 2}, torch::kBool);
  dropped[0][1] = true;
  const Routing r = routing_of(ids, torch::rand({T, 2}, torch::kDouble), dropped);
  // Reversed expert order: rank r holds the experts contiguous gives rank W - 1 - r.
  LayerPlacement reversed;
  for (int rank = 0; rank < W; ++rank)
    reversed.slots.push_back({E - 1 - 2 * rank, E - 2 - 2 * rank});
  check_round_trip(E, r, x, reversed);
  // One extra slot per rank: expert 0 on every rank, the rest as balanced_layer packs them.
  std::vector<double> load(size_t(E), 1.0);
  load[0] = 100;
  const LayerPlacement replicated = balanced_layer(load, W, W > 1 ? W : 0);
  check_round_trip(E, r, x, replicated);
  AllToAllDispatcher d(E, world(), replicated);
  if (W > 1) EXPECT_EQ(replicated.copies(E)[0], W);
  // Every copy of expert 0 receives rows (each rank's tokens alternate over the copies).
  auto [tokens, handle] = d.dispatch(x, r);
  const auto& mine = d.local_experts();
  const auto copy = std::find(mine.begin(), mine.end(), 0);
  ASSERT_NE(copy, mine.end());
  EXPECT_GT(tokens.tokens_per_expert[size_t(copy - mine.begin())], 0);
  EXPECT_THROW(AllToAllDispatcher(E, world(), LayerPlacement{{{0}}}), std::exception);
}

namespace {

// Row s of a rank's expert tensor under `placement`: its expert's id in every entry, and the
// column index, so a row that lands in the wrong slot or the wrong order shows.
torch::Tensor rows_of(const LayerPlacement& placement, int rank, torch::Dtype dtype) {
  const auto& held = placement.slots[size_t(rank)];
  auto ids = torch::tensor(held, torch::kLong).unsqueeze(1).expand({int64_t(held.size()), 6});
  return (ids * 8 + torch::arange(6).unsqueeze(0)).to(dtype);
}

}  // namespace

// Live re-placement moves each expert's rows to the ranks that hold it next: from the contiguous
// split to balanced placements with and without replicas and back, for float and integer
// (quantized-code-like) tensors, with ranks that keep, send or receive nothing.
TEST(ExpertMigration, RowsFollowTheirExpertsAcrossRanks) {
  auto ep = world();
  const int R = ep->size(), me = ep->rank();
  const int64_t E = 4 * R;
  std::vector<double> skew(size_t(E), 1.0), other(size_t(E), 1.0);
  skew[0] = 40, skew[1] = 30;
  other[size_t(E - 1)] = 50;
  std::vector<int64_t> redundancies = {0};
  if (R > 1) redundancies.push_back(R);  // one rank cannot hold two copies of an expert
  for (int64_t redundant : redundancies) {
    // The first placement: contiguous when there are no replicas, else a balanced one.
    const LayerPlacement start =
        redundant == 0 ? Placement::contiguous(1, E, R).layers.front()
                       : balanced_layer(std::vector<double>(size_t(E), 1.0), R, redundant);
    const std::vector<LayerPlacement> chain = {start, balanced_layer(skew, R, redundant),
                                               balanced_layer(other, R, redundant), start};
    for (auto dtype : {torch::kFloat, torch::kChar}) {
      auto t = rows_of(start, me, dtype);
      for (size_t i = 1; i < chain.size(); ++i) {
        SCOPED_TRACE("R " + std::to_string(redundant) + ", move " + std::to_string(i));
        const MigrationPlan plan = migration_plan(chain[i - 1], chain[i], me);
        int64_t arriving = 0;
        for (size_t s = 0; s < chain[i].slots[size_t(me)].size(); ++s) {
          const auto& before = chain[i - 1].slots[size_t(me)];
          arriving += std::count(before.begin(), before.end(), chain[i].slots[size_t(me)][s]) == 0;
        }
        EXPECT_EQ(plan.rows_received(), arriving);
        const void* storage = t.data_ptr();
        migrate_expert_rows(t, plan, *ep);
        EXPECT_EQ(t.data_ptr(), storage);  // in place: parameters stay the optimizer's
        EXPECT_TRUE(torch::equal(t, rows_of(chain[i], me, dtype)));
      }
    }
  }
  EXPECT_EQ(slots_changed(Placement::contiguous(1, E, R).layers.front(),
                          Placement::contiguous(1, E, R).layers.front()),
            0);
}

// The hot path reads counts back to the host once per dispatch, whatever the EP size, drops or
// placement (on a GPU each read waits for the device), and never in combine or backward.
TEST(Dispatcher, OneHostReadPerDispatchNoneInCombineOrBackward) {
  const int W = world()->size(), me = world()->rank();
  const int64_t E = 2 * W, T = 7 + me;
  torch::manual_seed(7 + me);
  auto x = torch::randn({T, 4}, torch::kDouble).requires_grad_();
  auto ids = torch::stack({torch::arange(T) % E, (torch::arange(T) + 1) % E}, 1);
  auto dropped = torch::zeros({T, 2}, torch::kBool);
  dropped[T - 1][0] = true;
  std::vector<double> load(size_t(E), 1.0);
  load[0] = 50;
  for (bool drops : {false, true}) {
    for (const LayerPlacement& placement :
         {LayerPlacement{}, balanced_layer(load, W, W > 1 ? W : 0)}) {
      SCOPED_TRACE(std::string(drops ? "drops, " : "no drops, ") +
                   (placement.slots.empty() ? "contiguous" : "replicas"));
      const Routing r =
          routing_of(ids, torch::rand({T, 2}, torch::kDouble), drops ? dropped : torch::Tensor());
      AllToAllDispatcher d(E, world(), placement);
      const int64_t before = host_reads();
      auto [tokens, handle] = d.dispatch(x, r);
      EXPECT_EQ(host_reads() - before, 1);
      auto y = d.combine(tokens.hidden * 2, handle);
      y.sum().backward();
      EXPECT_EQ(host_reads() - before, 1);
      EXPECT_EQ(handle.num_dropped, drops ? 1 : 0);
      // Every kept assignment comes back: row t gets 2 x its kept weights' sum.
      auto kept = r.topk_weights.masked_fill(drops ? dropped : torch::zeros_like(dropped), 0);
      EXPECT_TRUE(torch::allclose(y.detach(), 2 * x.detach() * kept.sum(1, true), 1e-12, 1e-12));
      x.mutable_grad().reset();
    }
  }
}
