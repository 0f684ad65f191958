// NCCL backend (CUDA tensors). Collectives are enqueued on the caller's current CUDA stream, so
// they are ordered after the kernels that produced their inputs and before those that consume
// their outputs without extra events. The unique id travels over a host communicator (MPI, or
// nothing at world size 1). Built only when CUDA is compiled in.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

#include "common/errors.h"
#include "common/host_reads.h"
#include "parallel/communicator.h"
#include "parallel/nccl_communicator.h"

namespace switchyard {
namespace {

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return ncclFloat32;
    case torch::kDouble:
      return ncclFloat64;
    case torch::kHalf:
      return ncclFloat16;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kLong:
      return ncclInt64;
    case torch::kInt:
      return ncclInt32;
    case torch::kByte:
    case torch::kBool:
      return ncclUint8;
    case torch::kChar:
      return ncclInt8;
    default:
      throw Error(detail::concat("nccl: unsupported dtype ", t));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kAvg:
      return ncclAvg;
    default:
      return ncclSum;
  }
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device) : comm_(comm), device_(device) {
    check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  ~NcclCommunicator() override {
    // ncclCommDestroy waits for the communicator's work, which never ends when a peer failed:
    // while an exception unwinds (or after the watchdog aborted it) abort instead.
    if (aborted_.exchange(true)) return;
    if (std::uncaught_exceptions() > 0)
      ncclCommAbort(comm_);
    else
      ncclCommDestroy(comm_);
  }

  void abort() override {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);
  }

  std::string async_error() override {
    if (aborted_) return "";
    ncclResult_t rc = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &rc) != ncclSuccess) return "ncclCommGetAsyncError failed";
    if (rc == ncclSuccess || rc == ncclInProgress) return "";
    return detail::concat(ncclGetErrorString(rc), " ", ncclGetLastError(comm_));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  torch::Tensor all_to_all_v(const torch::Tensor& input, const std::vector<int64_t>& send,
                             const std::vector<int64_t>& recv) override {
    const auto out_shape = all_to_all_v_output_shape(*this, input, send, recv);
    check_device(input, "all_to_all_v");
    c10::cuda::CUDAGuard guard(device_);
    auto in = input.contiguous();
    auto out = torch::empty(out_shape, in.options());
    int64_t row_bytes = in.element_size();
    for (int64_t d = 1; d < in.dim(); ++d) row_bytes *= in.size(d);
    auto stream = stream_now();
    const auto* src = static_cast<const char*>(in.data_ptr());
    auto* dst = static_cast<char*>(out.data_ptr());
    int64_t soff = 0, roff = 0;
    // Grouped point-to-point: NCCL schedules all pairs at once; zero-count pairs are skipped.
    check(ncclGroupStart(), "ncclGroupStart");
    for (int p = 0; p < size_; ++p) {
      if (send[p] > 0)
        check(ncclSend(src + soff * row_bytes, size_t(send[p] * row_bytes), ncclUint8, p, comm_,
                       stream),
              "ncclSend");
      if (recv[p] > 0)
        check(ncclRecv(dst + roff * row_bytes, size_t(recv[p] * row_bytes), ncclUint8, p, comm_,
                       stream),
              "ncclRecv");
      soff += send[p];
      roff += recv[p];
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    return out;
  }

  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send) override {
    check_peer_counts(*this, send, "send_counts");
    auto opts = torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA, device_);
    auto counts = to_device_without_sync(torch::tensor(send, torch::kLong), opts.device());
    std::vector<int64_t> ones(size_, 1);
    auto recv = all_to_all_v(counts, ones, ones).cpu();  // the host needs them: one sync
    return {recv.data_ptr<int64_t>(), recv.data_ptr<int64_t>() + size_};
  }

  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    check_device(tensor, "all_reduce");
    c10::cuda::CUDAGuard guard(device_);
    torch::Tensor work = tensor.contiguous();
    check(ncclAllReduce(work.data_ptr(), work.data_ptr(), size_t(work.numel()),
                        nccl_type(work.scalar_type()), nccl_op(op), comm_, stream_now()),
          "ncclAllReduce");
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  void broadcast(torch::Tensor& tensor, int root) override {
    SY_CHECK(root >= 0 && root < size_, "nccl rank ", rank_, ": broadcast root ", root,
             " out of range");
    check_device(tensor, "broadcast");
    c10::cuda::CUDAGuard guard(device_);
    torch::Tensor work = tensor.contiguous();
    check(ncclBroadcast(work.data_ptr(), work.data_ptr(), size_t(work.nbytes()), ncclUint8, root,
                        comm_, stream_now()),
          "ncclBroadcast");
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  torch::Tensor all_gather(const torch::Tensor& tensor) override {
    check_device(tensor, "all_gather");
    c10::cuda::CUDAGuard guard(device_);
    auto in = tensor.contiguous();
    auto shape = in.dim() ? in.sizes().vec() : std::vector<int64_t>{1};
    shape[0] *= size_;
    auto out = torch::empty(shape, in.options());
    check(ncclAllGather(in.data_ptr(), out.data_ptr(), size_t(in.nbytes()), ncclUint8, comm_,
                        stream_now()),
          "ncclAllGather");
    return out;
  }

  void barrier() override {
    auto one = torch::ones({1}, torch::TensorOptions().device(torch::kCUDA, device_));
    all_reduce(one, ReduceOp::kSum);
    stream_now().synchronize();
  }

  std::shared_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    check(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit");
    SY_CHECK(sub != nullptr, "nccl rank ", rank_, ": ncclCommSplit gave no communicator");
    return std::make_shared<NcclCommunicator>(sub, device_);
  }

 private:
  c10::cuda::CUDAStream stream_now() const { return c10::cuda::getCurrentCUDAStream(device_); }

  void check(ncclResult_t rc, const char* call) const {
    // ncclInProgress is not success: the call is still being set up (non-blocking
    // communicators); wait for its outcome, which the collective watchdog bounds.
    while (rc == ncclInProgress && !aborted_) {
      std::this_thread::yield();
      if (ncclCommGetAsyncError(comm_, &rc) != ncclSuccess) break;
    }
    if (rc == ncclSuccess) return;
    throw Error(detail::concat("nccl rank ", rank_, " of ", size_, ": ", call,
                               " failed: ", ncclGetErrorString(rc), " ", ncclGetLastError(comm_)));
  }
  void check_device(const torch::Tensor& t, const char* call) const {
    SY_CHECK(t.is_cuda() && t.get_device() == device_, "nccl rank ", rank_, ": ", call,
             " needs a tensor on cuda:", device_, ", got ", t.device());
  }

  ncclComm_t comm_;
  std::atomic<bool> aborted_{false};
  int device_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

CommunicatorPtr make_nccl_communicator(const CommunicatorPtr& host, int device) {
  ncclUniqueId id;
  if (host->rank() == 0) {
    ncclResult_t rc = ncclGetUniqueId(&id);
    SY_CHECK(rc == ncclSuccess, "nccl: ncclGetUniqueId failed: ", ncclGetErrorString(rc));
  }
  auto bytes = torch::from_blob(&id, {int64_t(sizeof(id))}, torch::kByte).clone();
  host->broadcast(bytes, 0);  // every rank learns rank 0's id over MPI
  std::memcpy(&id, bytes.data_ptr(), sizeof(id));
  c10::cuda::CUDAGuard guard(device);
  ncclComm_t comm = nullptr;
  ncclResult_t rc = ncclCommInitRank(&comm, host->size(), id, host->rank());
  SY_CHECK(rc == ncclSuccess, "nccl rank ", host->rank(),
           ": ncclCommInitRank failed: ", ncclGetErrorString(rc));
  return std::make_shared<NcclCommunicator>(comm, device);
}

}  // namespace switchyard
