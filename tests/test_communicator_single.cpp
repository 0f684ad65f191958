// The single-process communicator: identities, with the same argument checks as MPI.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "parallel/communicator.h"

using namespace switchyard;

TEST(SingleProcessCommunicator, CollectivesAreIdentities) {
  auto c = make_single_process_communicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  auto x = torch::randn({3, 4});
  EXPECT_TRUE(torch::equal(c->all_to_all_v(x, {3}, {3}), x));
  EXPECT_EQ(c->exchange_counts({3}), (std::vector<int64_t>{3}));
  auto y = x.clone();
  c->all_reduce(y);
  EXPECT_TRUE(torch::equal(x, y));
  EXPECT_TRUE(torch::equal(c->all_gather(x), x));
  EXPECT_EQ(c->split(5, 0)->size(), 1);
  EXPECT_THROW(c->all_to_all_v(x, {2}, {2}), Error);
  EXPECT_THROW(c->broadcast(y, 1), Error);
}

TEST(SingleProcessCommunicator, WorldWithoutMpirunNeedsNoDaemon) {
  if (launched_by_mpi()) GTEST_SKIP() << "running under mpirun";
  EXPECT_EQ(make_world_communicator()->backend(), "single");
}
