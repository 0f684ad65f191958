#include "parallel/launch_env.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <tuple>

#include "common/errors.h"

namespace switchyard {

namespace {

std::optional<int> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0') throw ConfigError(detail::concat(name, "=", v, ": not an integer"));
  return int(x);
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// Throws when a launcher variable is set and disagrees with what MPI says.
void expect_same(const char* var, std::optional<int> launcher, int mpi, const char* what,
                 const std::string& hint) {
  if (launcher && *launcher != mpi)
    throw ConfigError(
        detail::concat(var, "=", *launcher, " but MPI reports ", what, " ", mpi, hint));
}

// This rank's position among the ranks whose host name hashes equal its own, and their count.
std::pair<int, int> local_position(Communicator& world, const std::string& host) {
  const auto mine = int64_t(std::hash<std::string>{}(host));
  const auto all = world.all_gather(torch::tensor({mine}, torch::kLong)).contiguous();
  const int64_t* h = all.data_ptr<int64_t>();
  int before = 0, same = 0;
  for (int r = 0; r < world.size(); ++r) {
    if (h[r] != mine) continue;
    same += 1;
    if (r < world.rank()) before += 1;
  }
  return {before, same};
}

int pick_cuda_device(const LaunchEnv& env) {
  if (!torch::cuda::is_available()) return -1;
  const int visible = int(torch::cuda::device_count());
  if (visible == 1) return 0;
  if (env.local_rank >= visible)
    throw ConfigError(detail::concat("local rank ", env.local_rank, " on ", env.host, " but only ",
                                     visible, " GPU(s) visible: one GPU per local rank"));
  return env.local_rank;
}

}  // namespace

std::string LaunchEnv::describe() const {
  return detail::concat(
      "rank ", rank, " of ", world, ", local rank ", local_rank, " of ", local_size, ", host ",
      host, ", pid ", pid, ", launcher ", launcher, ", device ",
      cuda_device < 0 ? std::string("cpu") : "cuda:" + std::to_string(cuda_device));
}

LaunchEnv detect_launch_env(Communicator& world) {
  LaunchEnv env;
  env.rank = world.rank();
  env.world = world.size();
  env.host = host_name();
  env.pid = long(getpid());
  std::tie(env.local_rank, env.local_size) = local_position(world, env.host);

  std::optional<int> local;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    env.launcher = "mpirun";
    expect_same("OMPI_COMM_WORLD_SIZE", env_int("OMPI_COMM_WORLD_SIZE"), env.world, "world size",
                "");
    expect_same("OMPI_COMM_WORLD_RANK", env_int("OMPI_COMM_WORLD_RANK"), env.rank, "rank", "");
    local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
    if (auto n = env_int("OMPI_COMM_WORLD_LOCAL_SIZE")) env.local_size = *n;
  } else if (std::getenv("SLURM_PROCID")) {
    // srun started us directly. Without PMIx every task would be a world of one, each training
    // alone as rank 0: refuse that rather than run N copies of the job.
    env.launcher = "srun";
    const std::string hint = " (launch with srun --mpi=pmix, and an MPI built with PMIx)";
    auto tasks = env_int("SLURM_STEP_NUM_TASKS");
    if (!tasks) tasks = env_int("SLURM_NTASKS");
    expect_same("SLURM_NTASKS", tasks, env.world, "world size", hint);
    expect_same("SLURM_PROCID", env_int("SLURM_PROCID"), env.rank, "rank", hint);
    local = env_int("SLURM_LOCALID");
  } else if (launched_by_mpi()) {
    env.launcher = "mpi";
    local = env_int("MPI_LOCALRANKID");
  } else {
    env.launcher = "none";
  }
  // The launcher knows which ranks share a machine even where host names do not (containers).
  if (local) env.local_rank = *local;

  env.cuda_device = pick_cuda_device(env);
  if (env.cuda_device >= 0)
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
        ->setDevice(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(env.cuda_device)));
  return env;
}

}  // namespace switchyard
