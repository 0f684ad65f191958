// Argument checks shared by every Communicator backend, so each reports the same errors.
#include <numeric>

#include "common/errors.h"
#include "parallel/communicator.h"

namespace switchyard {

void check_peer_counts(const Communicator& c, const std::vector<int64_t>& counts,
                       const char* what) {
  SY_CHECK(int(counts.size()) == c.size(), c.backend(), " rank ", c.rank(), ": ", what, " has ",
           counts.size(), " entries for ", c.size(), " ranks");
  for (int64_t n : counts)
    SY_CHECK(n >= 0, c.backend(), " rank ", c.rank(), ": negative count in ", what);
}

std::vector<int64_t> all_to_all_v_output_shape(const Communicator& c, const torch::Tensor& input,
                                               const std::vector<int64_t>& send,
                                               const std::vector<int64_t>& recv) {
  check_peer_counts(c, send, "send_counts");
  check_peer_counts(c, recv, "recv_counts");
  SY_CHECK(input.dim() >= 1, c.backend(), " rank ", c.rank(), ": all_to_all_v needs rows");
  const int64_t total_send = std::accumulate(send.begin(), send.end(), int64_t(0));
  SY_CHECK(total_send == input.size(0), c.backend(), " rank ", c.rank(), ": send_counts add up to ",
           total_send, " rows but the input has ", input.size(0));
  auto shape = input.sizes().vec();
  shape[0] = std::accumulate(recv.begin(), recv.end(), int64_t(0));
  return shape;
}

}  // namespace switchyard
