// A Communicator that takes tensors on any device: those not on its backend's home device (the
// CPU for MPI, the rank's GPU for NCCL) are copied there for the collective and the results
// copied back. Ranks that share one GPU train over MPI this way, and the host-side bookkeeping of
// a GPU run (barriers, metrics, checkpoint writes: CPU tensors) runs over NCCL.
#pragma once

#include "parallel/communicator.h"

namespace switchyard {

/// `inner` with every tensor argument moved to `home` first; results come back on the device of
/// the tensor they answer (all_to_all_v, all_gather: the input's). Splits are staged too;
/// backend() and error messages are the inner backend's.
///   usage: auto world = make_staging_communicator(make_world_communicator(), torch::kCPU);
CommunicatorPtr make_staging_communicator(CommunicatorPtr inner, torch::Device home);

}  // namespace switchyard
