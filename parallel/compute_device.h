// Where a rank computes (parallel.device) and the world communicator that goes with it: the CPU
// over MPI; or this rank's GPU over NCCL when every rank has a GPU of its own, and over MPI
// through host memory when ranks share one (several ranks on a one-GPU machine).
#pragma once

#include <torch/torch.h>

#include <string>

#include "parallel/communicator.h"
#include "parallel/launch_env.h"

namespace switchyard {

struct ComputeWorld {
  torch::Device device = torch::kCPU;
  /// Takes tensors on any device (parallel/staging_communicator.h): host-side bookkeeping keeps
  /// using CPU tensors whatever the backend.
  CommunicatorPtr world;
  LaunchEnv env;
  std::string transport;  ///< "single process", "mpi", "nccl" or "mpi via host memory"

  /// "cuda:0 over nccl", "cpu over mpi"
  std::string describe() const;
};

/// The compute world for `device_name` ("auto", "cpu" or "cuda", as parallel.device): made once
/// per process and name, collectively over the MPI world the first time, and kept for the
/// process's lifetime. Throws ConfigError for "cuda" where a rank sees no GPU, and for "auto"
/// where some ranks see a GPU and others do not.
///   usage: const ComputeWorld& cw = compute_world(config.parallel().device());
///          auto groups = make_process_groups(cw.world, ep);  model->to(cw.device);
const ComputeWorld& compute_world(const std::string& device_name);

}  // namespace switchyard
