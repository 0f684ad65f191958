// `switchyard bench routers`: parameters, latency and routing statistics of every router at the
// shapes a router paper compares (Qwen1.5-MoE and BERT-base by default).
#pragma once

#include <string>
#include <vector>

#include "bench/bench.h"
#include "routers/routing_stats.h"

namespace switchyard {

struct RouterShape {
  std::string name;
  int64_t hidden_size, num_experts, top_k;
};

struct RouterBenchRow {
  std::string router, shape;
  int64_t params = 0;
  double fwd_us = 0;     ///< per 1,024 tokens, no-grad forward (inference)
  double fwdbwd_us = 0;  ///< per 1,024 tokens, forward + backward; 0 when nothing is trainable
  RoutingStats stats;
};

/// The configured shapes, or Qwen1.5-MoE (2048, 60, top-4) and BERT-base (768, 8, top-2).
std::vector<RouterShape> router_bench_shapes(const config::BenchConfig& bench);

/// Measures one router kind (the config's hyper-parameters for it, defaults otherwise).
RouterBenchRow bench_router(const RunConfig& config, config::RouterConfig::KindCase kind,
                            const RouterShape& shape);

void run_router_bench(const BenchContext& ctx);

struct FwhtBenchRow {
  int64_t width, rows;
  double fwht_us, dense_us, max_abs_diff;
};

/// FWHT against multiplication by the explicit Hadamard matrix, same input, same run.
FwhtBenchRow bench_fwht(int64_t width, int64_t rows, int warmup, int repeats);

void run_fwht_bench(const BenchContext& ctx);

}  // namespace switchyard
