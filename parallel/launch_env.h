// Where this process sits in a launch: world rank and size from MPI, its local rank among the
// ranks on the same host, the launcher's own variables cross-checked, and its GPU when CUDA is up.
#pragma once

#include <string>

#include "parallel/communicator.h"

namespace switchyard {

struct LaunchEnv {
  int rank = 0, world = 1;             ///< from the communicator (MPI when launched)
  int local_rank = 0, local_size = 1;  ///< among the ranks on this host
  std::string host;
  long pid = 0;
  std::string launcher;  ///< "mpirun", "srun", "mpi" (another PMI launcher) or "none"
  int cuda_device = -1;  ///< the GPU this rank uses, -1 without CUDA

  /// "rank 1 of 4, local rank 1 of 4, host node7, pid 4242, launcher mpirun, device cpu"
  std::string describe() const;
};

/// Collective over `world`. The local rank is the launcher's (OMPI_COMM_WORLD_LOCAL_RANK,
/// SLURM_LOCALID, MPI_LOCALRANKID) or, without one, this rank's place among the ranks reporting
/// the same host name. Throws ConfigError when the launcher's rank or task count disagrees with
/// MPI's (e.g. srun without --mpi=pmix starts N single-rank worlds), or when a host has more
/// local ranks than visible GPUs. With CUDA, makes GPU `local_rank` current (GPU 0 when each rank
/// sees only one, as with srun --gpus-per-task=1).
///   usage: const LaunchEnv env = detect_launch_env(*groups.world);
///          rank_log << env.describe() << std::endl;
LaunchEnv detect_launch_env(Communicator& world);

}  // namespace switchyard
