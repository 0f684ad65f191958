// See compute_device.h.
#include "parallel/compute_device.h"

#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "common/errors.h"
#include "parallel/nccl_communicator.h"
#include "parallel/staging_communicator.h"
#include "parallel/watched_communicator.h"

namespace switchyard {
namespace {

#ifdef SWITCHYARD_WITH_CUDA
// Whether no two ranks use the same GPU of the same host: NCCL refuses a GPU shared by ranks.
bool every_rank_owns_its_gpu(Communicator& host, const LaunchEnv& env) {
  const auto mine = torch::tensor(
      {int64_t(std::hash<std::string>{}(env.host)), int64_t(env.cuda_device)}, torch::kLong);
  const auto all = host.all_gather(mine.view({1, 2})).contiguous();
  const int64_t* p = all.data_ptr<int64_t>();
  std::set<std::pair<int64_t, int64_t>> seen;
  for (int r = 0; r < host.size(); ++r) seen.insert({p[2 * r], p[2 * r + 1]});
  return int(seen.size()) == host.size();
}
#endif

ComputeWorld make_compute_world(const std::string& name) {
  if (name != "auto" && name != "cpu" && name != "cuda")
    throw ConfigError("parallel.device = " + name + ": must be \"auto\", \"cpu\" or \"cuda\"",
                      "parallel.device");
  CommunicatorPtr host = make_world_communicator();
  ComputeWorld w;
  w.env = detect_launch_env(*host);
  const bool has_gpu = w.env.cuda_device >= 0;
  if (name == "cuda" && !has_gpu)
    throw ConfigError(detail::concat("parallel.device = cuda: rank ", w.env.rank, " on ",
                                     w.env.host, " sees no GPU (CUDA is not available)"),
                      "parallel.device");
  const bool gpu = name == "cuda" || (name == "auto" && has_gpu);
  if (host->size() > 1) {  // a mixed world would deadlock in its first collective: refuse it
    auto votes = torch::tensor({int64_t(gpu), int64_t(!gpu)}, torch::kLong);
    host->all_reduce(votes, ReduceOp::kSum);
    if (votes[0].item<int64_t>() > 0 && votes[1].item<int64_t>() > 0)
      throw ConfigError(
          detail::concat("parallel.device = ", name, ": ", votes[0].item<int64_t>(),
                         " rank(s) would compute on a GPU and ", votes[1].item<int64_t>(),
                         " on the CPU; set parallel.device to cpu or give every "
                         "rank a GPU"),
          "parallel.device");
  }
  if (!gpu) {
    w.world = host;
    w.transport = host->size() > 1 ? "mpi" : "single process";
    return w;
  }
  w.device = torch::Device(torch::kCUDA, c10::DeviceIndex(w.env.cuda_device));
#ifdef SWITCHYARD_WITH_CUDA
  if (host->size() > 1 && every_rank_owns_its_gpu(*host, w.env)) {
    w.world = make_staging_communicator(
        watch_communicator(make_nccl_communicator(host, w.env.cuda_device), "nccl.world",
                           identity_ranks(host->size())),
        w.device);
    w.transport = "nccl";
    return w;
  }
#endif
  // One rank, ranks sharing a GPU, or a build without NCCL: the host communicator, fed CPU copies.
  // Autograd runs a GPU exchange's backward on its device thread, which then calls MPI.
  if (host->size() > 1 && !mpi_allows_any_thread())
    throw ConfigError(
        "parallel.device: ranks sharing a GPU exchange tokens over MPI from "
        "autograd's device thread, and this MPI allows calls from the main thread "
        "only (below MPI_THREAD_SERIALIZED); give each rank a GPU of its own (NCCL) "
        "or set parallel.device to cpu",
        "parallel.device");
  w.world = make_staging_communicator(host, torch::kCPU);
  w.transport = host->size() > 1 ? "mpi via host memory" : "single process";
  return w;
}

}  // namespace

std::string ComputeWorld::describe() const {
  return device.str() + " over " + transport;
}

const ComputeWorld& compute_world(const std::string& device_name) {
  // Never destroyed: an NCCL communicator must not outlive CUDA's own teardown at exit.
  static std::mutex mutex;
  static auto* made = new std::map<std::string, const ComputeWorld*>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = made->find(device_name);
  if (it == made->end())
    it = made->emplace(device_name, new ComputeWorld(make_compute_world(device_name))).first;
  return *it->second;
}

}  // namespace switchyard
