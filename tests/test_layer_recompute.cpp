// recompute_in_backward on its own (models/layer_recompute.h): the same gradients as the plain
// function, forward_is_recomputation() true only inside the second call, and no input gradient
// computed for an input that did not ask for one. The models' tests (test_qwen2_moe.cpp,
// test_trainer_mpi.cpp) check whole layers and ranks.
#include <gtest/gtest.h>

#include <vector>

#include "models/layer_recompute.h"

using namespace switchyard;

namespace {

// One call of fn as the recomputation saw it.
struct Call {
  bool recomputing, flagged, input_requires_grad;
};

}  // namespace

TEST(LayerRecompute, GradientsEqualThePlainFunctionsAndTheFlagMarksOnlyTheSecondCall) {
  torch::manual_seed(5);
  const auto p = torch::randn({4, 3}).requires_grad_(true);
  const auto x0 = torch::randn({2, 4});
  auto layer = [&](const torch::Tensor& x) { return torch::tanh(x.matmul(p)).square().sum(); };
  for (bool input_requires_grad : {false, true}) {
    SCOPED_TRACE(input_requires_grad ? "input requires a gradient" : "frozen input");
    const auto x = x0.clone().requires_grad_(input_requires_grad);
    layer(x).backward();
    const auto plain_p = p.grad().clone();
    const auto plain_x = input_requires_grad ? x.grad().clone() : torch::Tensor();
    p.mutable_grad().reset();
    if (input_requires_grad) x.mutable_grad().reset();

    std::vector<Call> calls;
    auto outs = recompute_in_backward(x, [&](const torch::Tensor& in, bool recomputing) {
      calls.push_back({recomputing, forward_is_recomputation(), in.requires_grad()});
      return std::vector<torch::Tensor>{layer(in), torch::Tensor()};
    });
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_FALSE(outs[1].defined());
    EXPECT_FALSE(forward_is_recomputation());
    outs[0].backward();
    EXPECT_FALSE(forward_is_recomputation());
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_FALSE(calls[0].recomputing);
    EXPECT_FALSE(calls[0].flagged);
    EXPECT_TRUE(calls[1].recomputing);
    EXPECT_TRUE(calls[1].flagged);
    // A frozen input is recomputed as it came: backward computes no gradient for it.
    EXPECT_EQ(calls[1].input_requires_grad, input_requires_grad);
    EXPECT_TRUE(torch::allclose(p.grad(), plain_p, 1e-6, 1e-9));
    if (input_requires_grad) EXPECT_TRUE(torch::allclose(x.grad(), plain_x, 1e-6, 1e-9));
    p.mutable_grad().reset();
  }
}
