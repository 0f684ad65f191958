// `switchyard bench rates`: the rates `switchyard plan` turns FLOPs and bytes into seconds,
// measured the way a training run uses the machine: under mpirun every rank measures at once
// (ranks that share cores and memory bandwidth share them here too), each with the OpenMP
// threads it was given, and the slowest rank's median counts. It prints them, and the
// `--cluster-set` assignments that give a ranks-share-node preset (`cpu`) these rates at this
// rank count (plan divides such a node's rates among its ranks, so rates are printed per node).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>

#include "bench/bench.h"
#include "common/table.h"
#include "models/cpu_linear.h"
#include "models/expert_bank.h"
#include "models/lm_loss.h"
#include "models/quantized_cpu_gemm.h"
#include "models/qwen2_moe.h"
#include "models/weight_quant.h"
#include "parallel/all_to_all.h"
#include "parallel/process_groups.h"
#include "trainer/adamw.h"
#include "trainer/gradient_checks.h"

namespace switchyard {
namespace {

// GEMMs: one SwiGLU expert's forward and backward on T tokens in `dtype`, 18*T*H*I FLOPs
// (forward 6THI, the input and weight gradients twice that).
double gemm_tflops(const CommunicatorPtr& world, const LayerShape& s, int64_t T,
                   const config::BenchConfig& b, torch::Dtype dtype = torch::kFloat) {
  const int64_t H = s.hidden, I = s.intermediate;
  auto x = torch::randn({T, H}).to(dtype).requires_grad_();
  auto w1 = (torch::randn({H, 2 * I}) * 0.02).to(dtype).requires_grad_();
  auto w2 = (torch::randn({I, H}) * 0.02).to(dtype).requires_grad_();
  auto chain = [&] {
    auto h = x.mm(w1);
    auto y = (torch::silu(h.narrow(1, 0, I)) * h.narrow(1, I, I)).mm(w2);
    y.sum().backward();
    x.mutable_grad() = w1.mutable_grad() = w2.mutable_grad() = torch::Tensor();
  };
  const double us = median_max_us(world, {chain}, b.warmup(), b.repeats())[0];
  return 18.0 * double(T) * double(H) * double(I) / us / 1e6;
}

// The expert bank as training runs it at EP = the ranks measuring: each rank holds E / EP of the
// layer shape's experts and receives its share of every rank's T tokens * top_k rows, EP * T *
// top_k / E per local expert on average. A run's routing gives them to only some of its experts
// (bench.expert_active_share), each of those getting more rows, which is what a GEMM's speed
// depends on. Forward and input gradient with frozen weights (12*H*I FLOPs per row), then again
// with weights that train (their gradients, 6*H*I more per row, in new memory each step as
// backward leaves them). Returned as fractions of the dense GEMM rate: {frozen, weight gradients}.
struct BankProbe {
  int64_t experts, busy_experts, rows_per_busy_expert;
};

// active_share is in (0, 1] (configs/validate.cpp).
BankProbe bank_probe(const LayerShape& s, int64_t T, int ranks, double active_share) {
  BankProbe p;
  p.experts = std::max<int64_t>(1, s.experts / ranks);
  p.busy_experts =
      std::clamp<int64_t>(std::llround(double(p.experts) * active_share), 1, p.experts);
  const int64_t rows = std::max<int64_t>(1, int64_t(ranks) * T * s.top_k * p.experts / s.experts);
  p.rows_per_busy_expert = std::max<int64_t>(1, rows / p.busy_experts);
  return p;
}

std::pair<double, double> expert_bank_efficiency(const CommunicatorPtr& world, const LayerShape& s,
                                                 const BankProbe& probe, double gemm_tflops,
                                                 const config::BenchConfig& b) {
  const int64_t H = s.hidden, I = s.intermediate, E = probe.experts;
  const int64_t rows = probe.rows_per_busy_expert * probe.busy_experts;
  torch::manual_seed(0);
  ExpertBank bank(ExpertBankOptions(H, I, E));
  auto x = torch::randn({rows, H}).requires_grad_();
  std::vector<int64_t> counts(size_t(E), 0);
  for (int64_t e = 0; e < probe.busy_experts; ++e) counts[size_t(e)] = probe.rows_per_busy_expert;
  auto pass = [&] {
    bank->forward(x, counts).sum().backward();
    x.mutable_grad() = torch::Tensor();
    for (auto& p : bank->parameters()) p.mutable_grad() = torch::Tensor();
  };
  for (auto& p : bank->parameters()) p.requires_grad_(false);
  const double frozen_us = median_max_us(world, {pass}, b.warmup(), b.repeats())[0];
  for (auto& p : bank->parameters()) p.requires_grad_(true);
  const double trained_us = median_max_us(world, {pass}, b.warmup(), b.repeats())[0];
  const double row_flops = 6.0 * double(H) * double(I) * double(rows);
  const double frozen_tflops = 2 * row_flops / frozen_us / 1e6;
  const double wgrad_tflops = row_flops / std::max(trained_us - frozen_us, 1e-3) / 1e6;
  return {std::min(1.0, frozen_tflops / gemm_tflops), std::min(1.0, wgrad_tflops / gemm_tflops)};
}

// The dtype the CPU's quantized expert GEMMs multiply in: fp32 where int4 fuses at `rows`
// (models/quantized_cpu_gemm.h) or the rows are too few for native half GEMMs
// (models/weight_quant.h), else the rows' own.
torch::ScalarType quantized_gemm_dtype(const QuantOptions& quant, int64_t rows,
                                       torch::ScalarType rows_dtype) {
  const bool fused = cpu_quant_gemm_fuses(quant.kind(), rows, rows_dtype);
  return !fused && cpu_dequantised_gemm_is_native(rows_dtype, rows) ? rows_dtype : torch::kFloat;
}

// Dequantisation, in billions of weights per second: the bank's busy experts quantized as the
// run's are (model.quant), fed rows in the run's dtype, against the same experts as floats,
// alternating call by call. Forward and input gradient each dequantise every busy expert once,
// so the extra time is 2 x busy experts x 3HI weights. plan adds exactly that to the float
// bank's GEMM time, at the rate of the dtype the quantized GEMMs multiply in
// (quantized_gemm_dtype), which is the float bank's dtype here. A difference inside the noise is
// floored at 1% of the quantized time; so is a fused path faster than the float bank: what plan
// adds is then what the run pays, give or take the floor.
double dequant_gweights_per_s(const CommunicatorPtr& world, const LayerShape& s,
                              const BankProbe& probe, const QuantOptions& quant,
                              torch::ScalarType rows_dtype, const config::BenchConfig& b) {
  const int64_t H = s.hidden, I = s.intermediate, E = probe.busy_experts;
  torch::manual_seed(0);
  ExpertBank floats(ExpertBankOptions(H, I, E));
  ExpertBank codes(ExpertBankOptions(H, I, E).quant(quant));
  const auto float_dtype = quantized_gemm_dtype(quant, probe.rows_per_busy_expert, rows_dtype);
  floats->to(float_dtype);
  for (auto& p : floats->parameters()) p.requires_grad_(false);
  const std::vector<int64_t> counts(size_t(E), probe.rows_per_busy_expert);
  auto x0 = torch::randn({E * probe.rows_per_busy_expert, H});
  auto x = x0.to(float_dtype).requires_grad_();
  auto xq = x0.to(rows_dtype).requires_grad_();
  auto pass = [&](ExpertBank& bank, torch::Tensor& in) {
    bank->forward(in, counts).sum().backward();
    in.mutable_grad() = torch::Tensor();
  };
  const auto us = median_max_us(world, {[&] { pass(floats, x); }, [&] { pass(codes, xq); }},
                                b.warmup(), b.repeats());
  const double weights = 2.0 * double(E) * 3.0 * double(H) * double(I);
  return weights / std::max(us[1] - us[0], 0.01 * us[1]) / 1e3;
}

// The LM head and the loss, as a step runs them: T tokens over a vocabulary of V through
// linear_cross_entropy_sum (models/lm_loss.h), forward and input gradient with the weight frozen,
// in the run's dtype, by the kernel a step takes on the CPU (the logits; bf16 through torch's
// GEMMs or cpu_linear's fp32 chunks, as models/cpu_linear.h decides for this CPU). Returned as
// a rate over the head's 4*T*H*V FLOPs. The loss's
// softmax passes over the logits, and an output this wide, run at their own speed: in a small
// model they are most of the head's time, which the expert-shaped GEMM probe does not show.
double lm_head_tflops(const CommunicatorPtr& world, int64_t H, int64_t V, int64_t T, bool bf16,
                      const config::BenchConfig& b) {
  const auto dtype = bf16 ? torch::kBFloat16 : torch::kFloat;
  auto x = torch::randn({T, H}).to(dtype).requires_grad_();
  const auto w = torch::randn({V, H}).mul_(0.02).to(dtype);
  auto targets = torch::randint(0, V, {T}, torch::kLong);
  auto pass = [&] {
    linear_cross_entropy_sum(x, w, targets).backward();
    x.mutable_grad() = torch::Tensor();
  };
  const double us = median_max_us(world, {pass}, b.warmup(), b.repeats())[0];
  return 4.0 * double(T) * double(H) * double(V) / us / 1e6;
}

// Memory: an in-place add over 64 MiB tensors (3 x 64 MiB moved), and a fill of 64 MiB freshly
// allocated (above glibc's mmap threshold every such block is new pages the kernel zeroes).
std::pair<double, double> memory_gbs(const CommunicatorPtr& world, const config::BenchConfig& b) {
  const int64_t n = int64_t(16) << 20;
  auto a = torch::ones({n}), c = torch::ones({n});
  const auto us =
      median_max_us(world, {[&] { a.add_(c, 1e-3); }, [&] { torch::empty({n}).fill_(1.0f); }},
                    b.warmup(), b.repeats());
  return {3.0 * 4 * double(n) / us[0] / 1e3, 4.0 * double(n) / us[1] / 1e3};
}

// The fixed cost of a decoder layer: a 4-layer Qwen2-MoE of hidden 32 (the configured router),
// forward, loss and backward on 16 tokens, divided by its layers. At this size the time is the
// per-op cost (dispatch, autograd bookkeeping, thread hand-offs), which a layer pays at any size.
double layer_overhead_ms(const CommunicatorPtr& world, const RunConfig& config) {
  Qwen2MoeConfig c = Qwen2MoeConfig::preset("tiny");
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = c.moe_intermediate_size = c.shared_expert_intermediate_size = 32;
  c.num_hidden_layers = 4;
  c.num_attention_heads = c.num_key_value_heads = 2;
  c.num_experts = 4;
  torch::manual_seed(config.train().seed());
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(c, single_process_groups()).router(config.router()));
  auto ids = torch::randint(0, c.vocab_size, {1, 16}, torch::kLong);
  auto step = [&] {
    auto out = model->forward(ids);
    (next_token_loss(out.logits, ids) + out.router_loss).backward();
    model->zero_grad();
  };
  const auto& b = config.bench();
  return median_max_us(world, {step}, b.warmup(), b.repeats())[0] / 1e3 /
         double(c.num_hidden_layers);
}

// The optimizer per trained parameter, over 4 tensors of 4 Mi parameters: what the trainer does
// between the gradient sync and the next step (trainer/gradient_checks.h): the finiteness
// verdict, the squared norm, the clipping pass, AdamW's step and zero_grad. The gradients are
// there already (backward wrote them; the bank's weight-gradient rate counts that).
double optimizer_ns_per_param(const CommunicatorPtr& world, const config::BenchConfig& b) {
  NamedTensors params;
  std::vector<torch::Tensor> tensors, grads;
  for (int i = 0; i < 4; ++i) {
    params.emplace_back("w" + std::to_string(i), torch::randn({2048, 2048}).requires_grad_());
    tensors.push_back(params.back().second);
    grads.push_back(torch::full({2048, 2048}, 1e-3f));
  }
  AdamW adamw(params, AdamWOptions().weight_decay(0.1));
  const auto lr = torch::full({}, 1e-4, torch::kDouble);
  auto step = [&] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].mutable_grad() = grads[i];
    auto finite = local_gradients_finite(tensors, {}, torch::kCPU);
    std::vector<torch::Tensor> squares;
    for (auto& g : grads) squares.push_back(squared_sum_in_double(g));
    auto norm = torch::stack(squares).sum().sqrt();
    const auto scale = clipping_scale(norm, 1e9);  // 1: below the limit, the values stay
    for (auto& g : grads) g.mul_(scale);           // clipping's pass
    adamw.step(lr, finite);  // decided on the device, as the trainer's step is
    adamw.zero_grad();
    return finite.item<bool>() && norm.item<double>() > 0;
  };
  const double us = median_max_us(world, {step}, b.warmup(), b.repeats())[0];
  return us * 1e3 / double(4 * 2048 * 2048);
}

// The exchange: all_to_all_v_with_grad of rows of H floats at 256 KiB and 16 MiB per rank;
// time = latency + bytes sent to the other ranks / bandwidth, solved from the two sizes.
std::pair<double, double> alltoall_gbs_and_latency_us(const CommunicatorPtr& world, int64_t H,
                                                      const config::BenchConfig& b) {
  const int n = world->size();
  std::vector<double> sent, us;
  for (const int64_t bytes : {int64_t(256) << 10, int64_t(16) << 20}) {
    const int64_t rows = std::max<int64_t>(n, bytes / (H * 4)) / n * n;
    std::vector<int64_t> counts(size_t(n), rows / n);
    auto input = torch::randn({rows, H});
    us.push_back(median_max_us(world,
                               {[&] { all_to_all_v_with_grad(world, input, counts, counts); }},
                               b.warmup(), b.repeats())[0]);
    sent.push_back(double(rows * H * 4) * double(n - 1) / double(n));
  }
  const double gbs = (sent[1] - sent[0]) / std::max(us[1] - us[0], 1e-3) / 1e3;
  return {gbs, std::max(0.0, us[0] - sent[0] / gbs / 1e3)};
}

void run_rates_bench(const BenchContext& ctx) {
  auto world = make_mpi_world_communicator();
  const int n = world->size();
  const auto& b = ctx.config.bench();
  const LayerShape shape = layer_shapes(b, {kQwen15MoeLayer}).front();
  const int64_t T = b.tokens();
  const double gemm = gemm_tflops(world, shape, T, b);
  // bf16 GEMMs on a CPU: torch's own where the CPU has bf16 instructions for them, else fp32
  // underneath (models/cpu_linear.h), at the fp32 rate.
  const bool bf16_native = cpu_half_gemm_is_native(torch::kBFloat16);
  const double gemm_bf16 = bf16_native ? gemm_tflops(world, shape, T, b, torch::kBFloat16) : gemm;
  const BankProbe probe = bank_probe(shape, T, n, b.expert_active_share());
  const auto [bank_eff, wgrad_eff] = expert_bank_efficiency(world, shape, probe, gemm, b);
  // Quantized experts (model.quant): how fast the run's dtype dequantises them.
  const QuantOptions quant = quant_options(ctx.config.model().quant());
  const bool quantized = quant.kind() != QuantKind::kNone;
  const bool bf16 = ctx.config.train().precision() == config::PRECISION_BF16;
  const auto rows_dtype = bf16 ? torch::kBFloat16 : torch::kFloat;
  const double dequant =
      quantized ? dequant_gweights_per_s(world, shape, probe, quant, rows_dtype, b) : 0.0;
  const double lm_head = lm_head_tflops(world, shape.hidden, b.vocab_size(), T, bf16, b);
  const auto [inplace, fresh] = memory_gbs(world, b);
  const double overhead = layer_overhead_ms(world, ctx.config);
  const double adamw = optimizer_ns_per_param(world, b);
  double a2a_gbs = 0, a2a_us = 0;
  if (n > 1) std::tie(a2a_gbs, a2a_us) = alltoall_gbs_and_latency_us(world, shape.hidden, b);

  // Per node: the ranks' rates summed, their per-rank times divided (plan divides and
  // multiplies them back by the ranks sharing the node).
  std::ostringstream sets;
  sets << "devices_per_node=" << n << " tflops_fp32=" << gemm * n
       << " tflops_bf16=" << gemm_bf16 * n << " memory_bandwidth_gbs=" << inplace * n
       << " layer_overhead_ms=" << overhead / n << " optimizer_ns_per_param=" << adamw / n
       << " expert_gemm_efficiency=" << bank_eff << " expert_wgrad_efficiency=" << wgrad_eff;
  if (quantized) sets << " dequant_gweights_per_s=" << dequant * n;
  sets << " lm_head_tflops=" << lm_head * n;
  if (n > 1) sets << " intra_node_gbs=" << a2a_gbs << " intra_node_latency_us=" << a2a_us;
  if (world->rank() != 0) return;

  std::ostringstream gemm_what;
  gemm_what << "SwiGLU forward+backward, " << T << " x " << shape.hidden << " x "
            << shape.intermediate << " fp32";
  Table table({"rate", "per_rank", "unit", "timed"});
  table.add({"gemm", Cell(gemm, 4), "TFLOPS", gemm_what.str()});
  table.add({"gemm_bf16", Cell(gemm_bf16, 4), "TFLOPS",
             bf16_native ? "the same in bf16, torch's own GEMMs"
                         : "bf16 runs in fp32 GEMMs on this CPU (cpu_linear)"});
  std::ostringstream bank_what;
  bank_what << "expert bank fwd+dgrad / dense GEMM, " << probe.busy_experts << " of "
            << probe.experts << " experts x " << probe.rows_per_busy_expert << " rows";
  table.add({"expert_gemm_efficiency", Cell(bank_eff, 3), "x gemm", bank_what.str()});
  table.add({"expert_wgrad_efficiency", Cell(wgrad_eff, 3), "x gemm",
             "the same bank's extra time for weight gradients"});
  if (quantized) {
    std::ostringstream what;
    what << quant_name(quant.kind());
    if (quant.kind() == QuantKind::kInt4)
      what << " g" << quant.group_size() << (quant.symmetric() ? " sym" : " asym");
    const int64_t rows = probe.rows_per_busy_expert;
    const bool fused = cpu_quant_gemm_fuses(quant.kind(), rows, rows_dtype);
    const auto float_dtype = quantized_gemm_dtype(quant, rows, rows_dtype);
    what << (fused ? " fused" : "") << " bank - "
         << (float_dtype == torch::kFloat ? "fp32" : "bf16") << " bank, "
         << (bf16 ? "bf16" : "fp32") << " rows, " << probe.busy_experts << " experts";
    table.add({"dequant", Cell(dequant, 3), "G weights/s", what.str()});
  }
  std::ostringstream head_what;
  head_what << "LM head + loss fwd+dgrad, " << T << " x " << shape.hidden << " x " << b.vocab_size()
            << (bf16 ? " bf16" : " fp32");
  table.add({"lm_head", Cell(lm_head, 4), "TFLOPS", head_what.str()});
  table.add({"memory", Cell(inplace, 2), "GB/s", "in-place add, 64 MiB tensors"});
  // Not a plan rate: blocks this large are new pages on every allocation; in training that is
  // the weight gradients, which the optimizer row includes.
  table.add({"fresh_memory", Cell(fresh, 2), "GB/s", "fill of a new 64 MiB tensor (info)"});
  table.add({"layer_overhead", Cell(overhead, 3), "ms", "hidden-32 Qwen2-MoE fwd+bwd / layers"});
  table.add(
      {"optimizer", Cell(adamw, 3), "ns/param", "verdict, norm, clip, AdamW step, 16 Mi params"});
  if (n > 1) {
    table.add({"alltoall", Cell(a2a_gbs, 3), "GB/s", "bytes sent to other ranks, 256K-16M"});
    table.add({"alltoall_latency", Cell(a2a_us, 1), "us", "the same, at zero bytes"});
  }
  if (ctx.json) {
    table.print_json(ctx.out);
    ctx.out << "{\"cluster_set\":\"" << sets.str() << "\"}\n";
    return;
  }
  ctx.out << "Rates for `switchyard plan`, " << n << " rank(s) measuring at once, "
          << torch::get_num_threads() << " thread(s) each, median of " << b.repeats()
          << " runs (slowest rank per run)\n";
  table.print(ctx.out);
  ctx.out << "cluster-set: " << sets.str() << "\n";
}

}  // namespace

BenchEntry rates_bench_entry() {
  return {"rates",
          "plan's rates (GEMM, LM head, dequantisation, memory, per-layer overhead, optimizer, "
          "all-to-all) measured by every rank at once; prints the --cluster-set values (run "
          "under mpirun)",
          run_rates_bench};
}

}  // namespace switchyard
