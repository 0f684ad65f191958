// Where one pass's time goes, kernel by kernel: the PyTorch (Kineto) profiler around a function,
// its events summed by name. On a GPU the device's kernels and copies, which do not nest; on a
// CPU the operators' self time (an op's time minus that of the ops it called on the same
// thread), so that nothing counts twice. `bench layer --set bench.profile_dir=DIR` prints these
// for the whole MoE layer and for the dense chain it is compared with. Also how much memory a
// pass takes at its peak (peak_extra_bytes), for the tests' memory claims.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace switchyard {

struct KernelTime {
  std::string name;  ///< the kernel's (GPU) or the operator's (CPU, "aten::mm")
  int64_t calls = 0;
  double total_us = 0;  ///< GPU: kernel time; CPU: self time
};

struct KernelProfile {
  std::vector<KernelTime> kernels;  ///< largest total first
  bool device_kernels = false;      ///< true: a GPU's kernels; false: CPU operators
  /// The pass's wall time (the device finished), and the time with any kernel (GPU) or any
  /// operator (CPU, outermost ones) running: the rest is launch overhead, host work and waits.
  double wall_us = 0, busy_us = 0;
  /// GPU: CUDA runtime calls in the pass that make the host wait for the device (stream,
  /// device and event synchronisation, synchronous copies, frees), on any thread (autograd's
  /// device threads too), the profiler's own closing synchronisation left out. What every
  /// read to the host costs, and also the waits no counter of ours sees (a blocking copy to the
  /// device, an op reading a size back). 0 on a CPU.
  int64_t host_syncs = 0;
};

/// Runs `pass` once under the profiler, on `device` (CPU ops always, CUDA kernels on a GPU).
/// `trace_path` non-empty: the Chrome trace (chrome://tracing, Perfetto) is written there,
/// under a temporary name first.
///   usage: auto p = profile_kernels([&] { layer->forward(x); }, x.device(), "layer.json");
KernelProfile profile_kernels(const std::function<void()>& pass, torch::Device device,
                              const std::string& trace_path = "");

/// Bytes `pass` allocated on `device` beyond what was allocated when it started, at their
/// highest. A GPU: its caching allocator's peak statistic. The CPU: the running sum of the
/// profiler's memory events in time order, frees of memory allocated before the pass counting
/// as negative (a pass that only frees peaks at 0).
///   usage: int64_t extra = peak_extra_bytes([&] { loss.backward(); }, torch::kCPU);
int64_t peak_extra_bytes(const std::function<void()>& pass, torch::Device device);

}  // namespace switchyard
