// Shared gating on hand-computed cases: top-k, weights, renormalisation, sigmoid, capacity,
// load-balancing loss and z-loss.
#include <gtest/gtest.h>

#include <cmath>

#include "routers/gating.h"

using namespace switchyard;

namespace {
GatingOptions options(int64_t E, int64_t k) {
  GatingOptions o;
  o.num_experts = E;
  o.top_k = k;
  o.aux_loss_coef = 0.01;
  o.z_loss_coef = 0.001;
  return o;
}
torch::Tensor tensor2d(std::vector<double> v, int64_t rows) {
  return torch::tensor(v, torch::kDouble).view({rows, -1});
}
}  // namespace

TEST(Gating, TopKSoftmaxWeightsByHand) {
  // Row 0 softmax of (2, 1, 0, -1); row 1 of (0, 0, 3, 0).
  auto logits = tensor2d({2, 1, 0, -1, 0, 0, 3, 0}, 2);
  Routing r = gate(logits, options(4, 2));
  const double z0 = std::exp(2) + std::exp(1) + 1 + std::exp(-1);
  const double z1 = 3 + std::exp(3);
  EXPECT_EQ(r.topk_ids[0][0].item<int64_t>(), 0);
  EXPECT_EQ(r.topk_ids[0][1].item<int64_t>(), 1);
  EXPECT_EQ(r.topk_ids[1][0].item<int64_t>(), 2);
  EXPECT_NEAR(r.topk_weights[0][0].item<double>(), std::exp(2) / z0, 1e-12);
  EXPECT_NEAR(r.topk_weights[0][1].item<double>(), std::exp(1) / z0, 1e-12);
  EXPECT_NEAR(r.topk_weights[1][0].item<double>(), std::exp(3) / z1, 1e-12);
  EXPECT_NEAR(r.topk_weights[1][1].item<double>(), 1 / z1, 1e-12);  // one of the tied zeros
  EXPECT_FALSE(r.dropped.any().item<bool>());
}

TEST(Gating, NormTopKProbRenormalisesToOne) {
  auto logits = tensor2d({2, 1, 0, -1}, 1);
  auto o = options(4, 2);
  o.norm_topk_prob = true;
  Routing r = gate(logits, o);
  EXPECT_NEAR(r.topk_weights.sum().item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(r.topk_weights[0][0].item<double>(), std::exp(2) / (std::exp(2) + std::exp(1)),
              1e-12);
}

TEST(Gating, SigmoidScores) {
  auto logits = tensor2d({0.5, -1, 2}, 1);
  auto o = options(3, 2);
  o.score_function = config::SIGMOID;
  Routing r = gate(logits, o);
  EXPECT_EQ(r.topk_ids[0][0].item<int64_t>(), 2);
  EXPECT_EQ(r.topk_ids[0][1].item<int64_t>(), 0);
  EXPECT_NEAR(r.topk_weights[0][0].item<double>(), 1 / (1 + std::exp(-2.0)), 1e-12);
  EXPECT_NEAR(r.topk_weights[0][1].item<double>(), 1 / (1 + std::exp(-0.5)), 1e-12);
}

TEST(Gating, ReducedPrecisionLogitsScoreInFp32) {
  auto logits = torch::randn({5, 8}).to(torch::kBFloat16);
  Routing r = gate(logits, options(8, 2));
  EXPECT_EQ(r.scores.scalar_type(), torch::kFloat);
  EXPECT_EQ(r.topk_weights.scalar_type(), torch::kFloat);
}

TEST(Gating, CapacityDropsLaterTokensSlotMajor) {
  // 4 tokens, 2 experts, top-1, all prefer expert 0; capacity = ceil(1.0 * 4 * 1 / 2) = 2.
  auto logits = tensor2d({1, 0, 1, 0, 1, 0, 1, 0}, 4);
  auto o = options(2, 1);
  o.capacity_factor = 1.0;
  EXPECT_EQ(expert_capacity(4, o), 2);
  Routing r = gate(logits, o);
  EXPECT_TRUE(torch::equal(r.dropped.view({-1}), torch::tensor({false, false, true, true})));
  EXPECT_EQ(r.topk_weights[2][0].item<double>(), 0.0);
  EXPECT_GT(r.topk_weights[0][0].item<double>(), 0.0);

  // Slot-major priority: second choices queue behind every first choice.
  // ids: t0 -> (0, 1), t1 -> (1, 0); capacity 1 per expert.
  auto ids = torch::tensor({0, 1, 1, 0}, torch::kLong).view({2, 2});
  auto dropped = capacity_drop_mask(ids, 2, 1);
  EXPECT_TRUE(torch::equal(dropped, torch::tensor({false, true, false, true}).view({2, 2})));
}

TEST(Gating, DroplessByDefault) {
  auto logits = tensor2d({1, 0, 1, 0, 1, 0}, 3);
  Routing r = gate(logits, options(2, 1));
  EXPECT_FALSE(r.dropped.any().item<bool>());
  EXPECT_EQ(expert_capacity(3, options(2, 1)), -1);
}

TEST(Gating, LoadBalancingLossByHand) {
  // probs (.75, .25) for both tokens: f = (1, 0), P = (.75, .25) -> 2 * .75 = 1.5
  auto same = tensor2d({std::log(3.0), 0, std::log(3.0), 0}, 2);
  EXPECT_NEAR(gate(same, options(2, 1)).aux_loss.item<double>(), 1.5, 1e-12);
  // mirrored tokens: f = (.5, .5), P = (.5, .5) -> 2 * (.25 + .25) = 1 (perfect balance)
  auto mirrored = tensor2d({std::log(3.0), 0, 0, std::log(3.0)}, 2);
  EXPECT_NEAR(gate(mirrored, options(2, 1)).aux_loss.item<double>(), 1.0, 1e-12);
  // top-2 of 3: every expert counted per selection, f sums to k.
  auto probs = tensor2d({0.5, 0.3, 0.2}, 1);
  auto ids = torch::tensor({0, 1}, torch::kLong).view({1, 2});
  EXPECT_NEAR(load_balancing_loss(probs, ids, 3).item<double>(), 3 * (0.5 + 0.3), 1e-12);
}

TEST(Gating, ZLossByHandAndCombinedLoss) {
  auto logits = tensor2d({0, 0, std::log(3.0), 0}, 2);  // logsumexp = ln 2 and ln 4
  auto o = options(2, 1);
  Routing r = gate(logits, o);
  const double z = (std::pow(std::log(2.0), 2) + std::pow(std::log(4.0), 2)) / 2;
  EXPECT_NEAR(r.z_loss.item<double>(), z, 1e-12);
  EXPECT_NEAR(r.loss.item<double>(), 0.01 * r.aux_loss.item<double>() + 0.001 * z, 1e-12);
}

TEST(Gating, EmptyBatch) {
  Routing r = gate(torch::zeros({0, 4}), options(4, 2));
  EXPECT_EQ(r.topk_ids.size(0), 0);
  EXPECT_EQ(r.aux_loss.item<double>(), 0.0);
  EXPECT_EQ(r.z_loss.item<double>(), 0.0);
}

TEST(Gating, RejectsBadShapes) {
  EXPECT_THROW(gate(torch::zeros({3, 5}), options(4, 2)), c10::Error);
  EXPECT_THROW(gate(torch::zeros({3, 4}), options(4, 5)), c10::Error);
}

TEST(Gating, ExpertBiasChoosesAndUnbiasedScoresWeigh) {
  // softmax(2, 1, 0, -1) = (.644, .237, .087, .032); a bias of .6 on expert 2 lifts it above
  // expert 1 for the choice, while its weight stays its own score.
  auto logits = tensor2d({2, 1, 0, -1}, 1).requires_grad_();
  auto bias = torch::tensor({0.0, 0.0, 0.6, 0.0}, torch::kFloat);
  Routing r = gate(logits, options(4, 2), bias);
  const double z = std::exp(2) + std::exp(1) + 1 + std::exp(-1);
  EXPECT_EQ(r.topk_ids[0][0].item<int64_t>(), 2);  // .087 + .6 = .687 > .644
  EXPECT_EQ(r.topk_ids[0][1].item<int64_t>(), 0);
  EXPECT_NEAR(r.topk_weights[0][0].item<double>(), 1 / z, 1e-12);
  EXPECT_NEAR(r.topk_weights[0][1].item<double>(), std::exp(2) / z, 1e-12);
  // The weights still carry the router's gradient; the bias none (it is not a parameter).
  r.topk_weights.sum().backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0.0);
  // The losses see the unbiased scores: the same as without a bias for the same choice.
  EXPECT_NEAR(r.z_loss.item<double>(), gate(logits, options(4, 2)).z_loss.item<double>(), 1e-15);
  // A zero bias chooses what no bias chooses.
  auto random = torch::randn({50, 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(gate(random, options(8, 2), torch::zeros({8})).topk_ids,
                           gate(random, options(8, 2)).topk_ids));
  EXPECT_THROW(gate(logits, options(4, 2), torch::zeros({5})), c10::Error);
}

TEST(Gating, CapacityOverABatchFollowsTheSlotMajorRule) {
  // Without a group, the batch version is the plain rule with ceil(cf * T * k / E).
  torch::manual_seed(3);
  for (double cf : {0.5, 0.8, 1.25}) {
    auto ids = torch::randint(0, 4, {37, 2}, torch::kLong);
    auto o = options(4, 2);
    o.capacity_factor = cf;
    EXPECT_TRUE(torch::equal(capacity_drop_mask(ids, o),
                             capacity_drop_mask(ids, 4, expert_capacity(37, o))))
        << "capacity_factor " << cf;
  }
  auto o = options(4, 2);
  EXPECT_FALSE(capacity_drop_mask(torch::zeros({5, 2}, torch::kLong), o).any().item<bool>());
  o.capacity_factor = 1.0;
  EXPECT_EQ(capacity_drop_mask(torch::zeros({0, 2}, torch::kLong), o).size(0), 0);
}
