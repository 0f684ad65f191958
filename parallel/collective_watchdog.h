// The collective watchdog and flight recorder. Every collective a watched communicator issues
// (parallel/watched_communicator.h) gets a sequence number in its group and a record in a ring
// buffer; a thread per process checks the collectives in flight against parallel.timeout_s.
// When one has waited too long it prints one line naming this rank, the collective, its group
// and sequence number and, from the heartbeat files the other ranks publish, the ranks that never
// entered it; appends the flight record to rank<r>.log; releases stuck backends (NCCL's
// ncclCommAbort) and ends the job (MPI_Abort), so a stopped or hung rank never leaves the others
// blocked forever.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace switchyard {

class Communicator;

/// One group as the watchdog knows it: shared by a watched communicator and the watchdog.
struct WatchedGroup {
  std::string name;                     ///< "world", "ep0", "dp1", ...: the same on every member
  std::vector<int> world_ranks;         ///< world rank of each group rank; empty when unknown
  std::shared_ptr<Communicator> inner;  ///< the backend, whose abort() releases a stuck call
  int64_t entered = 0;                  ///< sequence number of the last collective begun
  int64_t completed = 0;                ///< ... and of the last one finished
  std::string last_op;                  ///< the op of `entered`

  /// "ep0 (world ranks 0-3)", or "ep0 (4 ranks)" when the world ranks are unknown.
  std::string describe() const;
  /// The world rank of group rank `r`, or -1 when unknown.
  int world_rank(int r) const;
};

/// One collective as the flight recorder keeps it. Times are seconds since the Unix epoch.
struct CollectiveRecord {
  int64_t seq = 0;  ///< per group, from 1
  std::string op;   ///< "all_to_all_v", "all_reduce", ...
  std::string group;
  int64_t bytes = 0;  ///< what this rank contributes
  double start = 0;
  double end = 0;  ///< 0 while in flight
};

/// What another rank last published about itself (its heartbeat file).
struct PeerHeartbeat {
  bool found = false;  ///< false: no readable file
  double time = 0;     ///< when it was written
  struct Group {
    std::string name;
    int64_t entered = 0, completed = 0;
    std::string last_op;
  };
  std::vector<Group> groups;
  const Group* group(const std::string& name) const;
};

/// The heartbeat file's text, and back (one group per line).
std::string format_heartbeat(double time, const std::vector<PeerHeartbeat::Group>& groups);
PeerHeartbeat parse_heartbeat(const std::string& text);

/// The ranks of `group` that never entered collective `seq` of it: those whose heartbeat shows
/// an earlier sequence number, and those with no heartbeat newer than `stale_s` at `now` (a
/// stopped process publishes nothing). `peers[world_rank]` is each rank's heartbeat; this rank
/// (`me`) is skipped. Returns "rank 2 (no heartbeat for 6.1 s; last entered all_reduce #40)"
/// parts joined by ", ", or "" when every peer is in the collective too.
std::string ranks_missing_from(const WatchedGroup& group, int64_t seq, int me,
                               const std::vector<PeerHeartbeat>& peers, double now, double stale_s);

struct WatchdogOptions {
  double timeout_s = 600;  ///< parallel.timeout_s; 0 turns the deadline off
  std::string log_dir;     ///< rank<r>.log and heartbeat/ go here; "" until a run names one
  bool remove_log_dir_at_exit = false;  ///< a temporary folder this rank made: gone at a clean exit
};

/// The process's watchdog. Thread-safe; collectives call begin()/end() from any thread.
class CollectiveWatchdog {
 public:
  static CollectiveWatchdog& instance();

  /// Sets the deadline and where logs go (`world_rank` names the files); starts the thread.
  void configure(const WatchdogOptions& options, int world_rank);
  WatchdogOptions options() const;

  /// Registers a group (weakly: the watchdog never keeps a communicator alive).
  void add_group(const std::shared_ptr<WatchedGroup>& group);

  /// Renames a group and sets its world ranks (ProcessGroups: "ep0", "dp1").
  void relabel(WatchedGroup& group, const std::string& name, const std::vector<int>& world_ranks);

  /// Records a collective as begun and returns its handle for end(). `device_done`, when set,
  /// says whether the device has finished the work the call enqueued (NCCL runs asynchronously
  /// on a CUDA stream): the collective stays in flight until it returns true.
  uint64_t begin(const std::shared_ptr<WatchedGroup>& group, const char* op, int64_t bytes);
  void end(uint64_t handle, std::function<bool()> device_done = {});

  /// The last collectives, oldest first (at most kRingSize).
  std::vector<CollectiveRecord> flight_record() const;
  static constexpr size_t kRingSize = 256;

  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

 private:
  CollectiveWatchdog();
  ~CollectiveWatchdog();
  struct State;
  std::unique_ptr<State> state_;
};

namespace config {
class ParallelConfig;
}

/// Configures the watchdog from parallel.timeout_s, with logs in `log_dir` (a run folder). With
/// no log_dir and more than one rank, rank 0 makes a folder under the temporary directory and
/// tells the others (collective over `world`), so heartbeats can still name a stalled rank.
void start_collective_watchdog(Communicator& world, const config::ParallelConfig& parallel,
                               const std::string& log_dir);

}  // namespace switchyard
