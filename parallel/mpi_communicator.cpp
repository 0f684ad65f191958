// MPI backend (CPU tensors). Rows travel as one contiguous MPI datatype each, so per-peer counts
// stay row counts (int) however wide a row is. Errors return (MPI_ERRORS_RETURN) and are thrown
// with the rank and call; `main` turns them into MPI_Abort so no peer waits forever.
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "common/errors.h"
#include "parallel/communicator.h"
#include "parallel/watched_communicator.h"

namespace switchyard {
namespace {

// MPI is initialised once per process and finalised at exit, after every communicator is gone.
struct MpiRuntime {
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // Serialized, not funneled: autograd runs the backward of a GPU tensor's exchange on its
      // device thread, so ranks sharing a GPU (staged through host memory) call MPI from there
      // while the main thread waits in backward(); calls never overlap.
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      SY_CHECK(rc == MPI_SUCCESS, "mpi: MPI_Init_thread failed (error ", rc, ")");
      owns = true;
    } else {
      SY_CHECK(MPI_Query_thread(&provided) == MPI_SUCCESS, "mpi: MPI_Query_thread failed");
    }
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns && !finalized) MPI_Finalize();
  }
  bool owns = false;
  int provided = MPI_THREAD_SINGLE;  ///< the thread level MPI granted
};

const MpiRuntime& ensure_mpi() {
  static MpiRuntime runtime;
  return runtime;
}

bool mpi_alive() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return !finalized;
}

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return MPI_FLOAT;
    case torch::kDouble:
      return MPI_DOUBLE;
    case torch::kLong:
      return MPI_INT64_T;
    case torch::kInt:
      return MPI_INT32_T;
    case torch::kByte:
      return MPI_UINT8_T;
    case torch::kChar:
      return MPI_INT8_T;
    case torch::kBool:
      return MPI_C_BOOL;
    default:
      return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
    default:
      return MPI_SUM;
  }
}

int to_int(int64_t v, const char* what) {
  SY_CHECK(v >= 0 && v <= INT_MAX, "mpi: ", what, " ", v, " does not fit an MPI count");
  return int(v);
}

// The most bytes one MPI call moves as plain bytes (an int's worth). SWITCHYARD_MPI_MAX_CHUNK_BYTES
// lowers it, so tests reach the chunked paths without gigabytes of memory.
int64_t max_chunk_bytes() {
  static const int64_t limit = [] {
    const char* v = std::getenv("SWITCHYARD_MPI_MAX_CHUNK_BYTES");
    const long long n = v ? std::atoll(v) : 0;
    return n > 0 && n < INT_MAX ? int64_t(n) : int64_t(INT_MAX);
  }();
  return limit;
}

// A valid address for zero-length buffers (some MPIs reject null even with zero counts).
void* nonnull(void* p) {
  static char dummy;
  return p ? p : &dummy;
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiCommunicator() override {
    // MPI_Comm_free is collective: while an exception unwinds (one rank failing, its peers
    // waiting in some other collective) it could wait forever, so the communicator is left to
    // MPI_Abort, which the error path calls next.
    if (owned_ && mpi_alive() && std::uncaught_exceptions() == 0) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  torch::Tensor all_to_all_v(const torch::Tensor& input, const std::vector<int64_t>& send,
                             const std::vector<int64_t>& recv) override {
    const auto out_shape = all_to_all_v_output_shape(*this, input, send, recv);
    SY_CHECK(input.device().is_cpu(), "mpi rank ", rank_, ": all_to_all_v needs a CPU tensor");
    auto in = input.contiguous();
    auto out = torch::empty(out_shape, in.options());
    return exchange_rows(in, out, send, recv);
  }

  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send) override {
    check_peer_counts(*this, send, "send_counts");
    std::vector<int64_t> recv(size_);
    check(MPI_Alltoall(send.data(), 1, MPI_INT64_T, recv.data(), 1, MPI_INT64_T, comm_),
          "MPI_Alltoall");
    return recv;
  }

  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    SY_CHECK(tensor.device().is_cpu(), "mpi rank ", rank_, ": all_reduce needs a CPU tensor");
    // No MPI type for bf16/fp16: reduce in fp32 and round once.
    const bool widen =
        tensor.scalar_type() == torch::kBFloat16 || tensor.scalar_type() == torch::kHalf;
    torch::Tensor work = widen ? tensor.to(torch::kFloat) : tensor.contiguous();
    MPI_Datatype type = mpi_type(work.scalar_type());
    SY_CHECK(type != MPI_DATATYPE_NULL, "mpi rank ", rank_, ": all_reduce of ",
             tensor.scalar_type());
    SY_CHECK(op != ReduceOp::kAvg || work.is_floating_point(), "mpi: average of an integer tensor");
    const int64_t n = work.numel();
    char* base = static_cast<char*>(work.data_ptr());
    const int64_t max_elems = std::max<int64_t>(1, max_chunk_bytes() / work.element_size());
    for (int64_t done = 0; done < n;) {  // chunks keep counts within int
      const int64_t chunk = std::min<int64_t>(n - done, max_elems);
      check(MPI_Allreduce(MPI_IN_PLACE, base + done * work.element_size(), int(chunk), type,
                          mpi_op(op), comm_),
            "MPI_Allreduce");
      done += chunk;
    }
    if (op == ReduceOp::kAvg) work.div_(size_);
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  void broadcast(torch::Tensor& tensor, int root) override {
    SY_CHECK(root >= 0 && root < size_, "mpi rank ", rank_, ": broadcast root ", root,
             " out of range");
    torch::Tensor work = tensor.contiguous();
    char* base = static_cast<char*>(work.data_ptr());
    const int64_t bytes = work.nbytes();
    for (int64_t done = 0; done < bytes;) {
      const int64_t chunk = std::min<int64_t>(bytes - done, max_chunk_bytes());
      check(MPI_Bcast(base + done, int(chunk), MPI_BYTE, root, comm_), "MPI_Bcast");
      done += chunk;
    }
    if (!work.is_same(tensor)) tensor.copy_(work);
  }

  torch::Tensor all_gather(const torch::Tensor& tensor) override {
    auto in = tensor.contiguous();
    auto shape = in.dim() ? in.sizes().vec() : std::vector<int64_t>{1};
    shape[0] *= size_;
    auto out = torch::empty(shape, in.options());
    const int64_t bytes = in.nbytes();
    const int64_t limit = max_chunk_bytes();
    if (bytes <= limit) {
      check(MPI_Allgather(nonnull(in.data_ptr()), int(bytes), MPI_BYTE, nonnull(out.data_ptr()),
                          int(bytes), MPI_BYTE, comm_),
            "MPI_Allgather");
      return out;
    }
    // Above an int's worth of bytes: gather slice by slice through a staging buffer, then put
    // each rank's slice in its place.
    const auto* src = static_cast<const char*>(in.data_ptr());
    auto* dst = static_cast<char*>(out.data_ptr());
    const int64_t slice = std::max<int64_t>(1, limit / size_);
    std::vector<char> staged(size_t(slice) * size_);
    for (int64_t done = 0; done < bytes; done += slice) {
      const int64_t n = std::min(slice, bytes - done);
      check(MPI_Allgather(src + done, int(n), MPI_BYTE, staged.data(), int(n), MPI_BYTE, comm_),
            "MPI_Allgather");
      for (int p = 0; p < size_; ++p)
        std::memcpy(dst + p * bytes + done, staged.data() + p * n, size_t(n));
    }
    return out;
  }

  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }

  std::shared_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    return std::make_shared<MpiCommunicator>(sub, /*owned=*/true);
  }

 private:
  void check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(detail::concat("mpi rank ", rank_, " of ", size_, ": ", call,
                               " failed: ", std::string(msg, len)));
  }

  torch::Tensor exchange_rows(const torch::Tensor& in, torch::Tensor& out,
                              const std::vector<int64_t>& send, const std::vector<int64_t>& recv) {
    int64_t row_elems = 1;
    for (int64_t d = 1; d < in.dim(); ++d) row_elems *= in.size(d);
    const int64_t row_bytes = row_elems * in.element_size();
    if (row_bytes == 0) return out;  // nothing to move, but every rank still agrees on counts
    int64_t send_rows = 0, recv_rows = 0;
    for (int p = 0; p < size_; ++p) send_rows += send[p], recv_rows += recv[p];
    // Plain bytes while byte displacements fit in an int: Open MPI's shared-memory path copies
    // MPI_BYTE directly but runs a derived type through its convertor (several times slower:
    // bench/RESULTS.md, "Measurements behind the code").
    // Larger exchanges count in rows of one contiguous datatype instead.
    const bool as_bytes = std::max(send_rows, recv_rows) * row_bytes <= max_chunk_bytes();
    const int64_t unit = as_bytes ? row_bytes : 1;
    MPI_Datatype type = MPI_BYTE;
    if (!as_bytes) {
      check(MPI_Type_contiguous(to_int(row_bytes, "row bytes"), MPI_BYTE, &type),
            "MPI_Type_contiguous");
      check(MPI_Type_commit(&type), "MPI_Type_commit");
    }
    std::vector<int> sc(size_), rc(size_), sd(size_), rd(size_);
    int64_t soff = 0, roff = 0;
    for (int p = 0; p < size_; ++p) {
      sc[p] = to_int(send[p] * unit, "send count");
      rc[p] = to_int(recv[p] * unit, "recv count");
      sd[p] = to_int(soff, "send displacement");
      rd[p] = to_int(roff, "recv displacement");
      soff += send[p] * unit;
      roff += recv[p] * unit;
    }
    const int rc_mpi = MPI_Alltoallv(nonnull(in.data_ptr()), sc.data(), sd.data(), type,
                                     nonnull(out.data_ptr()), rc.data(), rd.data(), type, comm_);
    check(rc_mpi, "MPI_Alltoallv");
    if (!as_bytes) check(MPI_Type_free(&type), "MPI_Type_free");
    return out;
  }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

namespace {
int world_size_if_running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return 0;
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}
}  // namespace

int distributed_rank() {
  if (world_size_if_running() <= 1) return -1;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

void abort_world_if_distributed(int exit_code) {
  if (world_size_if_running() > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var)) return true;
  return false;
}

bool mpi_allows_any_thread() {
  return ensure_mpi().provided >= MPI_THREAD_SERIALIZED;
}

CommunicatorPtr make_mpi_world_communicator() {
  // One watched world per process, so its collectives are numbered in one sequence.
  static const CommunicatorPtr world = [] {
    ensure_mpi();
    auto mpi = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, /*owned=*/false);
    const int size = mpi->size();
    return watch_communicator(std::move(mpi), "world", identity_ranks(size));
  }();
  return world;
}

CommunicatorPtr make_world_communicator() {
  return launched_by_mpi() ? make_mpi_world_communicator() : make_single_process_communicator();
}

}  // namespace switchyard
