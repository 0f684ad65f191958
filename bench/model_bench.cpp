// `switchyard bench model`: the whole Qwen2-MoE at a named size with random weights and
// quantized experts; peak resident memory and time per token for a forward and for a
// router-only backward (everything frozen except the routers, as in router fine-tuning).
#include <malloc.h>
#include <sys/resource.h>

#include <chrono>
#include <iostream>
#include <set>

#include "bench/bench.h"
#include "common/autocast.h"
#include "common/host_reads.h"
#include "common/table.h"
#include "models/lm_loss.h"
#include "models/qwen2_moe.h"

namespace switchyard {
namespace {

double peak_rss_gb() {
  struct rusage r {};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_maxrss) * 1024.0 / 1e9;  // ru_maxrss is in KiB on Linux
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Parameters the model represents, counting quantized experts by their logical weights and a
// tied head once.
int64_t count_parameters(torch::nn::Module& model) {
  int64_t n = 0;
  std::set<const void*> seen;
  for (const auto& m : model.modules(/*include_self=*/true)) {
    if (auto* bank = dynamic_cast<ExpertBankImpl*>(m.get())) {
      n += bank->num_logical_parameters();
      continue;
    }
    for (const auto& p : m->named_parameters(/*recurse=*/false))
      if (seen.insert(p.value().unsafeGetTensorImpl()).second) n += p.value().numel();
  }
  return n;
}

void run_model_bench(const BenchContext& ctx) {
  // Blocks of 256 KiB and more are mapped fresh and unmapped on free. Why: glibc's default
  // threshold rises to the largest block freed (up to 32 MiB), after which big temporaries
  // (per-expert weights while building, fp32 weight chunks in forward) come from the heap;
  // freed between long-lived tensors (the model's, then the activations autograd keeps for
  // backward), they leave holes the next ones do not fit: without it the full-size model ran
  // out of 24 GB. The cost is page faults on fresh blocks, a slower build (bench/RESULTS.md,
  // "Measurements behind the code").
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  const auto& b = ctx.config.bench();
  Qwen2MoeConfig cfg = Qwen2MoeConfig::preset(b.model_preset());
  if (b.model_layers() > 0) cfg.num_hidden_layers = b.model_layers();
  const auto& quant = ctx.config.model().quant();
  torch::manual_seed(ctx.config.train().seed());

  const auto build_start = std::chrono::steady_clock::now();
  Qwen2MoeForCausalLM model{nullptr};
  {
    // Weights created as bf16, not fp32 first: 14.3 B fp32 parameters would not fit in memory.
    DefaultDtypeScope bf16(torch::kBFloat16);
    model = Qwen2MoeForCausalLM(
        Qwen2MoeOptions(cfg, single_process_groups()).router(ctx.config.router()).quant(quant));
  }
  const double build_s = seconds_since(build_start);
  const int64_t params = count_parameters(*model);
  const double rss_built = peak_rss_gb();
  if (!ctx.json) std::cerr << "built " << params << " parameters in " << build_s << " s\n";

  const int64_t T = b.model_tokens();
  auto ids = torch::randint(0, cfg.vocab_size, {1, T}, torch::kLong);
  model->eval();
  auto t0 = std::chrono::steady_clock::now();
  const int64_t reads_before = host_reads();
  {
    torch::NoGradGuard no_grad;
    model->forward(ids);
  }
  const double fwd_ms = seconds_since(t0) * 1e3 / double(T);
  const int64_t fwd_reads = host_reads() - reads_before;
  const double rss_fwd = peak_rss_gb();
  if (!ctx.json) std::cerr << "forward done, peak RSS " << rss_fwd << " GB\n";

  // Router fine-tuning: only router parameters train.
  double fwdbwd_ms = 0, rss_graph = 0;
  int64_t fwdbwd_reads = 0;
  if (b.model_backward()) {
    for (auto& p : model->named_parameters())
      p.value().set_requires_grad(p.key().find(".router.") != std::string::npos);
    model->train();
    t0 = std::chrono::steady_clock::now();
    const int64_t before = host_reads();
    auto out = model->forward(ids);
    auto loss = next_token_loss(out.logits, ids) + out.router_loss;
    rss_graph = peak_rss_gb();
    if (!ctx.json) std::cerr << "forward with autograd done, peak RSS " << rss_graph << " GB\n";
    loss.backward();
    fwdbwd_ms = seconds_since(t0) * 1e3 / double(T);
    fwdbwd_reads = host_reads() - before;
  }

  Table table({"preset", "quant", "params", "tokens", "build_s", "rss_built_gb", "rss_fwd_gb",
               "rss_graph_gb", "peak_rss_gb", "fwd_ms_per_token", "fwdbwd_ms_per_token",
               "fwd_host_reads", "fwdbwd_host_reads"});
  table.add({b.model_preset(), config::QuantType_Name(quant.experts()), params, T, Cell(build_s, 1),
             Cell(rss_built, 2), Cell(rss_fwd, 2),
             b.model_backward() ? Cell(rss_graph, 2) : Cell("skipped"), Cell(peak_rss_gb(), 2),
             Cell(fwd_ms, 2), b.model_backward() ? Cell(fwdbwd_ms, 2) : Cell("skipped"), fwd_reads,
             b.model_backward() ? Cell(fwdbwd_reads) : Cell("skipped")});
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "Qwen2-MoE " << b.model_preset() << ", random weights, bf16 with "
          << config::QuantType_Name(quant.experts()) << " experts, " << T << " tokens, "
          << torch::get_num_threads() << " threads; fwdbwd trains routers only\n";
  table.print(ctx.out);
}

}  // namespace

BenchEntry model_bench_entry() {
  return {"model", "the whole Qwen2-MoE (--preset, --quant): peak memory and time per token",
          run_model_bench};
}

}  // namespace switchyard
