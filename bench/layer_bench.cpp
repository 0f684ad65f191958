// `switchyard bench layer`: the MoE layer's throughput against baselines measured in the same run,
// on the same weights and tokens. Two comparisons with a dense chain, kept apart:
//   whole layer (layer_vs_dense) — our whole MoE block (router, permutation and exchange, grouped
//                 experts, combine, shared expert) against a dense chain of the same FLOPs: the
//                 router's GEMM, one SwiGLU expert on all T*k rows and the gated shared expert on
//                 the T tokens, with no routing at all;
//   experts only (experts_vs_dense) — our grouped experts on rows already dispatched against one
//                 SwiGLU expert on the same T*k rows: the ceiling for the expert compute alone;
// beside the experts only, the same experts by our slice loop (experts_vs_slice_loop: what the
//                 grouped GEMM buys where it is the default);
// and the per-expert loop — Hugging Face's Qwen2MoeSparseMoeBlock: one-hot mask, per expert a
//                 where(), a gather, the expert and an index_add_ (vs_loop, whole layer against
//                 whole layer).
#include <torch/cuda.h>

#include <filesystem>
#include <iostream>

#include "bench/bench.h"
#include "common/errors.h"
#include "common/host_reads.h"
#include "common/kernel_profile.h"
#include "common/table.h"
#include "models/moe_block.h"

namespace switchyard {
namespace {

// Hugging Face's loop, on our block's weights (so the FLOPs and the numbers are the same).
torch::Tensor hf_loop_forward(MoeBlock& block, const torch::Tensor& x) {
  Routing r = block->router->route(x);
  const int64_t E = block->options().num_experts();
  auto weights = r.topk_weights.to(x.scalar_type());
  auto out = torch::zeros_like(x);
  auto expert_mask = torch::one_hot(r.topk_ids, E).permute({2, 1, 0});  // [E, k, T]
  const auto experts = block->experts->per_expert();  // HF keeps one nn.Linear set per expert
  auto hit = expert_mask.sum({1, 2}).gt(0).nonzero().reshape(-1).cpu();
  for (int64_t i = 0; i < hit.numel(); ++i) {
    const int64_t e = hit[i].item<int64_t>();
    auto where = torch::where(expert_mask[e]);
    auto slot = where[0], token = where[1];
    auto y = block->experts->forward_expert(e, experts[e], x.index_select(0, token)) *
             weights.index({token, slot}).unsqueeze(1);
    out.index_add_(0, token, y);
  }
  if (block->shared_expert)
    out = out + torch::sigmoid(block->shared_expert_gate->forward(x)) *
                    block->shared_expert->forward_one(0, x);
  return out;
}

// The dense chain with the whole layer's FLOPs: router GEMM, one expert on the T*k rows (each
// token repeated k times), the sigmoid-gated shared expert on the T tokens.
torch::Tensor dense_layer_forward(MoeBlock& block, ExpertBank& dense, const torch::Tensor& x) {
  const int64_t k = block->options().router().top_k();
  auto logits = block->router->compute_logits(x, {});  // the router's GEMM, no top-k
  auto routed = dense->forward_one(0, x.repeat_interleave(k, 0)).view({x.size(0), k, -1}).sum(1);
  // "* 0" keeps the router GEMM in the graph (its backward is timed too) without changing y.
  auto out = routed + logits.sum(-1, /*keepdim=*/true).to(x.scalar_type()) * 0;
  if (block->shared_expert)
    out = out + torch::sigmoid(block->shared_expert_gate->forward(x)) *
                    block->shared_expert->forward_one(0, x);
  return out;
}

struct Timings {
  double layer_us, dense_layer_us, experts_us, dense_us, loop_us, slice_loop_us;
  int64_t host_reads;  ///< counted reads to the host in one whole-layer pass (common/host_reads.h)
  /// bench.profile_dir: one profiled pass each of the whole layer and of the dense chain
  KernelProfile layer_profile, dense_layer_profile;
};

std::string case_name(const LayerShape& s, torch::Dtype dtype, bool backward) {
  return s.name + (dtype == torch::kFloat ? "_fp32" : "_bf16") + (backward ? "_fwdbwd" : "_fwd");
}

Timings time_one(const LayerShape& s, torch::Dtype dtype, bool backward, const RunConfig& cfg) {
  const auto& b = cfg.bench();
  const int64_t T = b.layer_tokens();
  const torch::Device device = bench_device(b);
  config::RouterConfig rc;
  rc.set_top_k(int(s.top_k));
  rc.mutable_linear();
  torch::manual_seed(cfg.train().seed());
  MoeBlock block(MoeBlockOptions(s.hidden, s.experts, s.intermediate)
                     .shared_expert_intermediate_size(s.shared)
                     .router(rc),
                 single_process_groups());
  ExpertBank dense(ExpertBankOptions(s.hidden, s.intermediate, 1));
  block->to(device, dtype);
  dense->to(device, dtype);
  auto x = torch::randn({T, s.hidden}, torch::dtype(dtype).device(device)).requires_grad_(backward);

  // The experts' own input: this batch's rows, already dispatched.
  Routing routing;
  DispatchedTokens tokens;
  {
    torch::NoGradGuard no_grad;
    routing = block->router->route(x);
    tokens = block->dispatcher().dispatch(x, routing).first;
  }
  auto rows = tokens.hidden.detach().requires_grad_(backward);
  auto dense_rows = rows.clone().detach().requires_grad_(backward);
  // The same experts by the slice loop (one GEMM pair per expert on its rows): what the default
  // path (the grouped GEMM in bf16 on GPUs and in fp32 on the CPU) is chosen over.
  ExpertBank slices(
      ExpertBankOptions(s.hidden, s.intermediate, s.experts).gemm(GroupedGemm::kSliceLoop));
  slices->to(device, dtype);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : slices->named_parameters())
      p.value().copy_(block->experts->named_parameters()[p.key()]);
  }
  auto slice_rows = rows.clone().detach().requires_grad_(backward);

  // wait: a timed pass waits for the device at its end; a profiled one does not, because
  // profile_kernels waits itself and leaves that one wait out of its host_syncs.
  auto pass = [&](const std::function<torch::Tensor()>& f, bool wait = true) {
    return [&, f, wait] {
      if (!backward) {
        torch::NoGradGuard no_grad;
        f();
      } else {
        block->zero_grad();
        dense->zero_grad();
        slices->zero_grad();
        f().sum().backward();
      }
      // GPU kernels run asynchronously: the clock stops when the work is done, not queued.
      if (wait && device.is_cuda()) torch::cuda::synchronize();
    };
  };
  auto run = [&](const std::function<torch::Tensor()>& f) {
    return median_us(pass(f), b.warmup(), b.layer_repeats());
  };
  Timings t;
  const int64_t reads_before = host_reads();
  {
    auto y = block->forward(x).hidden;
    if (backward) y.sum().backward();
  }
  t.host_reads = host_reads() - reads_before;
  t.layer_us = run([&] { return block->forward(x).hidden; });
  t.dense_layer_us = run([&] { return dense_layer_forward(block, dense, x); });
  t.experts_us = run([&] { return block->experts->forward(rows, tokens.tokens_per_expert); });
  t.dense_us = run([&] { return dense->forward_one(0, dense_rows); });
  t.slice_loop_us = run([&] { return slices->forward(slice_rows, tokens.tokens_per_expert); });
  t.loop_us = run([&] { return hf_loop_forward(block, x); });
  if (!b.profile_dir().empty()) {
    // After the timed runs: the profiled pass is warm, and the profiler's cost stays out of them.
    const auto trace = [&](const std::string& what) {
      return b.profile_dir() + "/" + case_name(s, dtype, backward) + "_" + what + ".json";
    };
    t.layer_profile = profile_kernels(pass([&] { return block->forward(x).hidden; }, false), device,
                                      trace("layer"));
    t.dense_layer_profile =
        profile_kernels(pass([&] { return dense_layer_forward(block, dense, x); }, false), device,
                        trace("dense_layer"));
  }
  return t;
}

// The busiest kernels of each profiled pass: what limits the whole layer against the dense
// chain, kernel by kernel.
constexpr size_t kProfileRows = 12;

void add_profile_rows(Table& table, const std::string& name, const std::string& pass,
                      const KernelProfile& p) {
  for (size_t i = 0; i < std::min(kProfileRows, p.kernels.size()); ++i) {
    const KernelTime& k = p.kernels[i];
    // CUDA kernels' template names run to hundreds of characters; the trace keeps them whole.
    const std::string shown = k.name.size() > 72 ? k.name.substr(0, 69) + "..." : k.name;
    table.add({name, pass, Cell(p.wall_us, 0), Cell(p.busy_us / p.wall_us, 3), p.host_syncs, shown,
               k.calls, Cell(k.total_us, 1), Cell(k.total_us / p.wall_us, 3)});
  }
}

void run_layer_bench(const BenchContext& ctx) {
  Table table({"shape", "dtype", "mode", "tokens", "host_reads", "tokens_per_s",
               "dense_layer_tokens_per_s", "layer_vs_dense", "experts_tokens_per_s",
               "dense_tokens_per_s", "experts_vs_dense", "slice_loop_tokens_per_s",
               "experts_vs_slice_loop", "loop_tokens_per_s", "vs_loop"});
  const int64_t T = ctx.config.bench().layer_tokens();
  const std::string& profile_dir = ctx.config.bench().profile_dir();
  if (!profile_dir.empty()) std::filesystem::create_directories(profile_dir);
  Table profiles(
      {"case", "pass", "wall_us", "busy_share", "host_syncs", "kernel", "calls", "us", "share"});
  for (const auto& s :
       layer_shapes(ctx.config.bench(), {kQwen15MoeLayer, {"small", 512, 16, 2, 512, 1024}})) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      for (bool backward : {false, true}) {
        const Timings t = time_one(s, dtype, backward, ctx.config);
        auto per_s = [&](double us) { return Cell(double(T) / us * 1e6, 0); };
        table.add({s.name, dtype == torch::kFloat ? "fp32" : "bf16", backward ? "fwdbwd" : "fwd", T,
                   t.host_reads, per_s(t.layer_us), per_s(t.dense_layer_us),
                   Cell(t.dense_layer_us / t.layer_us, 3), per_s(t.experts_us), per_s(t.dense_us),
                   Cell(t.dense_us / t.experts_us, 3), per_s(t.slice_loop_us),
                   Cell(t.slice_loop_us / t.experts_us, 3), per_s(t.loop_us),
                   Cell(t.loop_us / t.layer_us, 3)});
        if (!profile_dir.empty()) {
          add_profile_rows(profiles, case_name(s, dtype, backward), "layer", t.layer_profile);
          add_profile_rows(profiles, case_name(s, dtype, backward), "dense_layer",
                           t.dense_layer_profile);
        }
        if (!ctx.json) std::cerr << "." << std::flush;
      }
    }
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    if (!profile_dir.empty()) profiles.print_json(ctx.out);
    return;
  }
  std::cerr << "\n";
  const auto& b = ctx.config.bench();
  ctx.out << "MoE layer on " << b.device() << ", " << T << " tokens, median of "
          << b.layer_repeats() << " runs, " << torch::get_num_threads()
          << " CPU threads, Linear router\n";
  table.print(ctx.out);
  ctx.out << "whole layer: tokens_per_s (router, dispatch, experts, combine, shared expert) vs "
             "dense_layer (router GEMM + one expert on the T*k rows + shared expert, no routing); "
             "layer_vs_dense = dense_layer time / layer time\n"
             "experts only: experts (grouped, on dispatched rows) vs dense (one expert on the same "
             "T*k rows); experts_vs_dense = dense time / experts time\n"
             "slice loop: the same experts, one GEMM pair per expert (what the grouped GEMM, "
             "the default in bf16 on GPUs, fp32 on CPUs and bf16 on CPUs with bf16 "
             "instructions, replaces); experts_vs_slice_loop = "
             "slice-loop time / experts time\n"
             "loop: Hugging Face's per-expert loop (whole layer); vs_loop = loop time / layer "
             "time\nhost_reads: counts read back to the host in one whole-layer pass (each one "
             "a wait on a GPU)\n\n";
  if (profile_dir.empty()) return;
  ctx.out << "Profiled passes (one each, after the timed runs; Chrome traces in " << profile_dir
          << "), the " << kProfileRows << " busiest "
          << (b.device() == "cpu" ? "operators by self time" : "GPU kernels and copies")
          << " of each\n";
  profiles.print(ctx.out);
  ctx.out << "wall_us: the pass; busy_share: the time with a "
          << (b.device() == "cpu" ? "operator" : "kernel")
          << " running / wall_us (the rest is launches, host work and waits); host_syncs: CUDA "
             "calls in the pass that made the host wait for the device (0 on a CPU); us: the "
             "kernel's total over its calls; share: us / wall_us\n\n";
}

}  // namespace

BenchEntry layer_bench_entry() {
  return {"layer", "MoE layer tokens/s vs a dense chain and a per-expert loop (fp32, bf16)",
          run_layer_bench};
}

}  // namespace switchyard
