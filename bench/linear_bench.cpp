// `switchyard bench linear`: the CPU's two paths for bf16 linear layers (models/cpu_linear.h:
// fp32 GEMMs over chunks of the weight's rows converted on the fly, or torch's own bf16 GEMMs)
// against fp32 GEMMs of the same shapes on weights already held in fp32, forward and backward:
// what holding the weights in bf16 costs or buys on this CPU, and whether kAuto chose right. The
// shapes are Qwen1.5-MoE-A2.7B's largest linears.
#include <cmath>

#include "bench/bench.h"
#include "common/table.h"
#include "models/cpu_linear.h"

namespace switchyard {
namespace {

struct LinearShape {
  std::string name;
  int64_t out, in;
};

// Qwen1.5-MoE-A2.7B's: the LM head, the shared expert's fused gate/up and its down projection,
// and an attention projection.
const std::vector<LinearShape> kQwenLinears = {{"lm_head", 151936, 2048},
                                               {"shared_expert_in", 11264, 2048},
                                               {"shared_expert_out", 2048, 5632},
                                               {"q_proj", 2048, 2048}};

// One mode's medians: bf16 through cpu_linear's fp32 chunks, bf16 through torch's own kernels,
// fp32 mm on an fp32 copy of the weight.
struct LinearTimes {
  double chunks_us, native_us, fp32_us;
};

// Forward and input gradient (a frozen weight, as in router fine-tuning) or forward and both
// gradients (a weight that trains), the three paths alternating.
LinearTimes time_linear(const CommunicatorPtr& world, const LinearShape& s, int64_t tokens,
                        bool trained, const config::BenchConfig& b) {
  torch::manual_seed(0);
  auto w16 = (torch::randn({s.out, s.in}) * 0.02).to(torch::kBFloat16).requires_grad_(trained);
  auto w32 = w16.detach().to(torch::kFloat).requires_grad_(trained);
  auto x16 = torch::randn({tokens, s.in}).to(torch::kBFloat16).requires_grad_();
  auto x32 = x16.detach().to(torch::kFloat).requires_grad_();
  auto g16 = torch::randn({tokens, s.out}).to(torch::kBFloat16);
  auto g32 = g16.to(torch::kFloat);
  auto run = [](const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& w,
                const torch::Tensor& g) {
    y.backward(g);
    x.mutable_grad() = w.mutable_grad() = torch::Tensor();
  };
  std::vector<std::function<void()>> passes = {
      [&] { run(cpu_linear(x16, w16), x16, w16, g16); },
      [&] { run(torch::mm(x32, w32.t()), x32, w32, g32); }};
  // Where torch has no oneDNN bf16 kernels its bf16 GEMMs are a reference loop (140x fp32 on
  // the LM head's shapes): not timed, NaN.
  const bool time_native = torch_has_onednn_gemm(torch::kBFloat16);
  if (time_native) passes.push_back([&] { run(torch::mm(x16, w16.t()), x16, w16, g16); });
  const auto us = median_max_us(world, passes, b.warmup(), b.repeats());
  return {us[0], time_native ? us[2] : std::nan(""), us[1]};
}

void run_linear_bench(const BenchContext& ctx) {
  auto world = make_single_process_communicator();
  const auto& b = ctx.config.bench();
  const std::string auto_path = cpu_half_gemm_is_native(torch::kBFloat16) ? "native" : "chunks";
  Table table({"linear", "out", "in", "tokens", "weight", "chunks_ms", "native_ms", "fp32_ms",
               "chunks_vs_native", "native_vs_fp32", "auto"});
  for (const auto& s : kQwenLinears)
    for (bool trained : {false, true}) {
      const LinearTimes t = time_linear(world, s, b.tokens(), trained, b);
      table.add({s.name, s.out, s.in, int64_t(b.tokens()), trained ? "trained" : "frozen",
                 Cell(t.chunks_us / 1e3, 2), Cell(t.native_us / 1e3, 2), Cell(t.fp32_us / 1e3, 2),
                 Cell(t.chunks_us / t.native_us, 3), Cell(t.native_us / t.fp32_us, 3), auto_path});
    }
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "CPU linears, forward + backward (frozen: the input's gradient; trained: both "
             "gradients), bf16 weights through cpu_linear's fp32 chunks (chunks) and through "
             "torch's own bf16 GEMMs (native), and fp32 mm on fp32 weights; "
          << torch::get_num_threads() << " thread(s), median of " << b.repeats()
          << " runs, the three alternating\n";
  table.print(ctx.out);
  ctx.out << "chunks_vs_native = chunks time / native time; native_vs_fp32 = native time / fp32 "
             "time (nan: not timed, torch has no oneDNN bf16 kernels here); auto: the path "
             "bf16 takes in this process (native where the CPU has bf16 instructions, or as "
             "SWITCHYARD_CPU_BF16_GEMM says; models/cpu_linear.h)\n";
}

}  // namespace

BenchEntry linear_bench_entry() {
  return {"linear",
          "CPU bf16 linears (fp32 chunks and torch's bf16 GEMMs) against fp32 GEMMs, at "
          "Qwen1.5-MoE's largest linears",
          run_linear_bench};
}

}  // namespace switchyard
