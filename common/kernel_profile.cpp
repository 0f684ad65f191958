#include "common/kernel_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#ifdef SWITCHYARD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "common/errors.h"

namespace switchyard {
namespace {

namespace prof = torch::autograd::profiler;

// Runs `pass` under the Kineto profiler, which is switched off again also when `pass` throws.
std::unique_ptr<prof::ProfilerResult> run_profiled(const prof::ProfilerConfig& config,
                                                   const std::set<prof::ActivityType>& activities,
                                                   const std::function<void()>& pass) {
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  try {
    pass();
  } catch (...) {
    prof::disableProfiler();
    throw;
  }
  return prof::disableProfiler();
}

struct Span {
  uint64_t start, end;
  std::string name;
  uint64_t children = 0;  ///< ns spent in the ops it called (CPU)
};

// The length of the union of [start, end) intervals: overlapping kernels (streams) count once.
double covered_us(std::vector<std::pair<uint64_t, uint64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  uint64_t total = 0, reach = 0;
  for (const auto& [start, end] : spans) {
    const uint64_t from = std::max(start, reach);
    if (end > from) total += end - from;
    reach = std::max(reach, end);
  }
  return double(total) / 1e3;
}

// A CUDA runtime or driver call that returns only once the device has caught up (CUPTI may name
// it with a version suffix, "cudaStreamSynchronize_v3020"). Asynchronous copies and launches
// are not among them; a synchronous copy is (a copy to a GPU from pageable memory included).
bool is_host_sync(std::string name) {
  if (const auto v = name.rfind("_v");
      v != std::string::npos && v + 2 < name.size() &&
      name.find_first_not_of("0123456789", v + 2) == std::string::npos)
    name.resize(v);
  static const std::set<std::string> syncs = {"cudaStreamSynchronize", "cudaDeviceSynchronize",
                                              "cudaEventSynchronize",  "cudaMemcpy",
                                              "cudaMemcpy2D",          "cudaFree",
                                              "cuStreamSynchronize",   "cuCtxSynchronize",
                                              "cuEventSynchronize",    "cuMemcpyDtoH",
                                              "cuMemcpyHtoD",          "cuMemFree"};
  return syncs.count(name) > 0;
}

}  // namespace

KernelProfile profile_kernels(const std::function<void()>& pass, torch::Device device,
                              const std::string& trace_path) {
  const bool gpu = device.is_cuda();
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (gpu) activities.insert(prof::ActivityType::CUDA);
  if (gpu) torch::cuda::synchronize();
  KernelProfile out;
  const auto result =
      run_profiled(prof::ProfilerConfig(prof::ProfilerState::KINETO), activities, [&] {
        const auto start = std::chrono::steady_clock::now();
        pass();
        if (gpu) torch::cuda::synchronize();
        out.wall_us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count();
      });
  out.device_kernels = gpu;

  std::map<std::string, KernelTime> by_name;
  auto add = [&](const std::string& name, double us) {
    KernelTime& k = by_name[name];
    k.name = name;
    k.calls += 1;
    k.total_us += us;
  };
  if (gpu) {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const auto& e : result->events()) {
      if (is_host_sync(e.name())) ++out.host_syncs;
      if (e.deviceType() != c10::DeviceType::CUDA) continue;
      add(e.name(), double(e.durationNs()) / 1e3);
      spans.emplace_back(e.startNs(), e.endNs());
    }
    out.busy_us = covered_us(std::move(spans));
    out.host_syncs = std::max<int64_t>(0, out.host_syncs - 1);  // the synchronize above
  } else {
    // Self time: per thread, ops sorted by start (the outer first on a tie); each op's time goes
    // to its parent's children, the innermost op still open when it starts.
    std::map<uint64_t, std::vector<Span>> threads;
    for (const auto& e : result->events())
      if (e.deviceType() == c10::DeviceType::CPU && e.endNs() > e.startNs())
        threads[e.startThreadId()].push_back({e.startNs(), e.endNs(), e.name()});
    std::vector<std::pair<uint64_t, uint64_t>> outermost;
    for (auto& [thread, spans] : threads) {
      std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
        return a.start != b.start ? a.start < b.start : a.end > b.end;
      });
      std::vector<Span*> open;
      for (auto& s : spans) {
        while (!open.empty() && open.back()->end <= s.start) open.pop_back();
        if (open.empty())
          outermost.emplace_back(s.start, s.end);
        else
          open.back()->children += s.end - s.start;
        open.push_back(&s);
      }
      for (const auto& s : spans)
        add(s.name, double(s.end - s.start - std::min(s.children, s.end - s.start)) / 1e3);
    }
    out.busy_us = covered_us(std::move(outermost));
  }
  for (auto& [name, k] : by_name) out.kernels.push_back(std::move(k));
  std::sort(out.kernels.begin(), out.kernels.end(),
            [](const KernelTime& a, const KernelTime& b) { return a.total_us > b.total_us; });

  if (!trace_path.empty()) {
    const std::string tmp = trace_path + ".tmp";
    result->save(tmp);
    std::error_code ec;
    std::filesystem::rename(tmp, trace_path, ec);
    SY_CHECK(!ec, trace_path, ": cannot write the trace (", ec.message(), ")");
  }
  return out;
}

int64_t peak_extra_bytes(const std::function<void()>& pass, torch::Device device) {
#ifdef SWITCHYARD_WITH_CUDA
  if (device.is_cuda()) {  // the caching allocator keeps the peak itself
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const auto index = device.has_index() ? device.index() : c10::cuda::current_device();
    torch::cuda::synchronize();
    alloc::resetPeakStats(index);
    const int64_t before = alloc::getDeviceStats(index).allocated_bytes[0].current;
    pass();
    torch::cuda::synchronize();
    return alloc::getDeviceStats(index).allocated_bytes[0].peak - before;
  }
#endif
  SY_CHECK(!device.is_cuda(), "peak_extra_bytes: this build has no CUDA");
  const auto result =
      run_profiled(prof::ProfilerConfig(prof::ProfilerState::KINETO, /*report_input_shapes=*/false,
                                        /*profile_memory=*/true),
                   {prof::ActivityType::CPU}, pass);
  std::vector<std::pair<uint64_t, int64_t>> changes;  // (time, bytes: + allocated, - freed)
  for (const auto& e : result->events())
    if (e.name() == "[memory]" && e.deviceType() == c10::DeviceType::CPU)
      changes.emplace_back(e.startNs(), e.nBytes());
  std::stable_sort(changes.begin(), changes.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t now = 0, peak = 0;
  for (const auto& [time, bytes] : changes) peak = std::max(peak, now += bytes);
  return peak;
}

}  // namespace switchyard
