// The list of benchmarks and the timing rule they share.
#include <algorithm>
#include <chrono>

#include <torch/cuda.h>

#include "bench/router_bench.h"
#include "common/errors.h"

namespace switchyard {

const std::vector<BenchEntry>& bench_registry() {
  static const std::vector<BenchEntry> entries = {
      {"routers", "the six routers: params, latency, entropy, load balance (+ FWHT vs dense)",
       [](const BenchContext& ctx) {
         run_router_bench(ctx);
         run_fwht_bench(ctx);
       }},
      {"fwht", "fast Walsh-Hadamard transform against a dense Hadamard matmul", run_fwht_bench},
      layer_bench_entry(),
      alltoall_bench_entry(),
      model_bench_entry(),
      quant_bench_entry(),
      rates_bench_entry(),
      linear_bench_entry(),
      head_bench_entry(),
  };
  return entries;
}

const BenchEntry* find_bench(const std::string& name) {
  for (const auto& e : bench_registry())
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<LayerShape> layer_shapes(const config::BenchConfig& b,
                                     std::vector<LayerShape> defaults) {
  if (b.layer_shapes_size() == 0) return defaults;
  std::vector<LayerShape> out;
  for (const auto& s : b.layer_shapes())
    out.push_back({s.name().empty() ? "custom" : s.name(), s.hidden_size(), s.num_experts(),
                   s.top_k(), s.expert_intermediate_size(), s.shared_expert_intermediate_size()});
  return out;
}

torch::Device bench_device(const config::BenchConfig& b) {
  if (b.device() == "cpu") return torch::kCPU;
  if (!torch::cuda::is_available())
    throw ConfigError("bench.device=cuda but no GPU is visible", "bench.device");
  return torch::kCUDA;
}

double median_us(const std::function<void()>& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> us(repeats);
  for (auto& t : us) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  }
  std::nth_element(us.begin(), us.begin() + repeats / 2, us.end());
  return us[repeats / 2];
}

std::vector<double> median_max_us(const CommunicatorPtr& world,
                                  const std::vector<std::function<void()>>& fns, int warmup,
                                  int repeats) {
  const int64_t n = int64_t(fns.size());
  for (int i = 0; i < warmup; ++i)
    for (const auto& f : fns) f();
  auto times = torch::empty({n, repeats}, torch::kDouble);
  for (int i = 0; i < repeats; ++i) {
    for (int64_t which = 0; which < n; ++which) {
      world->barrier();
      const auto start = std::chrono::steady_clock::now();
      fns[which]();
      times[which][i] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count();
    }
  }
  world->all_reduce(times, ReduceOp::kMax);
  auto med = std::get<0>(times.median(1)).contiguous();
  return {med.data_ptr<double>(), med.data_ptr<double>() + n};
}

}  // namespace switchyard
