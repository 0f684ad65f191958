// The NCCL backend at world size 1 on one GPU: the same cases as the MPI tests. Skipped (and
// reported as skipped) where Switchyard has no CUDA or no GPU is visible.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "parallel/communicator.h"
#include "parallel/nccl_communicator.h"

using namespace switchyard;

#ifdef SWITCHYARD_WITH_CUDA
namespace {
CommunicatorPtr nccl_or_skip() {
  if (!torch::cuda::is_available()) return nullptr;
  static CommunicatorPtr c = make_nccl_communicator(make_single_process_communicator(), 0);
  return c;
}
}  // namespace

TEST(NcclCommunicator, AllToAllVUnevenEmptyAndTrailingShape) {
  auto c = nccl_or_skip();
  if (!c) GTEST_SKIP() << "no GPU visible";
  EXPECT_EQ(c->size(), 1);
  for (int64_t rows : {0, 1, 7}) {
    auto x = torch::randn({rows, 3, 5}, torch::kCUDA);
    auto recv = c->exchange_counts({rows});
    ASSERT_EQ(recv, (std::vector<int64_t>{rows}));
    auto y = c->all_to_all_v(x, {rows}, recv);
    EXPECT_TRUE(torch::equal(y.cpu(), x.cpu())) << rows;
  }
  EXPECT_THROW(c->all_to_all_v(torch::randn({3, 2}, torch::kCUDA), {2}, {2}), Error);
  EXPECT_THROW(c->all_to_all_v(torch::randn({3, 2}), {3}, {3}), Error);  // CPU tensor
}

TEST(NcclCommunicator, ReduceBroadcastGatherSplit) {
  auto c = nccl_or_skip();
  if (!c) GTEST_SKIP() << "no GPU visible";
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kLong}) {
    auto t = torch::full({4}, 3, torch::TensorOptions().dtype(dtype).device(torch::kCUDA));
    c->all_reduce(t);
    EXPECT_EQ(t[0].item<double>(), 3.0) << dtype;
  }
  auto b = torch::full({2, 2}, 5.0, torch::kCUDA);
  c->broadcast(b, 0);
  EXPECT_EQ(b[1][1].item<double>(), 5.0);
  EXPECT_EQ(c->all_gather(b).size(0), 2);
  auto sub = c->split(0, 0);
  EXPECT_EQ(sub->size(), 1);
  sub->barrier();
}
#else
TEST(NcclCommunicator, NotBuilt) {
  GTEST_SKIP() << "built without CUDA";
}
#endif
