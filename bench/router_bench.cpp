// Router benchmark: builds each registered router at each shape and measures it.
#include <iostream>

#include "bench/router_bench.h"
#include "common/table.h"
#include "routers/router_registry.h"

namespace switchyard {

std::vector<RouterShape> router_bench_shapes(const config::BenchConfig& b) {
  if (b.router_shapes_size() == 0) return {{"qwen1.5-moe", 2048, 60, 4}, {"bert-base", 768, 8, 2}};
  std::vector<RouterShape> shapes;
  for (const auto& s : b.router_shapes())
    shapes.push_back(
        {s.name().empty() ? "custom" : s.name(), s.hidden_size(), s.num_experts(), s.top_k()});
  return shapes;
}

RouterBenchRow bench_router(const RunConfig& config, config::RouterConfig::KindCase kind,
                            const RouterShape& shape) {
  const auto& b = config.bench();
  auto rcfg = with_router_kind(config.router(), kind);
  rcfg.set_top_k(int32_t(shape.top_k));
  rcfg.set_jitter_noise(0);  // latency of the router itself, not of the noise
  torch::manual_seed(config.train().seed());
  RouterPtr router = make_router(RouterOptions(shape.hidden_size, shape.num_experts, rcfg));

  const int64_t T = b.tokens();
  auto x = torch::randn({T, shape.hidden_size});
  auto ids = torch::randint(0, config.model().vocab_size(), {T}, torch::kLong);
  const double per_1k = 1024.0 / double(T);

  RouterBenchRow row;
  row.router = router->kind();
  row.shape = shape.name;
  row.params = router->num_parameters();

  router->eval();
  {
    torch::NoGradGuard no_grad;
    row.fwd_us = median_us([&] { router->route(x, ids); }, b.warmup(), b.repeats()) * per_1k;
    row.stats = RoutingStats::from_routing(router->route(x, ids), shape.num_experts);
  }

  // Forward + backward as in router fine-tuning: gradients for the router and its input.
  router->train();
  auto xg = x.clone().requires_grad_(true);
  auto probe = torch::randn({T, shape.top_k});
  if (row.params > 0) {
    row.fwdbwd_us = median_us(
                        [&] {
                          router->zero_grad();
                          Routing r = router->route(xg, ids);
                          ((r.topk_weights * probe).sum() + r.loss).backward();
                        },
                        b.warmup(), b.repeats()) *
                    per_1k;
  }
  return row;
}

void run_router_bench(const BenchContext& ctx) {
  Table table({"router", "shape", "params", "fwd_us", "fwdbwd_us", "entropy", "load_entropy",
               "utilisation", "max_over_mean_load", "cv"});
  for (const auto& shape : router_bench_shapes(ctx.config.bench())) {
    for (const auto& entry : router_registry()) {
      const RouterBenchRow r = bench_router(ctx.config, entry.kind, shape);
      table.add({r.router, r.shape, r.params, Cell(r.fwd_us, 1), Cell(r.fwdbwd_us, 1),
                 r.stats.token_entropy, r.stats.load_entropy, r.stats.utilisation,
                 r.stats.max_over_mean, r.stats.cv});
      if (!ctx.json) std::cerr << "." << std::flush;  // progress while a shape runs
    }
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  std::cerr << "\n";
  ctx.out << "Routers, " << ctx.config.bench().tokens() << " tokens, median of "
          << ctx.config.bench().repeats() << " runs, latency per 1,024 tokens (us), "
          << torch::get_num_threads() << " threads\n";
  table.print(ctx.out);
  ctx.out << "entropy: mean per-token routing entropy (nats); load_entropy: of the expert load; "
             "fwdbwd 0: no trainable parameters\n\n";
}

}  // namespace switchyard
