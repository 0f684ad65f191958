// See collective_watchdog.h. One mutex guards everything: a collective takes it twice (begin,
// end) uncontended, which costs well under a microsecond against collectives of tens of
// microseconds at least.
#include "parallel/collective_watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/errors.h"
#include "configs/switchyard.pb.h"
#include "parallel/communicator.h"

namespace switchyard {
namespace fs = std::filesystem;
namespace {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Heartbeats are written this often; a peer silent for kStaleBeats of them is taken as stopped.
double beat_interval(double timeout_s) {
  return timeout_s <= 0 ? 2.0 : std::clamp(timeout_s / 5, 0.2, 2.0);
}
constexpr double kStaleBeats = 3;

std::string heartbeat_path(const std::string& dir, int rank) {
  return dir + "/heartbeat/rank" + std::to_string(rank);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string WatchedGroup::describe() const {
  if (world_ranks.empty()) return detail::concat(name, " (", inner ? inner->size() : 0, " ranks)");
  bool consecutive = true;
  for (size_t i = 1; i < world_ranks.size(); ++i)
    consecutive = consecutive && world_ranks[i] == world_ranks[i - 1] + 1;
  std::string ranks;
  if (consecutive && world_ranks.size() > 2) {
    ranks = detail::concat(world_ranks.front(), "-", world_ranks.back());
  } else {
    for (size_t i = 0; i < world_ranks.size(); ++i)
      ranks += (i ? "," : "") + std::to_string(world_ranks[i]);
  }
  return name + " (world ranks " + ranks + ")";
}

int WatchedGroup::world_rank(int r) const {
  return r >= 0 && r < int(world_ranks.size()) ? world_ranks[r] : -1;
}

const PeerHeartbeat::Group* PeerHeartbeat::group(const std::string& name) const {
  for (const auto& g : groups)
    if (g.name == name) return &g;
  return nullptr;
}

std::string format_heartbeat(double time, const std::vector<PeerHeartbeat::Group>& groups) {
  std::ostringstream out;
  out.precision(17);
  out << "time " << time << "\n";
  for (const auto& g : groups)
    out << "group " << g.name << " entered " << g.entered << " "
        << (g.last_op.empty() ? "-" : g.last_op) << " completed " << g.completed << "\n";
  return out.str();
}

PeerHeartbeat parse_heartbeat(const std::string& text) {
  PeerHeartbeat beat;
  std::istringstream in(text);
  std::string line;
  bool has_time = false;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "time") {
      has_time = bool(words >> beat.time);
    } else if (key == "group") {
      PeerHeartbeat::Group g;
      std::string entered, completed;
      if (words >> g.name >> entered >> g.entered >> g.last_op >> completed >> g.completed &&
          entered == "entered" && completed == "completed") {
        if (g.last_op == "-") g.last_op.clear();
        beat.groups.push_back(std::move(g));
      }
    }
  }
  beat.found = has_time;  // a file cut short by a crash reads as no heartbeat
  return beat;
}

std::string ranks_missing_from(const WatchedGroup& group, int64_t seq, int me,
                               const std::vector<PeerHeartbeat>& peers, double now,
                               double stale_s) {
  std::string out;
  const int n = group.inner ? group.inner->size() : int(group.world_ranks.size());
  for (int r = 0; r < n; ++r) {
    const int q = group.world_rank(r);
    if (q < 0 || q == me) continue;
    const PeerHeartbeat* beat = q < int(peers.size()) ? &peers[q] : nullptr;
    std::string why;
    const PeerHeartbeat::Group* g = beat && beat->found ? beat->group(group.name) : nullptr;
    const std::string last =
        g ? detail::concat("last entered ", g->last_op.empty() ? "nothing" : g->last_op, " #",
                           g->entered)
          : "";
    if (!beat || !beat->found) {
      why = "no heartbeat file";
    } else if (now - beat->time > stale_s) {
      why = "no heartbeat for " + detail::seconds_text(now - beat->time) +
            (last.empty() ? "" : "; " + last);
    } else if (!g || g->entered < seq) {
      why = g ? last : "never used " + group.name;
    } else {
      continue;  // in this collective (or past it) and alive: waiting like us
    }
    out += (out.empty() ? "" : ", ") + detail::concat("rank ", q, " (", why, ")");
  }
  return out;
}

// ---- the watchdog ----------------------------------------------------------------------------

struct CollectiveWatchdog::State {
  struct Pending {
    uint64_t handle;
    std::shared_ptr<WatchedGroup> group;
    int64_t seq;
    std::string op;
    std::chrono::steady_clock::time_point start;
    bool host_done = false;
    std::function<bool()> device_done;
  };

  mutable std::mutex mutex;
  std::condition_variable wake;
  WatchdogOptions options;
  int world_rank = -1;
  std::vector<std::weak_ptr<WatchedGroup>> groups;
  std::vector<Pending> pending;
  std::vector<CollectiveRecord> ring = std::vector<CollectiveRecord>(kRingSize);
  std::vector<uint64_t> ring_handle = std::vector<uint64_t>(kRingSize, 0);
  uint64_t next_handle = 1;
  std::thread thread;
  bool stop = false;
  bool expired = false;
  double last_beat = 0;

  CollectiveRecord* record(uint64_t handle) {
    const size_t slot = handle % kRingSize;
    return ring_handle[slot] == handle ? &ring[slot] : nullptr;
  }

  void finish(const Pending& p) {
    p.group->completed = std::max(p.group->completed, p.seq);
    if (CollectiveRecord* r = record(p.handle)) r->end = wall_now();
  }

  std::vector<CollectiveRecord> records() const {
    std::vector<CollectiveRecord> out;
    for (uint64_t h = next_handle > kRingSize ? next_handle - kRingSize : 1; h < next_handle; ++h)
      out.push_back(ring[h % kRingSize]);
    return out;
  }

  std::vector<std::shared_ptr<WatchedGroup>> live_groups() {
    std::vector<std::shared_ptr<WatchedGroup>> out;
    for (auto& w : groups)
      if (auto g = w.lock()) out.push_back(std::move(g));
    return out;
  }

  void write_heartbeat(double now) {
    if (options.log_dir.empty() || world_rank < 0) return;
    std::vector<PeerHeartbeat::Group> list;
    for (const auto& g : live_groups())
      list.push_back({g->name, g->entered, g->completed, g->last_op});
    const std::string path = heartbeat_path(options.log_dir, world_rank);
    const std::string partial = path + ".partial";
    {
      std::ofstream out(partial, std::ios::trunc);
      if (!(out << format_heartbeat(now, list))) return;  // best effort: peers see it stale
    }
    std::error_code ec;
    fs::rename(partial, path, ec);
    last_beat = now;
  }

  std::vector<PeerHeartbeat> read_peers(const WatchedGroup& g) const {
    std::vector<PeerHeartbeat> peers;
    if (options.log_dir.empty()) return peers;
    for (int q : g.world_ranks) {
      if (q < 0) continue;
      if (int(peers.size()) <= q) peers.resize(q + 1);
      peers[q] = parse_heartbeat(read_file(heartbeat_path(options.log_dir, q)));
    }
    return peers;
  }

  // Called with the mutex held; never returns.
  [[noreturn]] void expire(const Pending& p, const std::string& problem, bool timed_out) {
    expired = true;
    double now = wall_now();
    const double stale_s = kStaleBeats * beat_interval(options.timeout_s) + 0.5;
    auto missing_now = [&] {
      return ranks_missing_from(*p.group, p.seq, world_rank, read_peers(*p.group), now, stale_s);
    };
    std::string missing = missing_now();
    // A peer stopped inside this collective has entered it, and its last heartbeat may still be
    // fresh when a collective that started long before the stop times out (ranks wait a while on
    // a loaded machine). Give such a peer the time to go stale before concluding that every rank
    // is in: ending the job a few seconds later is worth naming the rank that stalled it.
    const double give_up = now + stale_s;
    while (timed_out && missing.empty() && now < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      now = wall_now();
      missing = missing_now();
    }
    const std::string log = options.log_dir.empty()
                                ? ""
                                : options.log_dir + "/rank" + std::to_string(world_rank) + ".log";
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::ostringstream line;
    line << "switchyard (rank " << world_rank << " on " << host << "): collective " << p.op << " #"
         << p.seq << " on group " << p.group->describe() << " " << problem << "; "
         << (missing.empty() ? "every other rank of the group entered it"
                             : "never entered by " + missing)
         << (log.empty() ? "" : "; flight record in " + log) << "; ending the job";
    if (!log.empty()) {
      std::ofstream out(log, std::ios::app);
      out << line.str() << "\nflight record (last " << kRingSize
          << " collectives of this rank, oldest first; times relative to the stalled one's "
             "start):\n";
      const double t0 =
          now - std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
      for (const auto& r : records()) {
        if (r.seq == 0) continue;
        char buf[256];
        std::snprintf(
            buf, sizeof buf, "  %-8s #%-8lld %-16s %12lld bytes  start %+10.3f s  %s\n",
            r.group.c_str(), (long long)r.seq, r.op.c_str(), (long long)r.bytes, r.start - t0,
            r.end > 0 ? ("took " + std::to_string(r.end - r.start) + " s").c_str() : "in flight");
        out << buf;
      }
    }
    std::cerr << line.str() << std::endl;
    // Release backends a kernel may be stuck in (NCCL), then end every rank. Should MPI_Abort
    // itself hang, SIGALRM's default action ends this process and mpirun the others.
    for (const auto& g : live_groups()) g->inner->abort();
    alarm(15);
    abort_world_if_distributed(1);
    std::_Exit(1);
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stop) {
      const double timeout = options.timeout_s;
      const double tick = std::clamp(timeout / 20, 0.02, 0.5);
      wake.wait_for(lock, std::chrono::duration<double>(tick));
      if (stop) break;
      // Collectives the device has finished since (NCCL's kernels).
      for (size_t i = 0; i < pending.size();) {
        if (pending[i].host_done && pending[i].device_done && pending[i].device_done()) {
          finish(pending[i]);
          pending.erase(pending.begin() + i);
        } else {
          ++i;
        }
      }
      for (const auto& p : pending) {
        const std::string error = p.group->inner->async_error();
        if (!error.empty()) expire(p, "failed on the device: " + error, false);
      }
      const auto now = std::chrono::steady_clock::now();
      if (timeout > 0)
        for (const auto& p : pending)
          if (std::chrono::duration<double>(now - p.start).count() > timeout)
            expire(p,
                   detail::concat(
                       "has not finished after ",
                       detail::seconds_text(std::chrono::duration<double>(now - p.start).count()),
                       " (parallel.timeout_s = ", timeout, ")"),
                   true);
      const double wall = wall_now();
      if (wall - last_beat >= beat_interval(timeout)) write_heartbeat(wall);
    }
  }

  void shut_down() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    wake.notify_all();
    if (thread.joinable()) thread.join();
    if (!options.log_dir.empty() && world_rank >= 0) {
      std::error_code ec;  // a clean exit: no heartbeat left to look stale
      fs::remove(heartbeat_path(options.log_dir, world_rank), ec);
      if (options.remove_log_dir_at_exit) fs::remove_all(options.log_dir, ec);
    }
  }

  void start_thread_locked() {
    if (thread.joinable()) return;
    thread = std::thread([this] { run(); });
    // Stopped at exit before MPI is finalised (MPI was initialised before the first collective,
    // so this handler, registered later, runs first).
    std::atexit([] { CollectiveWatchdog::instance().state_->shut_down(); });
  }
};

CollectiveWatchdog::CollectiveWatchdog() : state_(std::make_unique<State>()) {}
CollectiveWatchdog::~CollectiveWatchdog() = default;

CollectiveWatchdog& CollectiveWatchdog::instance() {
  // Never destroyed: collectives may run during static destruction.
  static auto* watchdog = new CollectiveWatchdog();
  return *watchdog;
}

void CollectiveWatchdog::configure(const WatchdogOptions& options, int world_rank) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->options = options;
  state_->world_rank = world_rank;
  state_->last_beat = 0;  // publish at once
  if (!options.log_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.log_dir + "/heartbeat", ec);
  }
  state_->start_thread_locked();
  state_->wake.notify_all();
}

WatchdogOptions CollectiveWatchdog::options() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->options;
}

void CollectiveWatchdog::add_group(const std::shared_ptr<WatchedGroup>& group) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& groups = state_->groups;
  groups.erase(std::remove_if(groups.begin(), groups.end(), [](auto& w) { return w.expired(); }),
               groups.end());
  groups.push_back(group);
  state_->start_thread_locked();
}

void CollectiveWatchdog::relabel(WatchedGroup& group, const std::string& name,
                                 const std::vector<int>& world_ranks) {
  std::lock_guard<std::mutex> lock(state_->mutex);  // the thread reads names for heartbeats
  group.name = name;
  group.world_ranks = world_ranks;
}

uint64_t CollectiveWatchdog::begin(const std::shared_ptr<WatchedGroup>& group, const char* op,
                                   int64_t bytes) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  State& s = *state_;
  const uint64_t handle = s.next_handle++;
  const int64_t seq = ++group->entered;
  group->last_op = op;
  const size_t slot = handle % kRingSize;
  s.ring[slot] = {seq, op, group->name, bytes, wall_now(), 0};
  s.ring_handle[slot] = handle;
  s.pending.push_back({handle, group, seq, op, std::chrono::steady_clock::now()});
  return handle;
}

void CollectiveWatchdog::end(uint64_t handle, std::function<bool()> device_done) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& pending = state_->pending;
  for (size_t i = 0; i < pending.size(); ++i) {
    if (pending[i].handle != handle) continue;
    if (device_done && !device_done()) {  // still running on the device: the thread polls it
      pending[i].host_done = true;
      pending[i].device_done = std::move(device_done);
    } else {
      state_->finish(pending[i]);
      pending.erase(pending.begin() + i);
    }
    return;
  }
}

std::vector<CollectiveRecord> CollectiveWatchdog::flight_record() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->records();
}

void start_collective_watchdog(Communicator& world, const config::ParallelConfig& parallel,
                               const std::string& log_dir) {
  if (world.size() == 1) return;  // no peer to wait for
  auto& watchdog = CollectiveWatchdog::instance();
  WatchdogOptions options{.timeout_s = parallel.timeout_s(), .log_dir = log_dir};
  if (options.log_dir.empty()) options.log_dir = watchdog.options().log_dir;  // keep a run's
  if (options.log_dir.empty() && world.size() > 1) {
    // Rank 0 names a fresh folder; ranks on other hosts make the same path locally (their
    // heartbeats are then invisible to rank 0's host, and its messages say so).
    auto name = torch::zeros({512}, torch::kByte);
    if (world.rank() == 0) {
      std::string pattern = (fs::temp_directory_path() / "switchyard-watchdog-XXXXXX").string();
      SY_CHECK(mkdtemp(pattern.data()) != nullptr, "collective watchdog: cannot create ", pattern);
      SY_CHECK(pattern.size() < 512, "collective watchdog: temporary path too long");
      std::memcpy(name.data_ptr(), pattern.data(), pattern.size());
    }
    world.broadcast(name, 0);
    options.log_dir = reinterpret_cast<const char*>(name.data_ptr());
    options.remove_log_dir_at_exit = world.rank() == 0;
  }
  watchdog.configure(options, world.rank());
}

}  // namespace switchyard
