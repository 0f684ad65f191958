// main() for GoogleTest binaries that run under mpirun: initialises MPI through the world
// communicator, prints results from rank 0 only (failures from every rank), and makes every
// rank exit non-zero when any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/communicator.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto world = switchyard::make_mpi_world_communicator();
  if (world->rank() != 0) {
    // Other ranks report only failures, so the log stays readable.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && world->rank() == 0 && !failed)
    std::fprintf(stderr, "a test failed on another rank (see its output above)\n");
  return any_failed;
}
