// The fused CPU GEMMs on quantized expert weights (models/quantized_cpu_gemm.h) against the
// dequantised weight in fp64: forward (a @ W^T) and input gradient (g @ W), every quantization
// kind, shapes with vector tails and partial blocks, and through an expert bank with autograd in
// both modes. Every test names the mode it takes (CpuQuantGemmScope), so each runs on any CPU.
#include <gtest/gtest.h>

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

// out = 13: three blocks of four weight rows and a partial one. in = 72 with groups of 24: each
// group's halves (12 columns) are shorter than the kernels' 16 lanes, so only their scalar tails
// run; in = 160 with groups of 32 and 64 takes the vector loops and a 16-column tail per row;
// int8 at in = 300: a partial 256-column block of the input gradient.
const std::vector<Case> kCases = {
    {"int8", QuantOptions().kind(QuantKind::kInt8), 13, 300},
    {"int4 g24 symmetric", QuantOptions().kind(QuantKind::kInt4).group_size(24), 13, 72},
    {"int4 g32 asymmetric", QuantOptions().kind(QuantKind::kInt4).group_size(32).symmetric(false),
     13, 160},
    {"int4 g160 asymmetric", QuantOptions().kind(QuantKind::kInt4).group_size(160).symmetric(false),
     9, 320},
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
  const auto int4 = QuantKind::kInt4, int8 = QuantKind::kInt8;
  EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 1));
  EXPECT_TRUE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows + 1));
  EXPECT_FALSE(cpu_quant_gemm_fuses(int8, 1));
  {
    CpuQuantGemmScope fused(CpuQuantGemm::kFused);
    EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 100000));
    EXPECT_TRUE(cpu_quant_gemm_fuses(int8, 1));
    {
      CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
      EXPECT_FALSE(cpu_quant_gemm_fuses(int4, 1));
    }
    EXPECT_TRUE(cpu_quant_gemm_fuses(int4, 100000));
  }
  EXPECT_FALSE(cpu_quant_gemm_fuses(int4, kFusedQuantGemmMaxRows + 1));
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
