// MPI communicator collectives on uneven, empty and skewed inputs, at whatever world size
// mpirun gives (CTest runs 1, 2 and 4 ranks).
#include <gtest/gtest.h>

#include <numeric>

#include "common/errors.h"
#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

// Row r sent from `src` to `dst`: (src, dst, r, r + 0.5, -1).
torch::Tensor rows_for(int src, int dst, int64_t n) {
  auto t = torch::empty({n, 5}, torch::kDouble);
  for (int64_t r = 0; r < n; ++r) {
    t[r][0] = src;
    t[r][1] = dst;
    t[r][2] = double(r);
    t[r][3] = r + 0.5;
    t[r][4] = -1;
  }
  return t;
}

// Exchanges rows_for(me, p, count(me, p)) with every peer and checks what arrives.
void check_exchange(const std::function<int64_t(int, int)>& count) {
  auto w = world();
  const int me = w->rank(), n = w->size();
  std::vector<int64_t> send(n), expect_recv(n);
  std::vector<torch::Tensor> parts;
  for (int p = 0; p < n; ++p) {
    send[p] = count(me, p);
    expect_recv[p] = count(p, me);
    parts.push_back(rows_for(me, p, send[p]));
  }
  auto recv = w->exchange_counts(send);
  EXPECT_EQ(recv, expect_recv);
  auto out = w->all_to_all_v(torch::cat(parts), send, recv);
  ASSERT_EQ(out.size(0), std::accumulate(recv.begin(), recv.end(), int64_t(0)));
  ASSERT_EQ(out.size(1), 5);
  int64_t off = 0;
  for (int p = 0; p < n; ++p) {
    EXPECT_TRUE(torch::equal(out.narrow(0, off, recv[p]), rows_for(p, me, recv[p])))
        << "rows from rank " << p;
    off += recv[p];
  }
}

}  // namespace

TEST(MpiCommunicator, RankAndSize) {
  EXPECT_GE(world()->size(), 1);
  EXPECT_LT(world()->rank(), world()->size());
  EXPECT_EQ(world()->backend(), "mpi");
}

TEST(MpiCommunicator, AllToAllVUnevenCounts) {
  check_exchange([](int src, int dst) { return int64_t((src * 3 + dst * 5) % 4); });
}

TEST(MpiCommunicator, AllToAllVEverythingToOneRank) {
  check_exchange([](int, int dst) { return dst == 0 ? int64_t(7) : int64_t(0); });
}

TEST(MpiCommunicator, AllToAllVRankSendsNothing) {
  check_exchange([](int src, int) { return src == 0 ? int64_t(0) : int64_t(2); });
}

TEST(MpiCommunicator, AllToAllVAllEmpty) {
  check_exchange([](int, int) { return int64_t(0); });
}

TEST(MpiCommunicator, AllToAllVKeepsDtypeAndTrailingShape) {
  auto w = world();
  std::vector<int64_t> counts(w->size(), 1);
  auto in = torch::full({w->size(), 2, 3}, float(w->rank()), torch::kBFloat16);
  auto out = w->all_to_all_v(in, counts, counts);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{w->size(), 2, 3}));
  for (int p = 0; p < w->size(); ++p) EXPECT_EQ(out[p][1][2].item<float>(), float(p));
}

TEST(MpiCommunicator, AllToAllVRejectsBadCountsWithoutCommunicating) {
  auto w = world();
  EXPECT_THROW(w->all_to_all_v(torch::zeros({3, 2}), std::vector<int64_t>(w->size() + 1, 0),
                               std::vector<int64_t>(w->size() + 1, 0)),
               Error);
  std::vector<int64_t> counts(w->size(), 0);
  counts[0] = 5;  // 5 rows claimed, 3 present
  EXPECT_THROW(w->all_to_all_v(torch::zeros({3, 2}), counts, counts), Error);
}

TEST(MpiCommunicator, AllReduceSumMaxAvgAcrossDtypes) {
  auto w = world();
  const int n = w->size(), me = w->rank();
  auto f = torch::full({4}, double(me + 1));
  w->all_reduce(f);
  EXPECT_EQ(f[0].item<double>(), n * (n + 1) / 2.0);
  auto m = torch::tensor({int64_t(me), int64_t(-me)});
  w->all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m[0].item<int64_t>(), n - 1);
  EXPECT_EQ(m[1].item<int64_t>(), 0);
  auto b = torch::full({3}, float(me), torch::kBFloat16);
  w->all_reduce(b, ReduceOp::kAvg);
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  EXPECT_NEAR(b[0].item<float>(), (n - 1) / 2.0, 1e-2);
  auto strided = torch::ones({4, 4}).t();  // non-contiguous still reduces in place
  w->all_reduce(strided);
  EXPECT_EQ(strided[1][2].item<float>(), float(n));
}

TEST(MpiCommunicator, BroadcastFromLastRankAndAllGather) {
  auto w = world();
  const int last = w->size() - 1;
  auto t = torch::full({2, 3}, float(w->rank()));
  w->broadcast(t, last);
  EXPECT_TRUE(torch::equal(t, torch::full({2, 3}, float(last))));
  auto g = w->all_gather(torch::full({1, 2}, int64_t(w->rank())));
  ASSERT_EQ(g.size(0), w->size());
  for (int p = 0; p < w->size(); ++p) EXPECT_EQ(g[p][1].item<int64_t>(), p);
  EXPECT_THROW(w->broadcast(t, w->size()), Error);
}

TEST(MpiCommunicator, SplitIntoGroupsAndExchangeWithin) {
  auto w = world();
  // Expert-parallel style groups of 2 consecutive ranks (a lone last rank forms its own).
  auto group = w->split(w->rank() / 2, w->rank());
  const int expected = std::min(2, w->size() - (w->rank() / 2) * 2);
  ASSERT_EQ(group->size(), expected);
  EXPECT_EQ(group->rank(), w->rank() % 2);
  std::vector<int64_t> counts(group->size(), 1);
  auto out =
      group->all_to_all_v(torch::full({group->size(), 1}, double(w->rank())), counts, counts);
  for (int p = 0; p < group->size(); ++p)
    EXPECT_EQ(out[p][0].item<double>(), double((w->rank() / 2) * 2 + p));
  group->barrier();
  w->barrier();
}

// Messages several times the MPI chunk size: ctest mpi_small_chunks runs this binary with
// SWITCHYARD_MPI_MAX_CHUNK_BYTES=64, so each collective crosses many chunk boundaries there.
TEST(MpiCommunicator, MessagesLargerThanAChunkArriveWhole) {
  auto w = world();
  const int me = w->rank(), n = w->size();
  auto mine = torch::arange(37 * 3, torch::kDouble).view({37, 3}) + 1000.0 * me;
  auto gathered = w->all_gather(mine);
  ASSERT_EQ(gathered.sizes(), (std::vector<int64_t>{37 * n, 3}));
  for (int p = 0; p < n; ++p)
    EXPECT_TRUE(torch::equal(gathered.narrow(0, 37 * p, 37),
                             torch::arange(37 * 3, torch::kDouble).view({37, 3}) + 1000.0 * p))
        << "rows from rank " << p;
  auto sum = torch::full({1001}, double(me + 1), torch::kFloat);
  w->all_reduce(sum, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(sum, torch::full({1001}, float(n * (n + 1) / 2))));
  auto bytes = me == n - 1 ? torch::arange(999, torch::kInt) : torch::zeros({999}, torch::kInt);
  w->broadcast(bytes, n - 1);
  EXPECT_TRUE(torch::equal(bytes, torch::arange(999, torch::kInt)));
  // Rows of 40 bytes, 7 per peer: every exchange is larger than one chunk.
  check_exchange([](int src, int dst) { return int64_t(7 + src + dst); });
}

// The collective watchdog numbers the world's collectives alike on every rank: sequence numbers
// name the same collective everywhere, which is how a stalled rank is told apart.
TEST(MpiCommunicator, EveryRankNumbersTheWorldsCollectivesAlike) {
  auto w = world();
  auto t = torch::ones({2});
  w->all_reduce(t);
  w->barrier();
  int64_t last = 0;
  for (const auto& r : CollectiveWatchdog::instance().flight_record())
    if (r.group == "world") last = r.seq;
  EXPECT_GT(last, 1);
  auto all = w->all_gather(torch::tensor({last}, torch::kLong));
  for (int p = 0; p < w->size(); ++p) EXPECT_EQ(all[p].item<int64_t>(), last) << "rank " << p;
}
