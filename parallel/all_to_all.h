// all_to_all_v as an autograd op: gradients travel back along the reverse exchange, so tokens
// sent to an expert's owner bring their gradients home in backward.
#pragma once

#include "parallel/communicator.h"

namespace switchyard {

/// comm->all_to_all_v(input, send, recv) recorded for autograd; backward is
/// comm->all_to_all_v(grad, recv, send). Collective in forward and in backward: every rank of
/// `comm` must call it, also with zero rows, and every rank's graph must reach it in backward.
///   usage: auto rows = all_to_all_v_with_grad(groups.ep, permuted, send_counts, recv_counts);
torch::Tensor all_to_all_v_with_grad(const CommunicatorPtr& comm, const torch::Tensor& input,
                                     const std::vector<int64_t>& send_counts,
                                     const std::vector<int64_t>& recv_counts);

}  // namespace switchyard
