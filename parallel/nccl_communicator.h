// The NCCL backend of Communicator: CUDA tensors, collectives on the current CUDA stream.
// Declared only when Switchyard is built with CUDA.
#pragma once

#include "parallel/communicator.h"

namespace switchyard {

#ifdef SWITCHYARD_WITH_CUDA
/// A communicator over the same ranks as `host` (MPI or single-process), on CUDA `device`.
/// Collective: every rank of `host` calls it.
///   usage: auto nccl = make_nccl_communicator(make_world_communicator(), local_rank);
CommunicatorPtr make_nccl_communicator(const CommunicatorPtr& host, int device);
#endif

}  // namespace switchyard
