// The fused CPU GEMMs on quantized expert weights (models/quantized_cpu_gemm.h) against the
// dequantised weight in fp64: forward (a @ W^T) and input gradient (g @ W), every quantization
// kind, shapes with vector tails and partial blocks, the same bits for any thread count, and
// through an expert bank with autograd in both modes. The kernels are called directly or under a
// named mode (CpuQuantGemmScope), so each runs on any CPU (the one clone the CPU picks).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdlib>

#include "models/expert_bank.h"
#include "models/quantized_cpu_gemm.h"
#include "models/weight_quant.h"
#include "tests/test_support.h"

using namespace switchyard;
using test::leaf;

namespace {

struct Case {
  const char* name;
  QuantOptions options;
  int64_t out, in;
};

// Weight rows come four at a time, in column chunks of 512 or less (int4: whole groups); each
// chunk runs 16-lane vector loops and a scalar tail, and the input gradient's threads take whole
// groups (int8: 128 columns). out = 13 and 9: a partial last block of weight rows.
//   int8, in = 600: chunks of 512 and 88 (a tail of 8), thread units of 128 and 88;
//   int4 g24, in = 600: 12-column halves, shorter than the lanes, so scalar decoding only;
//     chunks of 504 (21 groups, a tail of 8) and 96;
//   int4 g48, in = 96: 24-column halves, one vector step and a scalar tail of 8 in each;
//   int4 g160 with zero points, in = 960: chunks of 480 (three groups);
//   int4 g640, in = 1280: groups wider than a chunk, one per chunk;
//   int4 g64, in = 640, 40 rows: the common case, every loop on its vector path.
const std::vector<Case> kCases = {
    {"int8", QuantOptions().kind(QuantKind::kInt8), 13, 600},
    {"int4 g24 symmetric", QuantOptions().kind(QuantKind::kInt4).group_size(24), 13, 600},
    {"int4 g48 asymmetric", QuantOptions().kind(QuantKind::kInt4).group_size(48).symmetric(false),
     13, 96},
    {"int4 g160 asymmetric", QuantOptions().kind(QuantKind::kInt4).group_size(160).symmetric(false),
     9, 960},
    {"int4 g640 symmetric", QuantOptions().kind(QuantKind::kInt4).group_size(640), 9, 1280},
    {"int4 g64 symmetric", QuantOptions().kind(QuantKind::kInt4).group_size(64), 40, 640},
};

// Relative to the largest reference value: fp32 accumulation of a few hundred products.
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kDouble) - want).abs().max().item<double>() /
         std::max(1e-30, want.abs().max().item<double>());
}

}  // namespace

TEST(QuantizedCpuGemm, ForwardAndInputGradientMatchTheDequantisedWeightInFp64) {
  torch::manual_seed(11);
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    auto w = QuantizedWeight::quantize(torch::randn({2, c.out, c.in}), c.options);
    const auto weight = w.dequantize(1, torch::kFloat).to(torch::kDouble);
    for (int64_t rows : {1, 5, 70}) {
      SCOPED_TRACE(rows);
      auto a = torch::randn({rows, c.in});
      auto y = fused_quantized_matmul_cpu(a, w, 1, /*transposed=*/true);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, c.out}));
      EXPECT_LT(relative_error(y, torch::matmul(a.to(torch::kDouble), weight.t())), 1e-5);
      auto g = torch::randn({rows, c.out});
      auto dx = fused_quantized_matmul_cpu(g, w, 1, /*transposed=*/false);
      ASSERT_EQ(dx.sizes(), (std::vector<int64_t>{rows, c.in}));
      EXPECT_LT(relative_error(dx, torch::matmul(g.to(torch::kDouble), weight)), 1e-5);
    }
  }
}

// Forward threads split weight rows and input-gradient threads split columns; each output is
// summed by one thread in one order, so the bits do not depend on the thread count.
TEST(QuantizedCpuGemm, ResultsAreTheSameBitsForAnyThreadCount) {
  torch::manual_seed(14);
  const int threads = at::get_num_threads();
  auto w = QuantizedWeight::quantize(
      torch::randn({1, 64, 512}),
      QuantOptions().kind(QuantKind::kInt4).group_size(32).symmetric(false));
  auto a = torch::randn({7, 512}), g = torch::randn({7, 64});
  std::vector<torch::Tensor> results;
  for (int n : {1, 4}) {
    at::set_num_threads(n);
    results.push_back(fused_quantized_matmul_cpu(a, w, 0, /*transposed=*/true));
    results.push_back(fused_quantized_matmul_cpu(g, w, 0, /*transposed=*/false));
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(results[0], results[2]));
  EXPECT_TRUE(torch::equal(results[1], results[3]));
}

TEST(QuantizedCpuGemm, HalfRowsEqualTheirFp32ResultRoundedOnceAndBatchDimsAreKept) {
  torch::manual_seed(12);
  auto w = QuantizedWeight::quantize(torch::randn({1, 24, 128}),
                                     QuantOptions().kind(QuantKind::kInt4).group_size(32));
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto a = torch::randn({2, 3, 128}).to(dtype);  // [batch, rows, in]
    auto y = fused_quantized_matmul_cpu(a, w, 0, /*transposed=*/true);
    ASSERT_EQ(y.scalar_type(), dtype);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 24}));
    auto y32 = fused_quantized_matmul_cpu(a.to(torch::kFloat), w, 0, /*transposed=*/true);
    EXPECT_TRUE(torch::equal(y, y32.to(dtype)));
  }
  auto none = fused_quantized_matmul_cpu(torch::zeros({0, 128}), w, 0, /*transposed=*/true);
  EXPECT_EQ(none.sizes(), (std::vector<int64_t>{0, 24}));
  EXPECT_THROW(fused_quantized_matmul_cpu(torch::zeros({2, 100}), w, 0, true), Error);
}

TEST(QuantizedCpuGemm, AutoFusesInt4UpToItsRowLimitAndScopesNest) {
  if (std::getenv("SWITCHYARD_CPU_QUANT_GEMM"))
    GTEST_SKIP() << "SWITCHYARD_CPU_QUANT_GEMM is set: kAuto follows it, not the row limit";
  const auto int4 = QuantKind::kInt4, int8 = QuantKind::kInt8;
  const auto fp32 = torch::kFloat, bf16 = torch::kBFloat16;
  EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 1, fp32));
  EXPECT_TRUE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows, fp32));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows + 1, fp32));
  EXPECT_TRUE(cpu_quant_gemm_fuses(int4, kFusedHalfQuantGemmMaxRows, bf16));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedHalfQuantGemmMaxRows + 1, bf16));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedHalfQuantGemmMaxRows + 1, torch::kHalf));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int8, 1, fp32));
  {
    CpuQuantGemmScope fused(CpuQuantGemm::kFused);
    EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 100000, bf16));
    EXPECT_TRUE(cpu_quant_gemm_fuses(int8, 1, fp32));
    {
      CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
      EXPECT_FALSE(cpu_quant_gemm_fuses(int4, 1, fp32));
    }
    EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 100000, fp32));
  }
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows + 1, fp32));
}

// A quantized bank's forward and input gradient in fp32 and bf16, fused against dequantised:
// the same weights, so fp32 agrees to accumulation order and bf16 to about one rounding.
TEST(QuantizedCpuGemm, ExpertBankFusedMatchesDequantisedWithInputGradients) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    SCOPED_TRACE(dtype == torch::kFloat ? "fp32" : "bf16");
    torch::manual_seed(13);
    ExpertBank bank(ExpertBankOptions(64, 96, 3));
    bank->quantize_(QuantOptions().kind(QuantKind::kInt4).group_size(32).symmetric(false));
    const std::vector<int64_t> counts{5, 0, 9};
    auto x0 = torch::randn({14, 64}).to(dtype);
    auto probe = torch::randn({14, 64}).to(dtype);
    auto run = [&](CpuQuantGemm mode) {
      CpuQuantGemmScope scope(mode);
      auto x = leaf(x0.clone());
      const int64_t before = experts_dequantized();
      auto y = bank->forward(x, counts);
      (y.to(torch::kFloat) * probe.to(torch::kFloat)).sum().backward();
      // Two weights of each expert with rows, in forward and again for the input gradient.
      EXPECT_EQ(experts_dequantized() - before, 2 * 2 * 2);
      return std::make_pair(y.detach().to(torch::kFloat), x.grad().to(torch::kFloat));
    };
    const auto [y_fused, dx_fused] = run(CpuQuantGemm::kFused);
    const auto [y_ref, dx_ref] = run(CpuQuantGemm::kDequantise);
    const double tol = dtype == torch::kFloat ? 1e-5 : 2e-2;  // bf16: about two roundings
    EXPECT_LT(relative_error(y_fused, y_ref.to(torch::kDouble)), tol);
    EXPECT_LT(relative_error(dx_fused, dx_ref.to(torch::kDouble)), tol);
  }
}
