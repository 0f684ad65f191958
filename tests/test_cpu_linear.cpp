// The CPU bf16/fp16 paths that run their GEMMs in fp32 (models/cpu_linear.h, the quantized
// experts' chunked dequantisation) and torch's native bf16 GEMMs beside them, against fp32
// references built from the same bf16 values: outputs and gradients must agree to about one bf16
// rounding. Every test names the path it takes (CpuHalfGemmScope), so each runs on any CPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "models/cpu_linear.h"
#include "models/expert_bank.h"
#include "models/quantized_cpu_gemm.h"
#include "models/weight_quant.h"
#include "tests/test_support.h"

using namespace switchyard;
using test::close;
using test::leaf;

TEST(CpuLinear, OutputAndAllGradientsMatchAnFp32Reference) {
  CpuHalfGemmScope chunks(CpuHalfGemm::kFp32Chunks);
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    torch::manual_seed(0);
    // 30 output rows in chunks of 7: four full chunks and a partial one.
    auto x = leaf(torch::randn({2, 5, 48}).to(dtype));
    auto w = leaf(torch::randn({30, 48}).div(7).to(dtype));
    auto b = leaf(torch::randn({30}).to(dtype));
    auto probe = torch::randn({2, 5, 30}).to(dtype);  // upstream gradient, in the model's dtype
    ASSERT_TRUE(gemm_in_fp32_on_cpu(x, w));
    auto y = cpu_linear(x, w, b, /*chunk_rows=*/7);
    ASSERT_EQ(y.scalar_type(), dtype);
    (y * probe).sum().backward();

    auto x32 = leaf(x.detach().to(torch::kFloat)), w32 = leaf(w.detach().to(torch::kFloat)),
         b32 = leaf(b.detach().to(torch::kFloat));
    auto y32 = torch::matmul(x32, w32.t()) + b32;
    (y32 * probe.to(torch::kFloat)).sum().backward();

    EXPECT_TRUE(close(y, y32)) << dtype;
    EXPECT_TRUE(close(x.grad(), x32.grad())) << dtype;
    EXPECT_TRUE(close(w.grad(), w32.grad())) << dtype;
    EXPECT_TRUE(close(b.grad(), b32.grad())) << dtype;
    EXPECT_EQ(w.grad().scalar_type(), dtype);
  }
}

TEST(CpuLinear, FrozenWeightGetsNoGradientAndItsInputIsNotKept) {
  torch::manual_seed(1);
  auto w = torch::randn({40, 16}).to(torch::kBFloat16);  // frozen, as in router fine-tuning
  auto source = leaf(torch::randn({6, 16}).to(torch::kBFloat16));
  auto x = source * 1;  // not a leaf, so it can be modified in place
  auto y = cpu_linear(x, w, {}, /*chunk_rows=*/9);
  // Autograd would refuse this backward if x had been saved (its version changed).
  x.detach().add_(1);
  auto probe = torch::randn({6, 40}).to(torch::kBFloat16);
  (y * probe).sum().backward();
  EXPECT_FALSE(w.grad().defined());
  auto want = torch::matmul(probe.to(torch::kFloat), w.to(torch::kFloat));
  EXPECT_TRUE(close(source.grad(), want));
}

TEST(CpuLinear, TakesOnlyCpuBf16AndFp16AndLeavesFp32Unchanged) {
  CpuHalfGemmScope chunks(CpuHalfGemm::kFp32Chunks);
  auto f32 = torch::randn({3, 8}), b16 = f32.to(torch::kBFloat16), f16 = f32.to(torch::kHalf);
  EXPECT_FALSE(gemm_in_fp32_on_cpu(f32, f32));
  EXPECT_TRUE(gemm_in_fp32_on_cpu(b16, b16));
  EXPECT_TRUE(gemm_in_fp32_on_cpu(f16, f16));
  EXPECT_FALSE(gemm_in_fp32_on_cpu(b16, f16));
  torch::nn::Linear m(torch::nn::LinearOptions(8, 5));
  EXPECT_TRUE(torch::equal(forward_linear(m, f32), m(f32)));  // the same kernel, bit for bit
}

// /proc/cpuinfo's flags (empty where there is none).
std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      return {std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
    }
  return {};
}

TEST(CpuLinear, AutoTakesTorchsBf16GemmsWhereTheCpuHasBf16InstructionsAndChunksElsewhere) {
  const auto flags = cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags to check against";
  const bool bf16_instructions =
      flags.count("avx512_bf16") || flags.count("amx_bf16") || flags.count("avx_ne_convert");
  // No bf16 instructions (AVX2, or AVX-512 where oneDNN would emulate bf16): the chunks.
  if (!bf16_instructions) EXPECT_FALSE(cpu_has_native_gemm(torch::kBFloat16));
  if (flags.count("avx512_bf16") && flags.count("avx512bw") && flags.count("avx512vl"))
    EXPECT_TRUE(cpu_has_native_gemm(torch::kBFloat16));
  if (cpu_has_native_gemm(torch::kBFloat16)) EXPECT_TRUE(torch_has_onednn_gemm(torch::kBFloat16));
  EXPECT_FALSE(cpu_has_native_gemm(torch::kFloat));
  EXPECT_FALSE(cpu_has_native_gemm(torch::kHalf));  // fp16 keeps the chunks under kAuto

  auto b16 = torch::randn({3, 8}).to(torch::kBFloat16);
  const bool auto_native = cpu_half_gemm_is_native(torch::kBFloat16);  // SWITCHYARD_CPU_BF16_GEMM
  if (!std::getenv("SWITCHYARD_CPU_BF16_GEMM"))
    EXPECT_EQ(auto_native, cpu_has_native_gemm(torch::kBFloat16));
  EXPECT_EQ(gemm_in_fp32_on_cpu(b16, b16), !auto_native);
  {
    CpuHalfGemmScope native(CpuHalfGemm::kNative);
    EXPECT_FALSE(gemm_in_fp32_on_cpu(b16, b16));
    {
      CpuHalfGemmScope chunks(CpuHalfGemm::kFp32Chunks);
      EXPECT_TRUE(gemm_in_fp32_on_cpu(b16, b16));
    }
    EXPECT_FALSE(gemm_in_fp32_on_cpu(b16, b16));  // the inner scope restored the outer's mode
  }
  EXPECT_EQ(gemm_in_fp32_on_cpu(b16, b16), !auto_native);
}

TEST(CpuLinear, NativeModeIsTorchsOwnLinearAndKeepsNoInputForAFrozenWeight) {
  CpuHalfGemmScope native(CpuHalfGemm::kNative);
  torch::manual_seed(5);
  torch::nn::Linear m(torch::nn::LinearOptions(16, 24));
  m->to(torch::kBFloat16);
  m->weight.requires_grad_(false);  // frozen, as in router fine-tuning
  auto source = leaf(torch::randn({2, 3, 16}).to(torch::kBFloat16));
  auto x = source * 1;
  auto y = forward_linear(m, x);
  EXPECT_TRUE(torch::equal(y, m(x)));  // the same kernel, bit for bit
  // Autograd would refuse this backward if x had been saved (its version changed).
  x.detach().add_(1);
  auto probe = torch::randn({2, 3, 24}).to(torch::kBFloat16);
  (y * probe).sum().backward();
  auto want = torch::matmul(probe.to(torch::kFloat), m->weight.to(torch::kFloat));
  EXPECT_TRUE(close(source.grad(), want));
}

TEST(CpuLinear, Bf16ExpertBankMatchesFp32BankWithGradients) {
  for (auto mode : {CpuHalfGemm::kFp32Chunks, CpuHalfGemm::kNative}) {
    SCOPED_TRACE(mode == CpuHalfGemm::kNative ? "native bf16 GEMMs" : "fp32 chunks");
    CpuHalfGemmScope scope(mode);
    torch::manual_seed(2);
    ExpertBank bf16(ExpertBankOptions(32, 24, 3));
    bf16->to(torch::kBFloat16);
    ExpertBank fp32(ExpertBankOptions(32, 24, 3));
    {
      torch::NoGradGuard no_grad;
      fp32->w_in.copy_(bf16->w_in.to(torch::kFloat));
      fp32->w_out.copy_(bf16->w_out.to(torch::kFloat));
    }
    const std::vector<int64_t> counts{4, 0, 5};
    auto x = leaf(torch::randn({9, 32}).to(torch::kBFloat16));
    auto x32 = leaf(x.detach().to(torch::kFloat));
    auto probe = torch::randn({9, 32}).to(torch::kBFloat16);
    auto y = bf16->forward(x, counts), y32 = fp32->forward(x32, counts);
    (y * probe).sum().backward();
    (y32 * probe.to(torch::kFloat)).sum().backward();
    // The bf16 bank also rounds its hidden states, activation and product to bf16 (measured
    // 2.5e-3 of the scale at most); a wrong chunk or a missing gradient is off by O(scale).
    EXPECT_TRUE(close(y, y32, 2.0 / 128, 1e-2));
    EXPECT_TRUE(close(x.grad(), x32.grad(), 2.0 / 128, 1e-2));
    EXPECT_TRUE(close(bf16->w_in.grad(), fp32->w_in.grad(), 2.0 / 128, 1e-2));
    EXPECT_TRUE(close(bf16->w_out.grad(), fp32->w_out.grad(), 2.0 / 128, 1e-2));
  }
}

TEST(CpuDequantize, EqualsTheFormatFormulaBitForBit) {
  torch::manual_seed(3);
  auto w = torch::randn({2, 600, 64});  // 600 rows: several parallel chunks
  for (const auto& options :
       {QuantOptions().kind(QuantKind::kInt8), QuantOptions().kind(QuantKind::kInt4).group_size(16),
        QuantOptions().kind(QuantKind::kInt4).group_size(16).symmetric(false)}) {
    auto qw = QuantizedWeight::quantize(w, options);
    for (int64_t e = 0; e < 2; ++e) {
      torch::Tensor want;
      if (options.kind() == QuantKind::kInt8) {
        want = qw.q[e].to(torch::kFloat) * qw.scale[e].unsqueeze(-1);
      } else {
        auto codes = unpack_int4(qw.q[e]).to(torch::kFloat).view({600, 4, 16});
        auto zero = options.symmetric() ? torch::full({600, 4, 1}, 8.0f)
                                        : qw.zero[e].to(torch::kFloat).unsqueeze(-1);
        want = ((codes - zero) * qw.scale[e].unsqueeze(-1)).view({600, 64});
      }
      EXPECT_TRUE(torch::equal(qw.dequantize(e, torch::kFloat), want));
      EXPECT_TRUE(torch::equal(qw.dequantize(e, torch::kBFloat16), want.to(torch::kBFloat16)));
    }
  }
}

TEST(CpuDequantize, Bf16QuantizedExpertsMatchFp32ReferenceWithInputGradients) {
  // Dequantised quantized experts take chunks of the weight: into native bf16 GEMMs or into fp32
  // ones, as the mode says. (The fused path at these few rows: tests/test_quantized_cpu_gemm.cpp.)
  CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
  for (auto mode : {CpuHalfGemm::kFp32Chunks, CpuHalfGemm::kNative}) {
    SCOPED_TRACE(mode == CpuHalfGemm::kNative ? "native bf16 GEMMs" : "fp32 chunks");
    CpuHalfGemmScope scope(mode);
    torch::manual_seed(4);
    // 1 MB fp32 chunks: w_in (768 x 2048) in six of 128 rows, w_out (2048 x 384) in 682, 682,
    // 682, 2; one native chunk each.
    ExpertBank quant(ExpertBankOptions(2048, 384, 2));
    quant->quantize_(QuantOptions().kind(QuantKind::kInt4).group_size(128));
    // Rows enough for the native GEMMs (kNativeQuantGemmMinRows) where the mode allows them.
    const std::vector<int64_t> counts{24, 28};
    ASSERT_EQ(cpu_dequantised_gemm_is_native(torch::kBFloat16, 24), mode == CpuHalfGemm::kNative);
    auto x = leaf(torch::randn({52, 2048}).to(torch::kBFloat16));
    auto probe = torch::randn({52, 2048}).to(torch::kBFloat16);
    auto y = quant->forward(x, counts);
    ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
    (y * probe).sum().backward();

    ExpertBank reference(ExpertBankOptions(2048, 384, 2));
    {
      torch::NoGradGuard no_grad;
      for (int64_t e = 0; e < 2; ++e) {
        reference->w_in[e].copy_(quant->quantized_in()->dequantize(e, torch::kFloat));
        reference->w_out[e].copy_(quant->quantized_out()->dequantize(e, torch::kFloat));
      }
    }
    auto x32 = leaf(x.detach().to(torch::kFloat));
    auto y32 = reference->forward(x32, counts);
    (y32 * probe.to(torch::kFloat)).sum().backward();
    // As for the bf16 bank: intermediate bf16 roundings (measured 5e-3 of the scale at most).
    EXPECT_TRUE(close(y, y32, 2.0 / 128, 1e-2));
    EXPECT_TRUE(close(x.grad(), x32.grad(), 2.0 / 128, 1e-2));
  }
}

// A dequantised weight's chunks go to native GEMMs from kNativeQuantGemmMinRows rows of bf16 or
// fp16, where the mode gives the dtype native GEMMs; fp32 rows never take them.
TEST(CpuDequantize, NativeGemmsFromTheRowLimitWhereTheModeAllows) {
  {
    CpuHalfGemmScope native(CpuHalfGemm::kNative);
    EXPECT_FALSE(cpu_dequantised_gemm_is_native(torch::kBFloat16, kNativeQuantGemmMinRows - 1));
    EXPECT_TRUE(cpu_dequantised_gemm_is_native(torch::kBFloat16, kNativeQuantGemmMinRows));
    EXPECT_TRUE(cpu_dequantised_gemm_is_native(torch::kHalf, 4096));
    EXPECT_FALSE(cpu_dequantised_gemm_is_native(torch::kFloat, 4096));
  }
  CpuHalfGemmScope chunks(CpuHalfGemm::kFp32Chunks);
  EXPECT_FALSE(cpu_dequantised_gemm_is_native(torch::kBFloat16, 4096));
}

// A weight of one chunk (Qwen's routed experts) on the native path: its forward and input
// gradient are torch's bf16 GEMMs against the weight dequantised to bf16, bit for bit, in every
// batch shape; int8 and fp16 rows too.
TEST(CpuDequantize, NativeGemmsOfAOneChunkWeightAreTorchsGemmsBitForBit) {
  CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
  CpuHalfGemmScope native(CpuHalfGemm::kNative);
  torch::manual_seed(7);
  for (const auto& options : {QuantOptions().kind(QuantKind::kInt4).group_size(64),
                              QuantOptions().kind(QuantKind::kInt8)}) {
    for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
      SCOPED_TRACE(quant_name(options.kind()) + (dtype == torch::kHalf ? " fp16" : " bf16"));
      auto w = std::make_shared<const QuantizedWeight>(
          QuantizedWeight::quantize(torch::randn({2, 96, 256}).mul_(0.05), options));
      const auto w16 = w->dequantize(1, dtype);
      auto x = leaf(torch::randn({2, 20, 256}).to(dtype));  // 40 rows in a [B, S, K] batch
      auto y = quantized_linear(x, w, 1);
      ASSERT_EQ(y.sizes(), (torch::IntArrayRef{2, 20, 96}));
      EXPECT_TRUE(
          torch::equal(y.reshape({40, 96}), torch::mm(x.detach().reshape({40, 256}), w16.t())));
      auto g = torch::randn({2, 20, 96}).to(dtype);
      y.backward(g);
      EXPECT_TRUE(torch::equal(x.grad().reshape({40, 256}), torch::mm(g.reshape({40, 96}), w16)));
    }
  }
}

// Native bf16 GEMMs against a weight of more than one 16 MB chunk (4160 x 2048: 4096 rows, then
// 64): the forward is the GEMM against the weight dequantised to bf16, chunk by chunk; the input
// gradient sums the two chunks' products in fp32, each rounded to bf16 once.
TEST(CpuDequantize, NativeBf16ChunksOfALargeWeightMatchItsRoundedWeight) {
  CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
  CpuHalfGemmScope native(CpuHalfGemm::kNative);
  ASSERT_TRUE(cpu_dequantised_gemm_is_native(torch::kBFloat16, 32));
  torch::manual_seed(6);
  for (bool symmetric : {true, false}) {
    SCOPED_TRACE(symmetric ? "int4 symmetric" : "int4 with zeros");
    auto w = std::make_shared<const QuantizedWeight>(QuantizedWeight::quantize(
        torch::randn({1, 4160, 2048}).mul_(0.02),
        QuantOptions().kind(QuantKind::kInt4).group_size(128).symmetric(symmetric)));
    const auto w16 = w->dequantize(0, torch::kBFloat16);
    auto x = leaf(torch::randn({32, 2048}).to(torch::kBFloat16));
    auto y = quantized_linear(x, w, 0);
    ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
    // Each output column is one GEMM's dot product in fp32, rounded once: at most one bf16 step
    // from the whole-weight GEMM, whose blocking may differ. The first chunk's columns are that
    // GEMM on its rows exactly (the fp32 path's unrounded weight would not give these bits).
    EXPECT_TRUE(close(y, torch::mm(x.detach(), w16.t()), 1.0 / 128, 1e-3));
    EXPECT_TRUE(
        torch::equal(y.narrow(1, 0, 4096), torch::mm(x.detach(), w16.narrow(0, 0, 4096).t())));
    auto g = torch::randn({32, 4160}).to(torch::kBFloat16);
    y.backward(g);
    const auto want = torch::mm(g.to(torch::kFloat), w16.to(torch::kFloat));
    EXPECT_TRUE(close(x.grad(), want, 2.0 / 128, 1e-3));
    // A chunk left out (64 of 4160 rows) would move the gradient by about 1/8 of its scale.
    const auto first_chunk_only =
        torch::mm(g.narrow(1, 0, 4096).to(torch::kFloat), w16.narrow(0, 0, 4096).to(torch::kFloat));
    EXPECT_FALSE(close(x.grad(), first_chunk_only, 2.0 / 128, 1e-3));
  }
}
