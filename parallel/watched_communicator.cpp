// See watched_communicator.h. Each collective is recorded as begun before the backend is called
// and as finished when it returns; on a GPU, when the CUDA event recorded after it on the
// caller's stream has completed (NCCL only enqueues the work).
#include "parallel/watched_communicator.h"

#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "parallel/collective_watchdog.h"

namespace switchyard {
namespace {

// Whether the device has finished what was enqueued on `t`'s current stream so far; empty for
// CPU tensors, whose collectives are done when the call returns.
std::function<bool()> device_done_probe(const torch::Tensor& t) {
  if (!t.defined() || !t.is_cuda()) return {};
  auto event = std::make_shared<c10::Event>(c10::DeviceType::CUDA);
  event->record(c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device()));
  return [event] { return event->query(); };
}

class WatchedCommunicator : public Communicator {
 public:
  explicit WatchedCommunicator(std::shared_ptr<WatchedGroup> group) : group_(std::move(group)) {
    CollectiveWatchdog::instance().add_group(group_);
  }

  int rank() const override { return inner().rank(); }
  int size() const override { return inner().size(); }
  std::string backend() const override { return inner().backend(); }

  torch::Tensor all_to_all_v(const torch::Tensor& input, const std::vector<int64_t>& send,
                             const std::vector<int64_t>& recv) override {
    Scope scope(group_, "all_to_all_v", int64_t(input.nbytes()));
    auto out = inner().all_to_all_v(input, send, recv);
    scope.done(out);
    return out;
  }

  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send) override {
    Scope scope(group_, "exchange_counts", int64_t(send.size() * sizeof(int64_t)));
    auto recv = inner().exchange_counts(send);  // on the host when it returns
    scope.done({});
    return recv;
  }

  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    Scope scope(group_, "all_reduce", int64_t(tensor.nbytes()));
    inner().all_reduce(tensor, op);
    scope.done(tensor);
  }

  void broadcast(torch::Tensor& tensor, int root) override {
    Scope scope(group_, "broadcast", int64_t(tensor.nbytes()));
    inner().broadcast(tensor, root);
    scope.done(tensor);
  }

  torch::Tensor all_gather(const torch::Tensor& tensor) override {
    Scope scope(group_, "all_gather", int64_t(tensor.nbytes()));
    auto out = inner().all_gather(tensor);
    scope.done(out);
    return out;
  }

  void barrier() override {
    Scope scope(group_, "barrier", 0);
    inner().barrier();
    scope.done({});
  }

  std::shared_ptr<Communicator> split(int color, int key) override {
    Scope scope(group_, "split", 0);
    auto child = inner().split(color, key);
    scope.done({});
    return watch_communicator(std::move(child), group_->name + ".split" + std::to_string(color),
                              {});
  }

  void label(const std::string& name, const std::vector<int>& world_ranks) override {
    CollectiveWatchdog::instance().relabel(*group_, name, world_ranks);
  }
  void abort() override { inner().abort(); }
  std::string async_error() override { return inner().async_error(); }

 private:
  // begin() now; end() at done(), or when an exception leaves the call (the error path then
  // decides what happens to the job, not the deadline).
  class Scope {
   public:
    Scope(const std::shared_ptr<WatchedGroup>& group, const char* op, int64_t bytes)
        : handle_(CollectiveWatchdog::instance().begin(group, op, bytes)) {}
    ~Scope() {
      if (handle_) CollectiveWatchdog::instance().end(handle_);
    }
    void done(const torch::Tensor& on_device) {
      CollectiveWatchdog::instance().end(handle_, device_done_probe(on_device));
      handle_ = 0;
    }

   private:
    uint64_t handle_;
  };

  Communicator& inner() const { return *group_->inner; }

  std::shared_ptr<WatchedGroup> group_;
};

}  // namespace

CommunicatorPtr watch_communicator(CommunicatorPtr inner, std::string name,
                                   std::vector<int> world_ranks) {
  auto group = std::make_shared<WatchedGroup>();
  group->name = std::move(name);
  group->world_ranks = std::move(world_ranks);
  group->inner = std::move(inner);
  return std::make_shared<WatchedCommunicator>(std::move(group));
}

std::vector<int> identity_ranks(int size) {
  std::vector<int> ranks(size);
  for (int r = 0; r < size; ++r) ranks[r] = r;
  return ranks;
}

}  // namespace switchyard
