// Reads of tensor values into host memory on the hot path (counts that size an exchange, a loss
// for the log). On a GPU each one waits for the device's queue to drain, so the MoE layer makes
// as few as it can, and benchmarks and tests count them here. And the other way, tables built
// on the host (a grouped GEMM's offsets) sent to the device without such a wait.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace switchyard {

/// `t`'s values as int64 on the host: one counted read, whatever `t`'s device (on the CPU it
/// costs no wait, but it is the same read the GPU path makes).
///   usage: auto counts = read_counts_to_host(torch::cat({routed, received}));
std::vector<int64_t> read_counts_to_host(const torch::Tensor& t);

/// `t`'s values as doubles on the host: one counted read.
std::vector<double> read_values_to_host(const torch::Tensor& t);

/// `host` (a CPU tensor) on `device` without making the host wait. A plain copy to a GPU from
/// pageable memory synchronises the stream first, a wait like a read's; this one is queued on
/// the current stream from pinned memory (the caching host allocator keeps that buffer until the
/// copy has run). Elsewhere (to a CPU, or from a device) a plain copy.
///   usage: auto offs = to_device_without_sync(torch::tensor(ends, torch::kInt), x.device());
torch::Tensor to_device_without_sync(const torch::Tensor& host, torch::Device device);

/// Counted reads so far in this process (all threads). A process-wide counter on purpose: it
/// is what a benchmark or test compares before and after a forward pass.
int64_t host_reads();

}  // namespace switchyard
