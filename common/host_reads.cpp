#include "common/host_reads.h"

#include <atomic>

namespace switchyard {
namespace {

std::atomic<int64_t> reads{0};

}  // namespace

std::vector<int64_t> read_counts_to_host(const torch::Tensor& t) {
  reads.fetch_add(1, std::memory_order_relaxed);
  auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::vector<double> read_values_to_host(const torch::Tensor& t) {
  reads.fetch_add(1, std::memory_order_relaxed);
  auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

torch::Tensor to_device_without_sync(const torch::Tensor& host, torch::Device device) {
  if (!device.is_cuda() || !host.is_cpu()) return host.to(device);
  // Contiguous first: pinning keeps a view's strides, and a strided copy to the device goes
  // through a contiguous temporary in pageable memory, whose copy the host waits for (training
  // blocks' inputs and targets are such views, narrows of [batch, seq_len + 1]).
  return host.contiguous().pin_memory().to(device, /*non_blocking=*/true);
}

int64_t host_reads() {
  return reads.load(std::memory_order_relaxed);
}

}  // namespace switchyard
