// The Communicator interface: the collectives expert parallelism needs (all-to-all with per-peer
// counts, all-reduce, broadcast, all-gather, barrier, split), over one of three backends.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace switchyard {

enum class ReduceOp { kSum, kMax, kMin, kAvg };

/// One group of ranks. Every call is collective: all ranks of the group make it, in the same
/// order. Errors throw switchyard::Error naming the backend, rank and call.
///   usage: auto world = make_world_communicator();
///          auto received = world->all_to_all_v(rows, send_counts, recv_counts);
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  /// Rows of `input` (dim 0) go to peers in rank order: the first send_counts[0] rows to rank 0,
  /// and so on. Returns the received rows [sum(recv_counts), ...] in sender-rank order. Counts
  /// may be zero, for any peer and for the whole exchange.
  virtual torch::Tensor all_to_all_v(const torch::Tensor& input,
                                     const std::vector<int64_t>& send_counts,
                                     const std::vector<int64_t>& recv_counts) = 0;

  /// Each rank sends one count per peer and learns what every peer sends it.
  virtual std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send_counts) = 0;

  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  virtual void broadcast(torch::Tensor& tensor, int root) = 0;
  /// Equal-shaped tensors from every rank, concatenated along dim 0 in rank order.
  virtual torch::Tensor all_gather(const torch::Tensor& tensor) = 0;
  virtual void barrier() = 0;

  /// Sub-group of the ranks passing the same color, ordered by key (MPI_Comm_split semantics).
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;

  /// Names this group for the collective watchdog's messages ("ep0", with the world rank of each
  /// group rank). Only watched communicators keep it; wrappers pass it on.
  virtual void label(const std::string& name, const std::vector<int>& world_ranks) {}

  /// Releases a collective stuck in this communicator from another thread (NCCL:
  /// ncclCommAbort); the communicator is unusable afterwards. MPI needs nothing: MPI_Abort ends
  /// the whole job.
  virtual void abort() {}

  /// A failure the backend reported asynchronously (NCCL: ncclCommGetAsyncError), or "".
  virtual std::string async_error() { return ""; }
};

using CommunicatorPtr = std::shared_ptr<Communicator>;

/// Throws unless `counts` has one non-negative entry per rank of `c` (for backends).
void check_peer_counts(const Communicator& c, const std::vector<int64_t>& counts, const char* what);

/// Checks all_to_all_v's arguments and returns the shape of its output (for backends).
std::vector<int64_t> all_to_all_v_output_shape(const Communicator& c, const torch::Tensor& input,
                                               const std::vector<int64_t>& send,
                                               const std::vector<int64_t>& recv);

/// World size 1; needs no MPI daemon. Collectives are identities.
CommunicatorPtr make_single_process_communicator();

/// True when this process was started by mpirun/srun (Open MPI, PMI or PMIx variables).
bool launched_by_mpi();

/// The world: MPI when launched by mpirun/srun (initialising MPI once), else single-process.
CommunicatorPtr make_world_communicator();

/// This process's world rank when MPI is running with more than one rank, else -1.
int distributed_rank();

/// When MPI is running with more than one rank: MPI_Abort(MPI_COMM_WORLD, exit_code), which
/// ends every rank. Otherwise does nothing. For `main`'s error path only.
void abort_world_if_distributed(int exit_code);

/// Whether MPI lets any thread call it, one at a time (MPI_THREAD_SERIALIZED or better, which
/// Switchyard asks for): initialises MPI if needed.
bool mpi_allows_any_thread();

/// MPI over MPI_COMM_WORLD (initialises MPI if needed). CPU tensors.
CommunicatorPtr make_mpi_world_communicator();

}  // namespace switchyard
