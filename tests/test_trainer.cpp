// The trainer's pieces in one process: AdamW against LibTorch's own, the learning-rate
// schedule, router fine-tuning leaving every other parameter bitwise unchanged, and training
// actually lowering the loss.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "models/qwen2_moe.h"
#include "trainer/adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/trainer.h"

using namespace switchyard;

namespace {

TEST(AdamW, MatchesLibTorchAdamWWithDecayOnMatricesOnly) {
  torch::manual_seed(0);
  auto w = torch::randn({4, 3}, torch::requires_grad()), b = torch::randn({4}, torch::requires_grad());
  auto w_ref = w.detach().clone().requires_grad_(true), b_ref = b.detach().clone().requires_grad_(true);
  AdamW ours({{"w", w}, {"b", b}}, AdamWOptions().beta1(0.8).beta2(0.9).eps(1e-6).weight_decay(0.1));
  // LibTorch's AdamW decays every parameter of a group: bias in a group without decay.
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w_ref},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(0.05).betas({0.8, 0.9}).eps(1e-6).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{b_ref},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(0.05).betas({0.8, 0.9}).eps(1e-6).weight_decay(0)));
  torch::optim::AdamW theirs(std::move(groups));
  auto x = torch::randn({5, 3});
  for (int step = 0; step < 4; ++step) {
    (x.matmul(w.t()) + b).square().sum().backward();
    (x.matmul(w_ref.t()) + b_ref).square().sum().backward();
    ours.step(0.05);
    theirs.step();
    ours.zero_grad();
    theirs.zero_grad();
  }
  EXPECT_TRUE(torch::allclose(w, w_ref, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(b, b_ref, 1e-6, 1e-6));
  EXPECT_EQ(ours.steps(), 4);
  // State round trip, and a clear error for a missing entry.
  AdamW again({{"w", w}, {"b", b}}, AdamWOptions());
  again.load_state(ours.state());
  EXPECT_EQ(again.steps(), 4);
  EXPECT_THROW(again.load_state({{"step", torch::tensor(int64_t(1))}}), Error);
}

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  config::TrainConfig t;
  t.set_learning_rate(1.0);
  t.set_warmup_steps(4);
  t.set_steps(104);
  t.set_min_lr_ratio(0.1);
  // min_lr_ratio is a float field: 0.1 to float precision.
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate_at(t, 4), 1.0);
  EXPECT_NEAR(learning_rate_at(t, 54), 0.55, 1e-7);  // half way: the mean of peak and floor
  EXPECT_NEAR(learning_rate_at(t, 104), 0.1, 1e-7);
  EXPECT_NEAR(learning_rate_at(t, 500), 0.1, 1e-7);
}

Qwen2MoeForCausalLM tiny_model() {
  torch::manual_seed(7);
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.dtype = torch::kFloat;
  return Qwen2MoeForCausalLM(Qwen2MoeOptions(cfg, single_process_groups()));
}

TEST(Trainer, RouterFineTuningLeavesEveryOtherParameterBitwiseUnchanged) {
  auto model = tiny_model();
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  config::TrainConfig t;
  t.set_learning_rate(1e-2);
  t.set_steps(3);
  Trainer trainer(model, single_process_groups(), t);
  for (const auto& [name, p] : trainer.trainable())
    EXPECT_NE(name.find("router"), std::string::npos) << name << " is trainable";
  auto tokens = torch::randint(0, 512, {2, 17}, torch::kLong);
  for (int i = 0; i < 3; ++i) trainer.step({tokens});
  int changed = 0;
  for (const auto& p : model->named_parameters()) {
    const bool same = torch::equal(p.value(), before[p.key()]);
    if (p.key().find("router") != std::string::npos) changed += !same;
    else EXPECT_TRUE(same) << p.key() << " moved";
  }
  EXPECT_EQ(changed, int(trainer.trainable().size()));
}

TEST(Trainer, FullTrainingOverfitsOneBatch) {
  auto model = tiny_model();
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_learning_rate(3e-3);
  t.set_steps(30);
  Trainer trainer(model, single_process_groups(), t);
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  const StepMetrics first = trainer.step({tokens.narrow(0, 0, 2), tokens.narrow(0, 2, 2)});
  StepMetrics last;
  for (int i = 1; i < 30; ++i) last = trainer.step({tokens.narrow(0, 0, 2), tokens.narrow(0, 2, 2)});
  EXPECT_EQ(last.step, 30);
  EXPECT_EQ(last.tokens, 4 * 32);
  EXPECT_LT(last.lm_loss, 0.5 * first.lm_loss) << first.lm_loss << " -> " << last.lm_loss;
  EXPECT_GT(first.grad_norm, 0);
  ASSERT_EQ(last.layer_stats.size(), 2u);  // both tiny layers are MoE
  EXPECT_EQ(last.tokens_per_local_expert[0].size(), 8u);
}

}  // namespace
