// FWHT benchmark: the O(n log n) transform against the O(n^2) dense Hadamard product.
#include "bench/router_bench.h"
#include "common/table.h"
#include "routers/fwht.h"

namespace switchyard {

FwhtBenchRow bench_fwht(int64_t width, int64_t rows, int warmup, int repeats) {
  torch::NoGradGuard no_grad;
  auto x = torch::randn({rows, width});
  auto h = hadamard_matrix(width);
  FwhtBenchRow r{width, rows, 0, 0, 0};
  r.fwht_us = median_us([&] { fwht_no_grad(x); }, warmup, repeats);
  r.dense_us = median_us([&] { torch::matmul(x, h); }, warmup, repeats);
  r.max_abs_diff = (fwht_no_grad(x) - torch::matmul(x, h)).abs().max().item<double>();
  return r;
}

void run_fwht_bench(const BenchContext& ctx) {
  const auto& b = ctx.config.bench();
  std::vector<int64_t> widths(b.fwht_widths().begin(), b.fwht_widths().end());
  if (widths.empty()) widths = {2048, 4096};
  Table table({"op", "width", "rows", "fwht_us", "dense_us", "speedup", "max_abs_diff"});
  for (int64_t w : widths) {
    const FwhtBenchRow r = bench_fwht(w, b.tokens(), b.warmup(), b.repeats());
    table.add({"fwht_vs_dense", r.width, r.rows, Cell(r.fwht_us, 1), Cell(r.dense_us, 1),
               Cell(r.dense_us / r.fwht_us, 1), Cell(r.max_abs_diff, 7)});
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "FWHT against x @ H (explicit normalised Hadamard), fp32, median of " << b.repeats()
          << " runs\n";
  table.print(ctx.out);
}

}  // namespace switchyard
