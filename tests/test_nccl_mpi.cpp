// The NCCL backend across GPUs, one per rank, against the MPI backend on the same numbers:
// uneven and empty all-to-alls, count exchanges, reductions. Run under mpirun by ctest's
// nccl_np2 / nccl_np4 (tests/nccl_multi_gpu_test.sh), which skip, saying why, where fewer GPUs
// than ranks are visible; here each case skips with the reason too.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "parallel/communicator.h"
#include "parallel/nccl_communicator.h"

using namespace switchyard;

namespace {

CommunicatorPtr mpi_world() {
  static CommunicatorPtr w = make_mpi_world_communicator();
  return w;
}

// "" when this world can run NCCL with a GPU per rank, else why not.
std::string why_not_nccl() {
#ifndef SWITCHYARD_WITH_CUDA
  return "built without CUDA";
#else
  const int ranks = mpi_world()->size();
  const int gpus = torch::cuda::is_available() ? int(torch::cuda::device_count()) : 0;
  if (ranks < 2) return "one rank: the NCCL cases need 2 or more";
  if (gpus < ranks)
    return std::to_string(gpus) + " GPU(s) visible for " + std::to_string(ranks) + " ranks";
  return "";
#endif
}

#ifdef SWITCHYARD_WITH_CUDA
CommunicatorPtr nccl() {
  static CommunicatorPtr c = make_nccl_communicator(mpi_world(), mpi_world()->rank());
  return c;
}
#endif

}  // namespace

TEST(NcclMultiGpu, AllToAllVUnevenAndEmptyEqualsMpi) {
  const std::string why = why_not_nccl();
  if (!why.empty()) GTEST_SKIP() << why;
#ifdef SWITCHYARD_WITH_CUDA
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  // Rank r sends (r + p) % 3 rows to peer p: some zero, all uneven; rank 0 sends nothing at all
  // in the second round.
  for (int round = 0; round < 2; ++round) {
    std::vector<int64_t> send(static_cast<size_t>(n));
    for (int p = 0; p < n; ++p) send[size_t(p)] = round == 1 && me == 0 ? 0 : (me + p) % 3;
    int64_t rows = 0;
    for (auto c : send) rows += c;
    auto x = torch::arange(rows * 4, torch::kFloat).reshape({rows, 2, 2}) + 1000 * me;
    const auto recv_mpi = world->exchange_counts(send);
    const auto recv_nccl = nccl()->exchange_counts(send);
    ASSERT_EQ(recv_nccl, recv_mpi);
    auto via_mpi = world->all_to_all_v(x, send, recv_mpi);
    auto via_nccl = nccl()->all_to_all_v(x.cuda(), send, recv_nccl);
    EXPECT_TRUE(via_nccl.is_cuda());
    EXPECT_TRUE(torch::equal(via_nccl.cpu(), via_mpi)) << "round " << round << ", rank " << me;
  }
#endif
}

TEST(NcclMultiGpu, AllReduceAndAllGatherEqualMpi) {
  const std::string why = why_not_nccl();
  if (!why.empty()) GTEST_SKIP() << why;
#ifdef SWITCHYARD_WITH_CUDA
  auto world = mpi_world();
  auto x = torch::arange(6, torch::kDouble) * double(world->rank() + 1);
  auto on_gpu = x.cuda();
  auto on_cpu = x.clone();
  nccl()->all_reduce(on_gpu);
  world->all_reduce(on_cpu);
  EXPECT_TRUE(torch::equal(on_gpu.cpu(), on_cpu));
  auto mx = x.cuda();
  nccl()->all_reduce(mx, ReduceOp::kMax);
  EXPECT_TRUE(torch::equal(mx.cpu(), torch::arange(6, torch::kDouble) * double(world->size())));
  auto gathered = nccl()->all_gather(x.cuda());
  EXPECT_TRUE(torch::equal(gathered.cpu(), world->all_gather(x)));
#endif
}
