// World size 1: every collective is the identity, checked for the same argument errors as the
// distributed backends so single-process runs catch the bugs multi-rank runs would hit.
#include "common/errors.h"
#include "parallel/communicator.h"

namespace switchyard {
namespace {

class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }

  torch::Tensor all_to_all_v(const torch::Tensor& input, const std::vector<int64_t>& send,
                             const std::vector<int64_t>& recv) override {
    all_to_all_v_output_shape(*this, input, send, recv);
    SY_CHECK(recv[0] == send[0], "single: all_to_all_v sends ", send[0],
             " rows to itself but expects ", recv[0]);
    return input.clone();
  }
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send) override {
    check_peer_counts(*this, send, "send_counts");
    return send;
  }
  void all_reduce(torch::Tensor&, ReduceOp) override {}
  void broadcast(torch::Tensor&, int root) override {
    SY_CHECK(root == 0, "single: broadcast root ", root, " out of range");
  }
  torch::Tensor all_gather(const torch::Tensor& t) override { return t.clone(); }
  void barrier() override {}
  std::shared_ptr<Communicator> split(int, int) override {
    return std::make_shared<SingleProcessCommunicator>();
  }
};

}  // namespace

CommunicatorPtr make_single_process_communicator() {
  return std::make_shared<SingleProcessCommunicator>();
}

}  // namespace switchyard
