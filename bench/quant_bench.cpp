// `switchyard bench quant`: what weight-only expert quantization costs and saves, side by side in
// one run. Accuracy: a whole Qwen2-MoE (bench.quant_preset, random weights with a spread-out
// router) on a fixed token batch, each quantized variant against the unquantized model: logits
// error, KL of the next-token distributions, top-1 agreement, and perplexity of tokens sampled
// from the unquantized model. Speed: one expert bank at the Qwen1.5-MoE expert shape running
// dispatched rows on bench.device, quantized (dequantised on the fly, or on the CPU also fused
// into the GEMM) against full precision.
#include <torch/cuda.h>

#include <iostream>

#include "bench/bench.h"
#include "common/table.h"
#include "models/cpu_linear.h"
#include "models/quantized_cpu_gemm.h"
#include "models/qwen2_moe.h"

namespace switchyard {
namespace {

struct Variant {
  std::string name;
  config::QuantType type;
  int group_size;
  bool symmetric;
};

const std::vector<Variant> kVariants = {{"none", config::QUANT_NONE, 128, true},
                                        {"int8", config::INT8, 128, true},
                                        {"int4-g128-sym", config::INT4, 128, true},
                                        {"int4-g64-asym", config::INT4, 64, false}};

config::QuantConfig quant_config(const Variant& v) {
  config::QuantConfig q;
  q.set_experts(v.type);
  q.set_group_size(v.group_size);
  q.set_symmetric(v.symmetric);
  return q;
}

struct ModelRun {
  torch::Tensor log_probs;  ///< [B*S, V] fp32
  double bytes_per_param = 0;
};

ModelRun run_model(const Qwen2MoeConfig& cfg, const Variant& v, const torch::Tensor& ids,
                   uint64_t seed) {
  // Every variant is the same full-precision model (same seed, same draws), quantized after.
  torch::manual_seed(seed);
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  {
    torch::NoGradGuard no_grad;
    for (const auto& l : model->layers())  // HF initialises gates at std 0.02: spread routing
      if (l->moe) l->moe->router->init_from_gate(torch::randn({cfg.num_experts, cfg.hidden_size}));
  }
  quantize_experts(*model, quant_config(v));
  model->eval();
  torch::NoGradGuard no_grad;
  ModelRun r;
  r.log_probs = torch::log_softmax(model->forward(ids).logits.to(torch::kFloat), -1)
                    .reshape({-1, cfg.vocab_size});
  int64_t bytes = 0, params = 0;
  for (const auto& l : model->layers()) {
    if (!l->moe) continue;
    bytes += l->moe->experts->weight_bytes();
    params += l->moe->experts->num_logical_parameters();
  }
  r.bytes_per_param = double(bytes) / double(params);
  return r;
}

void accuracy_table(const BenchContext& ctx, Table& table) {
  const auto& b = ctx.config.bench();
  const Qwen2MoeConfig cfg = Qwen2MoeConfig::preset(b.quant_preset());
  const uint64_t seed = ctx.config.train().seed();
  torch::manual_seed(seed + 1);
  auto ids = torch::randint(0, cfg.vocab_size, {4, b.quant_tokens() / 4}, torch::kLong);
  const ModelRun ref = run_model(cfg, kVariants[0], ids, seed);
  // Targets drawn from the unquantized model: its perplexity on them is what a trained model's
  // would be on text it predicts well, and the change is what quantization costs.
  auto gen = at::detail::createCPUGenerator(seed + 2);
  auto targets = torch::multinomial(ref.log_probs.exp(), 1, true, gen).squeeze(1);
  auto ppl = [&](const torch::Tensor& lp) {
    return std::exp(-lp.gather(1, targets.unsqueeze(1)).mean().item<double>());
  };
  const double ppl_ref = ppl(ref.log_probs);
  for (const auto& v : kVariants) {
    const ModelRun r = v.type == config::QUANT_NONE ? ref : run_model(cfg, v, ids, seed);
    auto p_ref = ref.log_probs.exp();
    const double kl = (p_ref * (ref.log_probs - r.log_probs)).sum(-1).mean().item<double>();
    const double agree =
        r.log_probs.argmax(-1).eq(ref.log_probs.argmax(-1)).to(torch::kFloat).mean().item<double>();
    const double err = (r.log_probs - ref.log_probs).abs().max().item<double>();
    const double p = ppl(r.log_probs);
    table.add({b.quant_preset(), v.name, Cell(r.bytes_per_param, 3), Cell(err, 5), Cell(kl, 8),
               Cell(agree, 4), Cell(p, 3), Cell(p / ppl_ref - 1.0, 5)});
  }
}

// The paths a bank's GEMMs take: grouped or slice loop, and on the CPU, quantized weights fused
// into the GEMM or dequantised first (models/quantized_cpu_gemm.h).
struct Path {
  GroupedGemm gemm;
  CpuQuantGemm cpu;
  CpuHalfGemm half = CpuHalfGemm::kAuto;  ///< the dequantised weight's GEMMs, bf16 rows
};

// One bank of SwiGLU experts per shape (bench.layer_shapes, default Qwen1.5-MoE's) on
// T * top_k rows spread evenly, as after dispatch, on bench.device: `fwd`, and `fwdbwd` with the
// input gradient only (frozen experts, as router fine-tuning runs them). Where the bank's default
// is the grouped GEMM (bf16 on a GPU), quantized banks also run the slice loop: one
// dequantisation per bank and GEMM against one per expert; on the CPU they run both their
// paths: `dequantise` (the weight dequantised, then torch's GEMM) and `fused` (the codes read by
// the GEMM, models/quantized_cpu_gemm.h), of which kAuto takes the fused one up to
// kFusedQuantGemmMaxRows rows per expert. bf16 rows dequantise into chunks in bf16 for native
// GEMMs from kNativeQuantGemmMinRows rows where models/cpu_linear.h takes them on this CPU, or
// into fp32 chunks for fp32 GEMMs;
// `dequantise_fp32` forces the latter (the same path as `dequantise` on CPUs without native
// bf16 GEMMs), so the two show side by side. dequant_us: the bank's two weights
// dequantised once (QuantizedWeight::dequantize_experts), whichever path the row took;
// dequant_gbs: the bytes that moves (codes, scales and zeros read, full weights written) per
// second, to set beside the memory's rate.
void speed_table(const BenchContext& ctx, Table& table) {
  const auto& b = ctx.config.bench();
  const torch::Device device = bench_device(b);
  const int64_t T = b.quant_tokens();
  auto timed = [&](const std::function<void()>& f) {
    return median_us(
        [&] {
          f();
          if (device.is_cuda()) torch::cuda::synchronize();
        },
        b.warmup(), b.layer_repeats());
  };
  for (const auto& s : layer_shapes(b, {kQwen15MoeLayer})) {
    const int64_t E = s.experts, rows = T * s.top_k;
    std::vector<int64_t> counts(E, rows / E);
    counts[0] += rows - (rows / E) * E;
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      const bool grouped_by_default = device.is_cuda() && dtype == torch::kBFloat16;
      double base_us[2] = {0, 0};  // the unquantized bank's, by mode
      for (const auto& v : kVariants) {
        const bool quantized = v.type != config::QUANT_NONE;
        std::vector<Path> paths{{GroupedGemm::kAuto, CpuQuantGemm::kAuto}};
        if (quantized && grouped_by_default)
          paths.push_back({GroupedGemm::kSliceLoop, CpuQuantGemm::kAuto});
        if (quantized && device.is_cpu())
          paths = {{GroupedGemm::kAuto, CpuQuantGemm::kDequantise},
                   {GroupedGemm::kAuto, CpuQuantGemm::kFused}};
        if (quantized && device.is_cpu() && dtype == torch::kBFloat16)
          paths.push_back(
              {GroupedGemm::kAuto, CpuQuantGemm::kDequantise, CpuHalfGemm::kFp32Chunks});
        for (const auto& path : paths) {
          const CpuQuantGemmScope cpu_gemm(path.cpu);
          const CpuHalfGemmScope half_gemm(path.half);
          torch::manual_seed(ctx.config.train().seed());
          ExpertBank bank(ExpertBankOptions(s.hidden, s.intermediate, E)
                              .gemm(path.gemm)
                              .quant(quant_options(quant_config(v))));
          bank->to(device, dtype);
          for (auto& p : bank->parameters()) p.set_requires_grad(false);
          double dequant_us = 0;
          const double dequant_bytes =
              double(bank->weight_bytes()) +
              double(bank->num_logical_parameters()) * double(torch::elementSize(dtype));
          if (quantized)
            dequant_us = timed([&] {
              bank->quantized_in()->dequantize_experts(0, E, dtype);
              bank->quantized_out()->dequantize_experts(0, E, dtype);
            });
          const bool grouped = path.gemm == GroupedGemm::kAuto && grouped_by_default;
          const char* gemm = grouped                                 ? "grouped"
                             : path.cpu == CpuQuantGemm::kFused      ? "fused"
                             : path.half == CpuHalfGemm::kFp32Chunks ? "dequantise_fp32"
                             : path.cpu == CpuQuantGemm::kDequantise ? "dequantise"
                                                                     : "slice_loop";
          for (bool backward : {false, true}) {
            auto x = torch::randn({rows, s.hidden}, torch::dtype(dtype).device(device))
                         .requires_grad_(backward);
            const double us = timed([&] {
              if (!backward) {
                torch::NoGradGuard no_grad;
                bank->forward(x, counts);
                return;
              }
              x.mutable_grad() = torch::Tensor();
              bank->forward(x, counts).sum().backward();
            });
            if (!quantized) base_us[backward] = us;
            table.add(
                {s.name, dtype == torch::kFloat ? "fp32" : "bf16", backward ? "fwdbwd" : "fwd",
                 v.name, gemm, T, Cell(us, 1), Cell(double(T) / us * 1e6, 0),
                 Cell(base_us[backward] / us, 3), Cell(dequant_us, 1),
                 Cell(dequant_us > 0 ? dequant_bytes / dequant_us / 1e3 : 0.0, 1),
                 Cell(double(bank->weight_bytes()) / double(bank->num_logical_parameters()), 3)});
            if (!ctx.json) std::cerr << "." << std::flush;
          }
        }
      }
    }
  }
}

void run_quant_bench(const BenchContext& ctx) {
  Table accuracy({"preset", "quant", "bytes_per_param", "max_logprob_err", "kl", "top1_agree",
                  "ppl", "ppl_change"});
  accuracy_table(ctx, accuracy);
  Table speed({"shape", "dtype", "mode", "quant", "gemm", "tokens", "us", "tokens_per_s",
               "vs_unquantized", "dequant_us", "dequant_gbs", "bytes_per_param"});
  speed_table(ctx, speed);
  if (ctx.json) {
    accuracy.print_json(ctx.out);
    speed.print_json(ctx.out);
    return;
  }
  std::cerr << "\n";
  const auto& b = ctx.config.bench();
  ctx.out << "Expert quantization, accuracy: Qwen2-MoE preset " << b.quant_preset()
          << ", random weights, " << b.quant_tokens()
          << " tokens; against the unquantized model (targets sampled from it)\n";
  accuracy.print(ctx.out);
  ctx.out << "\nExpert quantization, speed: one bank of frozen SwiGLU experts per shape on "
          << b.device() << ", " << b.quant_tokens()
          << " tokens x top-k rows, forward (fwd) and with the input gradient (fwdbwd), median of "
          << b.layer_repeats() << ", " << torch::get_num_threads()
          << " CPU threads; vs_unquantized = full-precision time / time (default path); "
             "dequant_us = the bank's two weights dequantised once; dequant_gbs = its bytes "
             "(codes, scales, zeros read; weights written) / dequant_us\n";
  speed.print(ctx.out);
}

}  // namespace

BenchEntry quant_bench_entry() {
  return {"quant", "int8/int4 experts: logits error, KL, perplexity change, bytes/param, speed",
          run_quant_bench};
}

}  // namespace switchyard
