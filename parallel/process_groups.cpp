// Splits the world into EP and DP groups with the communicator's own split (MPI_Comm_split or
// ncclCommSplit), so each group runs on the same backend as the world.
#include "parallel/process_groups.h"

#include "common/errors.h"

namespace switchyard {

ProcessGroups make_process_groups(CommunicatorPtr world, int expert_parallel) {
  SY_CHECK(world, "make_process_groups: no world communicator");
  const int n = world->size();
  if (expert_parallel <= 0 || n % expert_parallel != 0)
    throw ConfigError(detail::concat("parallel.expert_parallel = ", expert_parallel,
                                     ": must divide the world size (", n, " ranks)"),
                      "parallel.expert_parallel");
  const int ep_rank = world->rank() % expert_parallel;
  const int dp_rank = world->rank() / expert_parallel;
  ProcessGroups g;
  g.world = world;
  // Both splits are collective over the world; every rank makes them in this order.
  g.ep = world->split(/*color=*/dp_rank, /*key=*/ep_rank);
  g.dp = world->split(/*color=*/ep_rank, /*key=*/dp_rank);
  SY_CHECK(g.ep->size() == expert_parallel && g.ep->rank() == ep_rank,
           "make_process_groups: EP group has size ", g.ep->size(), ", expected ", expert_parallel);
  // Names and world ranks for the collective watchdog's messages.
  std::vector<int> ep_ranks, dp_ranks;
  for (int e = 0; e < expert_parallel; ++e) ep_ranks.push_back(dp_rank * expert_parallel + e);
  for (int d = 0; d < n / expert_parallel; ++d) dp_ranks.push_back(d * expert_parallel + ep_rank);
  g.ep->label("ep" + std::to_string(dp_rank), ep_ranks);
  g.dp->label("dp" + std::to_string(ep_rank), dp_ranks);
  return g;
}

ProcessGroups single_process_groups() {
  auto one = make_single_process_communicator();
  return ProcessGroups{one, one, one};
}

}  // namespace switchyard
