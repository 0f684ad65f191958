// Reference values produced by the pinned Hugging Face transformers (scripts/*.py, run by CTest
// as a fixture that sets SWITCHYARD_REF_DIR). Skipped when run outside CTest.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "routers/gating.h"

using namespace switchyard;
namespace fs = std::filesystem;

TEST(HfReference, AuxLossMatchesTransformersLoadBalancingLossFunc) {
  const char* dir = std::getenv("SWITCHYARD_REF_DIR");
  if (!dir) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set (run through ctest)";
  int cases = 0;
  for (int i = 0;; ++i) {
    fs::path path = fs::path(dir) / "aux_loss" / ("case_" + std::to_string(i) + ".bin");
    if (!fs::exists(path)) break;
    std::ifstream in(path, std::ios::binary);
    int64_t dims[3];
    double expected;
    in.read(reinterpret_cast<char*>(dims), sizeof dims);
    in.read(reinterpret_cast<char*>(&expected), sizeof expected);
    const int64_t T = dims[0], E = dims[1], k = dims[2];
    auto logits = torch::empty({T, E}, torch::kFloat);
    in.read(reinterpret_cast<char*>(logits.data_ptr<float>()), T * E * sizeof(float));
    ASSERT_TRUE(in.good()) << path;

    GatingOptions o;
    o.num_experts = E;
    o.top_k = k;
    const double ours = gate(logits, o).aux_loss.item<double>();
    EXPECT_NEAR(ours, expected, 1e-6 * std::max(1.0, std::abs(expected)))
        << path << " T=" << T << " E=" << E << " k=" << k;
    ++cases;
  }
  EXPECT_GE(cases, 5) << "reference cases missing under " << dir;
}
