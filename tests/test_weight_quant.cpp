// Weight-only quantization: the int4 packing against a bit-by-bit reference written from the
// format description, round-to-nearest error bounds, and quantized experts in the MoE block and
// in the Qwen2-MoE model (logits error against the unquantized model, reported and bounded).
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <cstdlib>
#include <set>
#include <string>

#include "common/errors.h"
#include "models/expert_bank.h"
#include "models/quantized_cpu_gemm.h"
#include "models/qwen2_moe.h"
#include "models/weight_quant.h"

using namespace switchyard;

TEST(WeightQuant, Int4PackingMatchesBitByBitReference) {
  auto codes = torch::randint(0, 16, {3, 10}, torch::kLong);
  auto packed = pack_int4(codes);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{3, 5}));
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t b = 0; b < 5; ++b) {
      const auto lo = codes[r][2 * b].item<int64_t>(), hi = codes[r][2 * b + 1].item<int64_t>();
      EXPECT_EQ(packed[r][b].item<int64_t>(), lo + 16 * hi);  // even column in the low nibble
    }
  EXPECT_TRUE(torch::equal(unpack_int4(packed).to(torch::kLong), codes));
  EXPECT_THROW(pack_int4(torch::zeros({2, 3})), Error);
}

TEST(WeightQuant, RoundToNearestErrorIsAtMostHalfAStep) {
  torch::manual_seed(0);
  auto w = torch::randn({2, 6, 32});
  w[1][2].fill_(0.25);  // a constant row: asymmetric int4 must still reproduce it
  struct Case {
    QuantOptions options;
    const char* name;
  };
  for (const auto& c :
       {Case{QuantOptions().kind(QuantKind::kInt8), "int8"},
        Case{QuantOptions().kind(QuantKind::kInt4).group_size(8), "int4 sym"},
        Case{QuantOptions().kind(QuantKind::kInt4).group_size(8).symmetric(false), "int4 asym"}}) {
    auto qw = QuantizedWeight::quantize(w, c.options);
    for (int64_t e = 0; e < 2; ++e) {
      auto back = qw.dequantize(e, torch::kFloat);
      auto step = c.options.kind() == QuantKind::kInt8
                      ? qw.scale[e].unsqueeze(-1).expand({6, 32})
                      : qw.scale[e].unsqueeze(-1).expand({6, 4, 8}).reshape({6, 32});
      EXPECT_TRUE(((back - w[e]).abs() <= step * 0.5 + 1e-6).all().item<bool>()) << c.name;
    }
  }
  auto int8 = QuantizedWeight::quantize(w, QuantOptions().kind(QuantKind::kInt8));
  auto int4 = QuantizedWeight::quantize(w, QuantOptions().kind(QuantKind::kInt4).group_size(8));
  EXPECT_EQ(int8.nbytes(), 2 * 6 * 32 + 2 * 6 * 4);
  EXPECT_EQ(int4.nbytes(), 2 * 6 * 16 + 2 * 6 * 4 * 4);
  EXPECT_THROW(QuantizedWeight::quantize(w, QuantOptions().kind(QuantKind::kInt4).group_size(12)),
               Error);
}

TEST(WeightQuant, QuantizedExpertBankIsFrozenCloseAndPassesInputGradients) {
  for (auto kind : {ExpertKind::kSwiGlu, ExpertKind::kGeluMlp}) {
    torch::manual_seed(1);
    ExpertBank full(ExpertBankOptions(64, 32, 3).kind(kind));
    ExpertBank quant(ExpertBankOptions(64, 32, 3).kind(kind));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : quant->named_parameters()) p.value().copy_(full->named_parameters()[p.key()]);
    }
    quant->quantize_(QuantOptions().kind(QuantKind::kInt8));
    for (const auto& p : quant->parameters()) EXPECT_FALSE(p.requires_grad());
    EXPECT_LT(quant->weight_bytes(), full->weight_bytes() / 3);
    const std::vector<int64_t> counts{5, 0, 6};
    auto x = torch::randn({11, 64}, torch::requires_grad());
    auto a = full->forward(x, counts), b = quant->forward(x, counts);
    const double rel = ((a - b).abs().max() / a.abs().max()).item<double>();
    EXPECT_LT(rel, 2e-2);
    b.sum().backward();
    EXPECT_TRUE(x.grad().defined() && x.grad().abs().sum().item<double>() > 0);
    // Converting the module's dtype keeps the integer codes (LibTorch would cast them).
    quant->to(torch::kBFloat16);
    auto c = quant->forward(x.detach().to(torch::kBFloat16), counts).to(torch::kFloat);
    EXPECT_LT(((c - b).abs().max() / b.abs().max()).item<double>(), 3e-2);
  }
}

// A bank built for a loader skips the random weights it would quantize (its codes stay zero),
// only while the scope lives.
TEST(WeightQuant, SkipExpertInitLeavesCodesForTheLoaderInItsScopeOnly) {
  const auto int4 =
      ExpertBankOptions(64, 32, 3).quant(QuantOptions().kind(QuantKind::kInt4).group_size(8));
  auto nonzero_codes = [](const ExpertBank& b) {
    return b->quantized_in()->q.count_nonzero().item<int64_t>();
  };
  {
    SkipExpertInit skip;
    EXPECT_EQ(nonzero_codes(ExpertBank(int4)), 0);
  }
  EXPECT_GT(nonzero_codes(ExpertBank(int4)), 0);
}

TEST(WeightQuant, QuantizedBankEqualsAFullBankHoldingTheDequantizedWeights) {
  // The dequantised weight in torch's GEMM, as the full bank's; the fused CPU path sums in
  // another order (tests/test_quantized_cpu_gemm.cpp holds it to the same weights).
  CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
  torch::manual_seed(2);
  ExpertBank quant(ExpertBankOptions(32, 16, 2));
  quant->quantize_(QuantOptions().kind(QuantKind::kInt4).group_size(16).symmetric(false));
  auto w_in = torch::randn({32, 32}), w_out = torch::randn({32, 16});
  for (int64_t e = 0; e < 2; ++e) quant->load_expert(e, w_in * (e + 1), w_out * (e + 1));
  ExpertBank reference(ExpertBankOptions(32, 16, 2));
  {
    torch::NoGradGuard no_grad;
    for (int64_t e = 0; e < 2; ++e) {
      reference->w_in[e].copy_(quant->quantized_in()->dequantize(e, torch::kFloat));
      reference->w_out[e].copy_(quant->quantized_out()->dequantize(e, torch::kFloat));
    }
  }
  // load_expert quantized what it was given: half a step at most from it.
  EXPECT_LT((reference->w_in[1] - 2 * w_in).abs().max().item<double>(),
            quant->quantized_in()->scale[1].max().item<double>() * 0.5 + 1e-6);
  const std::vector<int64_t> counts{3, 4};
  auto x = torch::randn({7, 32}, torch::requires_grad());
  auto xr = x.detach().clone().requires_grad_(true);
  auto probe = torch::randn({7, 32});
  auto y = quant->forward(x, counts), yr = reference->forward(xr, counts);
  EXPECT_TRUE(torch::allclose(y, yr, 1e-5, 1e-5));
  (y * probe).sum().backward();
  (yr * probe).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-5, 1e-5));  // recomputed in backward
}

namespace {

const std::vector<QuantOptions> kAllQuantKinds = {
    QuantOptions().kind(QuantKind::kInt8), QuantOptions().kind(QuantKind::kInt4).group_size(16),
    QuantOptions().kind(QuantKind::kInt4).group_size(16).symmetric(false)};

// A second bank with the first one's codes, scales and float parameters.
ExpertBank copy_of(const ExpertBank& from, ExpertBankOptions options) {
  ExpertBank to(options);
  to->quantize_(from->options().quant());
  torch::NoGradGuard no_grad;
  for (auto& b : to->named_buffers()) b.value().copy_(from->named_buffers()[b.key()]);
  for (auto& p : to->named_parameters())
    if (p.value().numel() > 0) p.value().copy_(from->named_parameters()[p.key()]);
  return to;
}

// Whether y's autograd graph holds a node whose name contains `name`.
bool graph_has(const torch::Tensor& y, const std::string& name) {
  std::vector<torch::autograd::Node*> todo{y.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto* node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node).second) continue;
    if (node->name().find(name) != std::string::npos) return true;
    for (const auto& edge : node->next_edges()) todo.push_back(edge.function.get());
  }
  return false;
}

QuantizedWeight on_device(QuantizedWeight w, torch::Device device) {
  for (auto* t : {&w.q, &w.scale, &w.zero})
    if (t->defined()) *t = t->to(device);
  return w;
}

}  // namespace

TEST(WeightQuant, DequantizingExpertsTogetherEqualsOneByOne) {
  torch::manual_seed(6);
  auto w = torch::randn({3, 40, 32});
  for (const auto& options : kAllQuantKinds) {
    const auto qw = QuantizedWeight::quantize(w, options);
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      const auto all = qw.dequantize_experts(0, 3, dtype);
      ASSERT_EQ(all.sizes(), (std::vector<int64_t>{3, 40, 32}));
      EXPECT_EQ(all.scalar_type(), dtype);
      for (int64_t e = 0; e < 3; ++e) EXPECT_TRUE(torch::equal(all[e], qw.dequantize(e, dtype)));
      EXPECT_TRUE(torch::equal(qw.dequantize_experts(1, 3, dtype), all.narrow(0, 1, 2)));
      EXPECT_EQ(qw.dequantize_experts(2, 2, dtype).size(0), 0);
    }
    EXPECT_THROW(qw.dequantize_experts(2, 4, torch::kFloat), Error);
    EXPECT_THROW(qw.dequantize_experts(-1, 1, torch::kFloat), Error);
  }
}

// The grouped GEMM on a quantized bank (the GPU's bf16 path, forced here on the CPU) dequantises
// the whole bank per GEMM; the slice loop one expert at a time. Same codes, same outputs and
// input gradients, also with an expert that gets no rows.
TEST(WeightQuant, GroupedGemmOnAQuantizedBankEqualsTheSliceLoop) {
  for (const auto& options : kAllQuantKinds) {
    for (auto kind : {ExpertKind::kSwiGlu, ExpertKind::kGeluMlp}) {
      torch::manual_seed(7);
      ExpertBank loop(
          ExpertBankOptions(32, 16, 4).kind(kind).gemm(GroupedGemm::kSliceLoop).quant(options));
      auto grouped =
          copy_of(loop, ExpertBankOptions(32, 16, 4).kind(kind).gemm(GroupedGemm::kGroupedMm));
      const std::vector<int64_t> counts{5, 0, 9, 2};
      auto x = torch::randn({16, 32});
      auto xl = x.clone().requires_grad_(true), xg = x.clone().requires_grad_(true);
      auto a = loop->forward(xl, counts), b = grouped->forward(xg, counts);
      EXPECT_TRUE(graph_has(b, "QuantizedGroupedLinear"));
      EXPECT_FALSE(graph_has(a, "QuantizedGroupedLinear"));
      EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5)) << quant_name(options.kind());
      a.square().sum().backward();  // a non-uniform gradient into each expert's second GEMM
      b.square().sum().backward();
      EXPECT_TRUE(torch::allclose(xl.grad(), xg.grad(), 1e-5, 1e-5));
      EXPECT_GT(xg.grad().abs().sum().item<double>(), 0);
      // y.sum() sends _grouped_mm an expanded (zero-stride) gradient; the backward copies it.
      auto xs = x.clone().requires_grad_(true);
      grouped->forward(xs, counts).sum().backward();
      EXPECT_TRUE(xs.grad().defined());
    }
  }
}

// The CUDA kernel computes models/dequant_math.h's arithmetic as the CPU loop does: the same bits
// in every output dtype, for a whole bank and for a range of experts.
// Both kernel layouts: rows of 256 columns in groups of 16 take the row kernels (8 weights a
// thread, 16-byte stores), rows of 12 columns in groups of 4 the element kernels.
TEST(WeightQuantGpu, CudaDequantKernelEqualsTheCpuLoopBitForBit) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(8);
  const std::vector<std::pair<torch::Tensor, std::vector<QuantOptions>>> cases = {
      {torch::randn({3, 300, 256}), kAllQuantKinds},  // 300 rows per expert: many blocks
      {torch::randn({3, 5, 12}),
       {QuantOptions().kind(QuantKind::kInt8), QuantOptions().kind(QuantKind::kInt4).group_size(4),
        QuantOptions().kind(QuantKind::kInt4).group_size(4).symmetric(false)}}};
  for (const auto& [w, kinds] : cases)
    for (const auto& options : kinds) {
      const auto cpu = QuantizedWeight::quantize(w, options);
      const auto gpu = on_device(cpu, torch::kCUDA);
      for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
        EXPECT_TRUE(torch::equal(gpu.dequantize_experts(0, 3, dtype).cpu(),
                                 cpu.dequantize_experts(0, 3, dtype)))
            << quant_name(options.kind()) << " " << dtype << " " << w.sizes();
        EXPECT_TRUE(torch::equal(gpu.dequantize(2, dtype).cpu(), cpu.dequantize(2, dtype)));
        EXPECT_TRUE(torch::equal(gpu.dequantize_experts(1, 3, dtype).cpu(),
                                 cpu.dequantize_experts(1, 3, dtype)));
      }
    }
}

// bf16 on a GPU takes the grouped GEMM also for quantized banks: against the slice loop on the
// same codes, forward and input gradient agree to bf16 rounding.
TEST(WeightQuantGpu, Bf16GroupedGemmOnAQuantizedBankMatchesTheSliceLoop) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  for (const auto& options : kAllQuantKinds) {
    torch::manual_seed(9);
    ExpertBank loop(ExpertBankOptions(256, 128, 4).gemm(GroupedGemm::kSliceLoop).quant(options));
    auto grouped = copy_of(loop, ExpertBankOptions(256, 128, 4));  // kAuto: grouped on bf16 CUDA
    loop->to(torch::kCUDA, torch::kBFloat16);
    grouped->to(torch::kCUDA, torch::kBFloat16);
    const std::vector<int64_t> counts{40, 0, 72, 16};
    auto x = torch::randn({128, 256}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
    auto xl = x.clone().requires_grad_(true), xg = x.clone().requires_grad_(true);
    auto a = loop->forward(xl, counts), b = grouped->forward(xg, counts);
    EXPECT_TRUE(graph_has(b, "QuantizedGroupedLinear"));
    auto rel = [](const torch::Tensor& u, const torch::Tensor& v) {
      return ((u.to(torch::kFloat) - v.to(torch::kFloat)).abs().max() /
              v.to(torch::kFloat).abs().max())
          .item<double>();
    };
    EXPECT_LT(rel(b, a), 1e-2) << quant_name(options.kind());
    a.to(torch::kFloat).square().sum().backward();
    b.to(torch::kFloat).square().sum().backward();
    EXPECT_LT(rel(xg.grad(), xl.grad()), 2e-2) << quant_name(options.kind());
  }
}

// Dequantise-on-the-fly on CUDA: the same bank moved to the GPU gives the CPU's outputs and input
// gradients for every quantization kind, in fp32 and bf16.
TEST(WeightQuantGpu, QuantizedBankOnGpuMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  for (const auto& options :
       {QuantOptions().kind(QuantKind::kInt8), QuantOptions().kind(QuantKind::kInt4).group_size(32),
        QuantOptions().kind(QuantKind::kInt4).group_size(32).symmetric(false)}) {
    for (auto kind : {ExpertKind::kSwiGlu, ExpertKind::kGeluMlp}) {
      torch::manual_seed(5);
      ExpertBank cpu(ExpertBankOptions(128, 64, 3).kind(kind));
      cpu->quantize_(options);
      ExpertBank gpu(ExpertBankOptions(128, 64, 3).kind(kind));
      gpu->quantize_(options);
      {
        torch::NoGradGuard no_grad;
        for (auto& b : gpu->named_buffers()) b.value().copy_(cpu->named_buffers()[b.key()]);
        for (auto& p : gpu->named_parameters())
          if (p.value().numel() > 0) p.value().copy_(cpu->named_parameters()[p.key()]);
      }
      gpu->to(torch::kCUDA);
      const std::vector<int64_t> counts{9, 0, 7};
      auto x = torch::randn({16, 128});
      auto xc = x.clone().requires_grad_(true);
      auto xg = x.cuda().requires_grad_(true);
      auto a = cpu->forward(xc, counts), b = gpu->forward(xg, counts);
      EXPECT_TRUE(b.is_cuda());
      EXPECT_TRUE(torch::allclose(a, b.cpu(), 1e-4, 1e-4)) << quant_name(options.kind());
      a.square().sum().backward();
      b.square().sum().backward();
      EXPECT_TRUE(torch::allclose(xc.grad(), xg.grad().cpu(), 1e-4, 1e-4));
      gpu->to(torch::kBFloat16);  // the codes stay integers; compute in bf16 on the GPU
      auto c = gpu->forward(x.cuda().to(torch::kBFloat16), counts).to(torch::kFloat).cpu();
      EXPECT_LT(((c - a.detach()).abs().max() / a.abs().max()).item<double>(), 3e-2);
    }
  }
}

TEST(HfReference, Qwen2MoeQuantizedExpertsStayCloseToTheUnquantizedModel) {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  if (!refs) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const std::string dir = std::string(refs) + "/qwen2_moe/base";
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  auto ids = ref->get("input_ids"), mask = ref->get("attention_mask"), want = ref->get("logits");
  auto keep = mask.to(torch::kBool).unsqueeze(-1).expand_as(want);
  struct Case {
    config::QuantType type;
    bool symmetric;
    double bound;
  };
  // Measured: int8 6e-3, int4 8e-2 to 1e-1 of the logit scale (groups of 8, weights std 0.1).
  for (const auto& c : {Case{config::INT8, true, 1e-2}, Case{config::INT4, true, 0.15},
                        Case{config::INT4, false, 0.15}}) {
    Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
    load_hf_weights(*model, SafetensorsCheckpoint(dir));
    config::QuantConfig q;
    q.set_experts(c.type);
    q.set_group_size(8);
    q.set_symmetric(c.symmetric);
    q.set_shared_expert(true);
    auto [before, after] = quantize_experts(*model, q);
    model->eval();
    torch::NoGradGuard no_grad;
    auto logits = model->forward(ids, mask).logits;
    const double err = (logits - want).abs().masked_select(keep).max().item<double>() /
                       want.abs().max().item<double>();
    std::cout << "[ quant    ] " << config::QuantType_Name(c.type)
              << (c.symmetric ? " sym" : " asym") << ": max logit error " << err
              << " of scale, expert bytes " << before << " -> " << after << "\n";
    EXPECT_LT(err, c.bound);
    EXPECT_GT(err, 0.0);  // it did quantize
    EXPECT_LT(after, before / 3);
    // Quantizing while building and loading expert by expert gives the same codes.
    Qwen2MoeForCausalLM built(Qwen2MoeOptions(cfg, single_process_groups()).quant(q));
    load_hf_weights(*built, SafetensorsCheckpoint(dir));
    built->eval();
    EXPECT_TRUE(torch::equal(built->forward(ids, mask).logits, logits))
        << (built->forward(ids, mask).logits - logits).abs().max().item<double>();
  }
  config::QuantConfig bad;
  bad.set_experts(config::INT4);  // group 128 does not divide the tiny model's width
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  EXPECT_THROW(quantize_experts(*model, bad), ConfigError);
}
