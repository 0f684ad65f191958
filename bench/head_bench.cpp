// `switchyard bench head`: the LM head and its loss as a routers-only step runs them (the head's
// weight frozen; forward and the input's gradient) at Qwen1.5-MoE's head (hidden 2048, a
// vocabulary of bench.vocab_size), bench.tokens rows on bench.device, fp32 and bf16: the fused
// head (one chunk of logits at a time, models/lm_loss.h) against the head's logits then the
// chunked loss. Time, the two alternating, and what each allocates beyond its inputs at its peak
// beside what switchyard plan counts for it, at each of bench.head_chunk_rows (rows per chunk).
// `auto` says which one a training step takes there (HeadLossKernel::kAuto).
#include <torch/cuda.h>

#include "bench/bench.h"
#include "common/kernel_profile.h"
#include "common/table.h"
#include "models/lm_loss.h"

namespace switchyard {
namespace {

constexpr int64_t kQwenHidden = 2048;

struct HeadMeasure {
  double fused_us = 0, logits_us = 0;
  int64_t fused_bytes = 0, logits_bytes = 0;
};

HeadMeasure measure_head(const CommunicatorPtr& world, torch::Device device, torch::Dtype dtype,
                         int64_t T, int64_t V, int64_t chunk_rows, const config::BenchConfig& b) {
  torch::manual_seed(0);
  const auto on = torch::TensorOptions(device);
  const auto w = torch::randn({V, kQwenHidden}, on).mul_(0.02).to(dtype);
  auto x = torch::randn({T, kQwenHidden}, on).to(dtype).requires_grad_();
  const auto targets = torch::randint(0, V, {T}, on.dtype(torch::kLong));
  auto pass = [&](HeadLossKernel kernel) {
    return [&, kernel] {
      linear_cross_entropy_sum(x, w, targets, kernel, chunk_rows).backward();
      x.mutable_grad() = torch::Tensor();
      // GPU kernels run asynchronously: the clock stops when the work is done, not queued.
      if (device.is_cuda()) torch::cuda::synchronize();
    };
  };
  const auto fused = pass(HeadLossKernel::kFused), logits = pass(HeadLossKernel::kLogits);
  const auto us = median_max_us(world, {fused, logits}, b.warmup(), b.repeats());
  HeadMeasure m;
  m.fused_us = us[0];
  m.logits_us = us[1];
  m.fused_bytes = peak_extra_bytes(fused, device);
  m.logits_bytes = peak_extra_bytes(logits, device);
  return m;
}

void run_head_bench(const BenchContext& ctx) {
  auto world = make_single_process_communicator();
  const auto& b = ctx.config.bench();
  const auto device = bench_device(b);
  const int64_t T = b.tokens(), V = b.vocab_size();
  // Each chunk size asked for (0: the default), the default alone if none.
  std::vector<int64_t> chunk_rows(b.head_chunk_rows().begin(), b.head_chunk_rows().end());
  if (chunk_rows.empty()) chunk_rows.push_back(0);
  const bool fused_by_default =
      resolve_head_loss_kernel(HeadLossKernel::kAuto, device,
                               /*weight_trains=*/false) == HeadLossKernel::kFused;
  Table table({"device", "dtype", "tokens", "hidden", "vocab", "chunk_rows", "fused_ms",
               "logits_ms", "fused_vs_logits", "fused_mb", "fused_plan_mb", "logits_mb",
               "logits_plan_mb", "auto"});
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const int64_t rows : chunk_rows) {
      const HeadMeasure m = measure_head(world, device, dtype, T, V, rows, b);
      // What switchyard plan counts for each (models/lm_loss.h).
      auto plan_mb = [&](HeadLossKernel kernel) {
        return Cell(head_loss_bytes(kernel, T, kQwenHidden, V, dtype == torch::kFloat ? 4 : 2,
                                    device.is_cuda(), rows) /
                        1e6,
                    1);
      };
      const int64_t rows_taken = std::min(loss_chunk_rows(V, device.is_cuda(), rows), T);
      table.add({device.is_cuda() ? "cuda" : "cpu", dtype == torch::kFloat ? "fp32" : "bf16", T,
                 kQwenHidden, V, rows_taken, Cell(m.fused_us / 1e3, 2), Cell(m.logits_us / 1e3, 2),
                 Cell(m.fused_us / m.logits_us, 3), Cell(double(m.fused_bytes) / 1e6, 1),
                 plan_mb(HeadLossKernel::kFused), Cell(double(m.logits_bytes) / 1e6, 1),
                 plan_mb(HeadLossKernel::kLogits), fused_by_default ? "fused" : "logits"});
    }
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "LM head + loss, forward and input gradient with the weight frozen: fused (a chunk "
             "of rows' logits at a time) against the logits then the chunked loss; median of "
          << b.repeats() << " runs, the two alternating; _mb: allocated beyond the inputs at the "
          << "peak, _plan_mb: what switchyard plan counts; auto: what a training step takes "
             "here\n";
  table.print(ctx.out);
}

}  // namespace

BenchEntry head_bench_entry() {
  return {"head",
          "LM head + loss with a frozen head: fused (a chunk of logits at a time) against the "
          "logits then the chunked loss, time and memory, at Qwen1.5-MoE's head",
          run_head_bench};
}

}  // namespace switchyard
