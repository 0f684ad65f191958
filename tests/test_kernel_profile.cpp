// common/kernel_profile.h on the CPU: a pass's operators by self time (nothing counted twice),
// the busy time within the wall time, and the Chrome trace on disk. On a GPU the same call sums
// kernels instead (gpu_check.sh runs it through `bench layer`).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "common/kernel_profile.h"

using namespace switchyard;

namespace {

const KernelTime* find(const KernelProfile& p, const std::string& name) {
  for (const auto& k : p.kernels)
    if (k.name == name) return &k;
  return nullptr;
}

TEST(KernelProfile, CpuOpsBySelfTimeWithinTheWallTimeAndATrace) {
  torch::manual_seed(0);
  auto x = torch::randn({256, 512}), w = torch::randn({1024, 512}), b = torch::randn({1024});
  const auto dir = std::filesystem::temp_directory_path() / "sy_kernel_profile";
  std::filesystem::create_directories(dir);
  const auto trace = (dir / "linear.json").string();
  std::filesystem::remove(trace);
  const KernelProfile p = profile_kernels(
      [&] {
        for (int i = 0; i < 3; ++i) torch::nn::functional::linear(x, w, b).relu_();
      },
      torch::kCPU, trace);
  EXPECT_FALSE(p.device_kernels);
  ASSERT_FALSE(p.kernels.empty());
  // linear is a transpose (aten::t) and a GEMM with the bias (aten::addmm, which copies the bias
  // into its output first: aten::copy_ inside it).
  const KernelTime* transpose = find(p, "aten::t");
  const KernelTime* gemm = find(p, "aten::addmm");
  const KernelTime* copy = find(p, "aten::copy_");
  ASSERT_NE(transpose, nullptr);
  ASSERT_NE(gemm, nullptr);
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(transpose->calls, 3);
  EXPECT_EQ(gemm->calls, 3);
  EXPECT_GT(gemm->total_us, 0);
  for (size_t i = 1; i < p.kernels.size(); ++i)  // largest first
    EXPECT_GE(p.kernels[i - 1].total_us, p.kernels[i].total_us);
  double self = 0;
  for (const auto& k : p.kernels) {
    EXPECT_GE(k.total_us, 0) << k.name;
    self += k.total_us;
  }
  // Self times add up to the outermost ops' time, which lies within the wall time: the copy
  // inside the GEMM op counts once (inclusive times would add it twice).
  EXPECT_NEAR(self, p.busy_us, 0.01 * p.busy_us);
  EXPECT_GT(p.busy_us, 0);
  EXPECT_LE(p.busy_us, p.wall_us * 1.01);
  // The trace is Chrome's JSON, the ops among its events; no temporary left behind.
  std::ifstream in(trace);
  ASSERT_TRUE(in.good());
  const auto json = nlohmann::json::parse(in);
  bool has_gemm = false;
  for (const auto& e : json.at("traceEvents")) has_gemm |= e.value("name", "") == "aten::addmm";
  EXPECT_TRUE(has_gemm);
  EXPECT_FALSE(std::filesystem::exists(trace + ".tmp"));
}

}  // namespace
