// See staging_communicator.h. Copies to and from a GPU are ordered on the current stream, as the
// NCCL backend's collectives are; copies to the host wait for the GPU (no non_blocking), so MPI
// never reads memory a kernel is still writing.
#include "parallel/staging_communicator.h"

#include "common/errors.h"

namespace switchyard {
namespace {

class StagingCommunicator : public Communicator {
 public:
  StagingCommunicator(CommunicatorPtr inner, torch::Device home)
      : inner_(std::move(inner)), home_(home) {
    SY_CHECK(inner_, "staging communicator: no inner communicator");
  }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }

  torch::Tensor all_to_all_v(const torch::Tensor& input, const std::vector<int64_t>& send,
                             const std::vector<int64_t>& recv) override {
    return back(inner_->all_to_all_v(there(input), send, recv), input);
  }

  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send) override {
    return inner_->exchange_counts(send);
  }

  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    if (at_home(tensor)) return inner_->all_reduce(tensor, op);
    auto work = there(tensor);
    inner_->all_reduce(work, op);
    tensor.copy_(work);
  }

  void broadcast(torch::Tensor& tensor, int root) override {
    if (at_home(tensor)) return inner_->broadcast(tensor, root);
    auto work = there(tensor);
    inner_->broadcast(work, root);
    tensor.copy_(work);
  }

  torch::Tensor all_gather(const torch::Tensor& tensor) override {
    return back(inner_->all_gather(there(tensor)), tensor);
  }

  void barrier() override { inner_->barrier(); }

  std::shared_ptr<Communicator> split(int color, int key) override {
    return std::make_shared<StagingCommunicator>(inner_->split(color, key), home_);
  }

  void label(const std::string& name, const std::vector<int>& world_ranks) override {
    inner_->label(name, world_ranks);
  }
  void abort() override { inner_->abort(); }
  std::string async_error() override { return inner_->async_error(); }

 private:
  bool at_home(const torch::Tensor& t) const { return t.device() == home_; }
  torch::Tensor there(const torch::Tensor& t) const { return at_home(t) ? t : t.to(home_); }
  torch::Tensor back(const torch::Tensor& result, const torch::Tensor& like) const {
    return at_home(like) ? result : result.to(like.device());
  }

  CommunicatorPtr inner_;
  torch::Device home_;
};

}  // namespace

CommunicatorPtr make_staging_communicator(CommunicatorPtr inner, torch::Device home) {
  return std::make_shared<StagingCommunicator>(std::move(inner), home);
}

}  // namespace switchyard
