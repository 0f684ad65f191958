// Process groups for expert parallelism: the world split into expert-parallel (EP) groups, which
// exchange tokens, and data-parallel (DP) groups, which hold replicas of the same experts.
#pragma once

#include "parallel/communicator.h"

namespace switchyard {

/// World = EP x DP. EP groups are blocks of consecutive ranks (rank r has ep_rank r % EP and
/// dp_rank r / EP), so the token exchange stays inside a node when EP <= ranks per node.
///   usage: ProcessGroups groups = make_process_groups(make_world_communicator(), 2);
///          groups.ep->all_to_all_v(...);   // tokens to the experts' owners
///          groups.dp->all_reduce(grad);   // expert replicas
struct ProcessGroups {
  CommunicatorPtr world;
  CommunicatorPtr ep;  ///< ranks that share one copy of all experts between them
  CommunicatorPtr dp;  ///< ranks that hold the same experts (the expert-data-parallel group)

  int ep_size() const { return ep->size(); }
  int dp_size() const { return dp->size(); }
  int ep_rank() const { return ep->rank(); }
  int dp_rank() const { return dp->rank(); }
};

/// Splits `world` (collective). Throws ConfigError on parallel.expert_parallel when it does not
/// divide the world size.
ProcessGroups make_process_groups(CommunicatorPtr world, int expert_parallel);

/// World size 1, EP = DP = 1, no MPI.
ProcessGroups single_process_groups();

}  // namespace switchyard
