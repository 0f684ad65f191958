// FWHT against the explicit normalised Hadamard matrix: every power of two up to 4096, forward
// and backward, CPU always and CUDA where a GPU is present.
#include <gtest/gtest.h>

#include "routers/fwht.h"

using namespace switchyard;

namespace {
std::vector<int64_t> widths_up_to(int64_t max) {
  std::vector<int64_t> w;
  for (int64_t n = 1; n <= max; n *= 2) w.push_back(n);
  return w;
}
}  // namespace

TEST(Fwht, HadamardMatrixIsOrthonormalAndSymmetric) {
  for (int64_t n : {1, 2, 8, 64}) {
    auto h = hadamard_matrix(n, torch::kDouble);
    EXPECT_TRUE(torch::allclose(h.matmul(h), torch::eye(n, torch::kDouble), 0, 1e-12)) << n;
    EXPECT_TRUE(torch::equal(h, h.t())) << n;
  }
  // Sylvester H_4 by hand.
  auto h4 = hadamard_matrix(4, torch::kDouble) * 2.0;
  auto expected =
      torch::tensor({1, 1, 1, 1, 1, -1, 1, -1, 1, 1, -1, -1, 1, -1, -1, 1}, torch::kDouble)
          .view({4, 4});
  EXPECT_TRUE(torch::equal(h4, expected));
}

TEST(Fwht, ForwardEqualsExplicitMatrixForEveryPowerOfTwoUpTo4096) {
  torch::manual_seed(0);
  for (int64_t n : widths_up_to(4096)) {
    auto x = torch::randn({5, n}, torch::kDouble);
    auto expected = x.matmul(hadamard_matrix(n, torch::kDouble));
    auto y = fwht(x);
    EXPECT_TRUE(torch::allclose(y, expected, 1e-12, 1e-10))
        << "n=" << n << " max diff " << (y - expected).abs().max().item<double>();
  }
}

TEST(Fwht, BackwardEqualsExplicitMatrixForEveryPowerOfTwoUpTo4096) {
  torch::manual_seed(1);
  for (int64_t n : widths_up_to(4096)) {
    auto x = torch::randn({3, n}, torch::kDouble).requires_grad_(true);
    auto g = torch::randn({3, n}, torch::kDouble);
    (fwht(x) * g).sum().backward();
    auto expected = g.matmul(hadamard_matrix(n, torch::kDouble).t());
    EXPECT_TRUE(torch::allclose(x.grad(), expected, 1e-12, 1e-10)) << "n=" << n;
  }
}

TEST(Fwht, FloatAndReducedPrecisionAndBatchedShapes) {
  torch::manual_seed(2);
  auto x = torch::randn({2, 3, 256});
  auto expected = x.to(torch::kDouble).matmul(hadamard_matrix(256, torch::kDouble));
  EXPECT_TRUE(torch::allclose(fwht(x).to(torch::kDouble), expected, 1e-5, 1e-5));
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto y = fwht(x.to(dtype));
    EXPECT_EQ(y.scalar_type(), dtype);
    EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), expected, 2e-2, 5e-2)) << dtype;
  }
}

TEST(Fwht, IsAnInvolution) {
  auto x = torch::randn({4, 1024}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(fwht(fwht(x)), x, 1e-12, 1e-12));
}

TEST(Fwht, RejectsNonPowerOfTwoAndIntegers) {
  EXPECT_THROW(fwht(torch::randn({2, 12})), c10::Error);
  EXPECT_THROW(fwht(torch::randn({2, 0})), c10::Error);
  EXPECT_THROW(fwht(torch::ones({2, 8}, torch::kLong)), c10::Error);
}

TEST(Fwht, EmptyBatchIsFine) {
  auto y = fwht(torch::randn({0, 64}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{0, 64}));
}

TEST(FwhtCuda, MatchesCpuForEveryDtypeAndWidth) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(3);
  // Up to 16384 covers the shared-memory kernel (<= 8192) and the global-memory fallback.
  for (int64_t n : widths_up_to(16384)) {
    auto x = torch::randn({7, n}, torch::kDouble);
    auto ref = fwht(x);
    auto x_cuda = x.to(torch::kCUDA).requires_grad_(true);
    auto y = fwht(x_cuda);
    EXPECT_TRUE(torch::allclose(y.cpu(), ref, 1e-12, 1e-10)) << "fp64 n=" << n;
    auto g = torch::randn({7, n}, torch::kDouble);
    (y * g.to(torch::kCUDA)).sum().backward();
    EXPECT_TRUE(torch::allclose(x_cuda.grad().cpu(), fwht(g), 1e-12, 1e-10)) << "grad n=" << n;
    EXPECT_TRUE(
        torch::allclose(fwht(x.to(torch::kFloat).cuda()).cpu().to(torch::kDouble), ref, 1e-4, 1e-4))
        << "fp32 n=" << n;
    for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
      auto yr = fwht(x.to(dtype).cuda()).cpu().to(torch::kDouble);
      EXPECT_TRUE(torch::allclose(yr, ref, 5e-2, 1e-1)) << dtype << " n=" << n;
    }
  }
}
