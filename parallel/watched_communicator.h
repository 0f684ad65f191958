// A Communicator whose every collective the collective watchdog numbers, records and holds to
// parallel.timeout_s (parallel/collective_watchdog.h). The MPI world and the NCCL world are made
// watched; their splits are watched too.
#pragma once

#include "parallel/communicator.h"

namespace switchyard {

/// `inner` with its collectives watched, as group `name` ("world"); `world_ranks[r]` is the
/// world rank of group rank r (empty: unknown). Not collective.
///   usage: auto world = watch_communicator(mpi_world, "world", {0, 1, 2, 3});
CommunicatorPtr watch_communicator(CommunicatorPtr inner, std::string name,
                                   std::vector<int> world_ranks);

/// 0, 1, ..., size - 1: the world ranks of a world group.
std::vector<int> identity_ranks(int size);

}  // namespace switchyard
