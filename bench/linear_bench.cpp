// `switchyard bench linear`: the CPU's bf16 linear layers (models/cpu_linear.h: bf16 weights, each
// GEMM in fp32 over chunks of the weight's rows) against fp32 GEMMs of the same shapes on weights
// already held in fp32, forward and backward. The ratio is what holding the weights in bf16 costs
// on the CPU; the shapes are Qwen1.5-MoE-A2.7B's largest linears.
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

struct LinearTimes {
  double bf16_frozen_us, fp32_frozen_us, bf16_trained_us, fp32_trained_us;
};

// Forward and input gradient (a frozen weight, as in router fine-tuning), then forward and both
// gradients (a weight that trains), through cpu_linear and through fp32 mm on an fp32 copy.
LinearTimes time_linear(const CommunicatorPtr& world, const LinearShape& s, int64_t tokens,
                        const config::BenchConfig& b) {
  torch::manual_seed(0);
  auto w16 = (torch::randn({s.out, s.in}) * 0.02).to(torch::kBFloat16);
  auto w32 = w16.to(torch::kFloat);
  auto x16 = torch::randn({tokens, s.in}).to(torch::kBFloat16).requires_grad_();
  auto x32 = x16.detach().to(torch::kFloat).requires_grad_();
  auto g16 = torch::randn({tokens, s.out}).to(torch::kBFloat16);
  auto g32 = g16.to(torch::kFloat);
  auto run = [&](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& g) {
    auto y = w.scalar_type() == torch::kFloat ? torch::mm(x, w.t()) : cpu_linear(x, w);
    y.backward(g);
    x.mutable_grad() = w.mutable_grad() = torch::Tensor();
  };
  auto passes = [&] {
    return median_max_us(world, {[&] { run(x16, w16, g16); }, [&] { run(x32, w32, g32); }},
                         b.warmup(), b.repeats());
  };
  const auto frozen = passes();
  w16.requires_grad_(true);
  w32.requires_grad_(true);
  const auto trained = passes();
  return {frozen[0], frozen[1], trained[0], trained[1]};
}

void run_linear_bench(const BenchContext& ctx) {
  auto world = make_single_process_communicator();
  const auto& b = ctx.config.bench();
  Table table({"linear", "out", "in", "tokens", "bf16_frozen_ms", "fp32_frozen_ms", "frozen_ratio",
               "bf16_trained_ms", "fp32_trained_ms", "trained_ratio"});
  for (const auto& s : kQwenLinears) {
    const LinearTimes t = time_linear(world, s, b.tokens(), b);
    table.add({s.name, s.out, s.in, int64_t(b.tokens()), Cell(t.bf16_frozen_us / 1e3, 2),
               Cell(t.fp32_frozen_us / 1e3, 2), Cell(t.bf16_frozen_us / t.fp32_frozen_us, 3),
               Cell(t.bf16_trained_us / 1e3, 2), Cell(t.fp32_trained_us / 1e3, 2),
               Cell(t.bf16_trained_us / t.fp32_trained_us, 3)});
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "CPU linears, forward + backward: bf16 weights through cpu_linear against fp32 mm on "
             "fp32 weights (frozen: input gradient only; trained: both gradients), "
          << torch::get_num_threads() << " thread(s), median of " << b.repeats()
          << " runs, the two alternating\n";
  table.print(ctx.out);
}

}  // namespace

BenchEntry linear_bench_entry() {
  return {"linear",
          "CPU bf16 linears (weights bf16, GEMMs in fp32 by chunks) against fp32 GEMMs, at "
          "Qwen1.5-MoE's largest linears",
          run_linear_bench};
}

}  // namespace switchyard
