// The trainer's pieces in one process: AdamW against LibTorch's own, the learning-rate
// schedule, router fine-tuning leaving every other parameter bitwise unchanged, training
// actually lowering the loss, router distillation, and initialisation for pretraining.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "common/host_reads.h"
#include "common/phase_clock.h"
#include "models/qwen2_moe.h"
#include "trainer/adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/trainer.h"
#include "trainer/weight_init.h"

using namespace switchyard;

namespace {

TEST(AdamW, MatchesLibTorchAdamWWithDecayOnMatricesOnly) {
  torch::manual_seed(0);
  auto w = torch::randn({4, 3}, torch::requires_grad()),
       b = torch::randn({4}, torch::requires_grad());
  auto w_ref = w.detach().clone().requires_grad_(true),
       b_ref = b.detach().clone().requires_grad_(true);
  AdamW ours({{"w", w}, {"b", b}},
             AdamWOptions().beta1(0.8).beta2(0.9).eps(1e-6).weight_decay(0.1));
  // LibTorch's AdamW decays every parameter of a group: bias in a group without decay.
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{w_ref},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(0.05).betas({0.8, 0.9}).eps(1e-6).weight_decay(0.1)));
  groups.emplace_back(
      std::vector<torch::Tensor>{b_ref},
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

Qwen2MoeForCausalLM tiny_model(config::RouterConfig router = {}) {
  torch::manual_seed(7);
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.dtype = torch::kFloat;
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()).router(router));
  init_for_pretraining(TaskModel::causal_lm(model), single_process_groups(), 0.05, 7);
  return model;
}

TEST(Trainer, RouterFineTuningLeavesEveryOtherParameterBitwiseUnchanged) {
  auto model = tiny_model();
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  config::TrainConfig t;
  t.set_learning_rate(1e-2);
  t.set_steps(3);
  Trainer trainer(TaskModel::causal_lm(model), single_process_groups(), t);
  for (const auto& [name, p] : trainer.trainable())
    EXPECT_NE(name.find("router"), std::string::npos) << name << " is trainable";
  auto tokens = torch::randint(0, 512, {2, 17}, torch::kLong);
  for (int i = 0; i < 3; ++i) trainer.step({causal_lm_batch(tokens)});
  int changed = 0;
  for (const auto& p : model->named_parameters()) {
    const bool same = torch::equal(p.value(), before[p.key()]);
    if (p.key().find("router") != std::string::npos)
      changed += !same;
    else
      EXPECT_TRUE(same) << p.key() << " moved";
  }
  EXPECT_EQ(changed, int(trainer.trainable().size()));
}

TEST(Trainer, FullTrainingOverfitsOneBatch) {
  auto model = tiny_model();
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_learning_rate(3e-3);
  t.set_steps(30);
  Trainer trainer(TaskModel::causal_lm(model), single_process_groups(), t);
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  const StepMetrics first = trainer.step(
      {causal_lm_batch(tokens.narrow(0, 0, 2)), causal_lm_batch(tokens.narrow(0, 2, 2))});
  StepMetrics last;
  for (int i = 1; i < 30; ++i)
    last = trainer.step(
        {causal_lm_batch(tokens.narrow(0, 0, 2)), causal_lm_batch(tokens.narrow(0, 2, 2))});
  EXPECT_EQ(last.step, 30);
  EXPECT_EQ(last.tokens, 4 * 32);
  EXPECT_LT(last.task_loss, 0.5 * first.task_loss) << first.task_loss << " -> " << last.task_loss;
  EXPECT_GT(first.grad_norm, 0);
  ASSERT_EQ(last.layer_stats.size(), 2u);  // both tiny layers are MoE
  EXPECT_EQ(last.tokens_per_local_expert[0].size(), 8u);
}

// A step reads to the host once beyond its dispatches (one each per MoE layer and micro-batch):
// losses, token counts, router statistics, the finiteness verdicts and the gradient norm travel
// together after the gradient sync. Its routing statistics still add up.
TEST(Trainer, OneReadToTheHostPerStepBesidesTheDispatches) {
  auto model = tiny_model();
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_steps(2);
  Trainer trainer(TaskModel::causal_lm(model), single_process_groups(), t);
  auto tokens = torch::randint(0, 512, {4, 17}, torch::kLong);
  const std::vector<TaskBatch> micro = {causal_lm_batch(tokens.narrow(0, 0, 2)),
                                        causal_lm_batch(tokens.narrow(0, 2, 2))};
  const int64_t before = host_reads();
  const StepMetrics m = trainer.step(micro);
  EXPECT_EQ(host_reads() - before, 2 /* MoE layers */ * 2 /* micro-batches */ + 1);
  EXPECT_EQ(m.host_reads, host_reads() - before);  // what metrics.jsonl logs
  ASSERT_EQ(m.layer_stats.size(), 2u);
  for (const auto& s : m.layer_stats) {
    int64_t kept = 0;
    for (int64_t c : s.expert_tokens) kept += c;
    EXPECT_EQ(s.num_tokens, 4 * 16);  // each block of 17 feeds its first 16 tokens
    EXPECT_EQ(kept + s.num_dropped, s.num_assignments);
    EXPECT_GT(s.token_entropy, 0);
    EXPECT_LE(s.token_entropy, std::log(8.0) + 1e-9);
  }
  EXPECT_TRUE(std::isfinite(m.loss) && m.grad_norm > 0 && !m.skipped);
  EXPECT_EQ(m.tokens, 4 * 16);
}

// Steps launched without a read (Trainer::launch) and read together (resolve) are the steps
// step() runs one by one, bit for bit, skipped ones included: the non-finite guard, the
// clipping, the schedule's rate and AdamW decide on the device. Three steps, one read beyond
// their dispatches.
TEST(Trainer, LaunchedStepsReadOnceAndEqualStepByStepOnesSkipsIncluded) {
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_steps(6);
  t.set_warmup_steps(2);
  t.set_grad_clip(1e-3);  // the norms are above it: the scale is decided on the device
  t.set_weight_decay(0.1);
  torch::manual_seed(5);
  std::vector<std::vector<TaskBatch>> batches;
  for (int i = 0; i < 5; ++i)
    batches.push_back({causal_lm_batch(torch::randint(0, 512, {2, 17}, torch::kLong))});
  auto one_by_one = tiny_model(), together = tiny_model();
  Trainer a(TaskModel::causal_lm(one_by_one), single_process_groups(), t),
      b(TaskModel::causal_lm(together), single_process_groups(), t);
  // Step 3 gets a NaN weight in layer 0's attention (put back after it): its loss is NaN and
  // the step is skipped.
  auto q_weight = [](Qwen2MoeForCausalLM& model) {
    for (auto& p : model->named_parameters())
      if (p.key().find("layers.0.") != std::string::npos &&
          p.key().find("q_proj.weight") != std::string::npos)
        return p.value();
    throw std::runtime_error("no q_proj weight in layer 0");
  };
  const float kept = q_weight(one_by_one).view(-1)[0].item<float>();
  auto poison = [&](Qwen2MoeForCausalLM& model, bool nan) {
    torch::NoGradGuard no_grad;
    q_weight(model).view(-1)[0] = nan ? std::nanf("") : kept;
  };
  std::vector<StepMetrics> ma;
  for (int i = 0; i < 5; ++i) {
    if (i == 2) poison(one_by_one, true);
    ma.push_back(a.step(batches[size_t(i)]));
    if (i == 2) poison(one_by_one, false);
  }
  const int64_t before = host_reads();
  for (int i = 0; i < 5; ++i) {
    if (i == 2) poison(together, true);
    b.launch(batches[size_t(i)]);
    if (i == 2) poison(together, false);
    EXPECT_EQ(b.projected_steps(), i + 1);
  }
  EXPECT_EQ(b.optimizer().steps(), 0);  // nothing counted before the read
  const std::vector<StepMetrics> mb = b.resolve();
  EXPECT_EQ(host_reads() - before, 5 * 2 /* MoE layers */ + 1);
  ASSERT_EQ(mb.size(), 5u);
  int64_t logged_reads = 0;
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(mb[i].skipped, i == 2);
    EXPECT_EQ(ma[i].skipped, i == 2);
    EXPECT_EQ(mb[i].step, ma[i].step);
    EXPECT_EQ(mb[i].skip_reason, ma[i].skip_reason);
    EXPECT_EQ(mb[i].lr, ma[i].lr);
    EXPECT_EQ(mb[i].tokens, ma[i].tokens);
    if (i != 2) {  // NaN != NaN
      EXPECT_EQ(mb[i].loss, ma[i].loss);
      EXPECT_EQ(mb[i].grad_norm, ma[i].grad_norm);
      EXPECT_GT(mb[i].grad_norm, 1e-3);  // so the clipping scaled
    }
    logged_reads += mb[i].host_reads;
  }
  EXPECT_EQ(logged_reads, host_reads() - before);  // the one read is on the last step's record
  EXPECT_EQ(mb[2].skip_reason.rfind("non-finite loss (", 0), 0u) << mb[2].skip_reason;
  EXPECT_EQ(mb[3].step, 3);  // the skipped step is tried again with the next batch
  EXPECT_EQ(mb[3].lr, ma[3].lr);
  EXPECT_EQ(b.optimizer().steps(), 4);
  const auto pa = one_by_one->named_parameters();
  for (const auto& p : together->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key();
  const auto sa = a.optimizer().state(), sb = b.optimizer().state();
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  // A checkpoint between unread steps would store the wrong step: refused.
  b.launch(batches[0]);
  EXPECT_THROW(b.optimizer().state(), Error);
  EXPECT_THROW(b.step(batches[1]), Error);
  EXPECT_EQ(b.resolve().size(), 1u);
}

// The step-time breakdown (common/phase_clock.h): forward and backward of a tiny model enter
// the phases in the data path's order (backward in reverse, each layer's pieces once it reaches
// them), then the gradient sync and the optimizer; the boundaries change no number.
std::vector<StepPhase> expected_phases(bool routers_only) {
  using P = StepPhase;
  const std::vector<P> forward_layer = {P::kAttention, P::kOther,   P::kRouter,       P::kDispatch,
                                        P::kExperts,   P::kCombine, P::kSharedExpert, P::kOther},
                       backward_layer = {P::kSharedExpert, P::kCombine, P::kExperts,   P::kDispatch,
                                         P::kRouter,       P::kOther,   P::kAttention, P::kOther};
  std::vector<P> seq;
  for (int l = 0; l < 2; ++l) seq.insert(seq.end(), forward_layer.begin(), forward_layer.end());
  seq.push_back(P::kHead);   // LM head, then the loss until backward leaves the head
  seq.push_back(P::kOther);  // the final norm
  seq.insert(seq.end(), backward_layer.begin(), backward_layer.end());  // layer 1
  if (routers_only) {
    // Layer 0's input needs no gradient: backward ends at its router, through the combine's
    // weights; its experts, dispatch and attention have nothing to do.
    seq.insert(seq.end(), {P::kSharedExpert, P::kCombine, P::kRouter});
  } else {
    seq.insert(seq.end(), backward_layer.begin(), backward_layer.end());
  }
  // After backward: the finiteness verdict, the sync, the norm, clipping and AdamW (decided on
  // the device, no read), then the bookkeeping.
  seq.insert(seq.end(), {P::kOther, P::kOptimizer, P::kGradientSync, P::kOptimizer, P::kOther});
  return seq;
}

std::string phase_names(const std::vector<StepPhase>& phases) {
  std::string s;
  for (auto p : phases) s += std::string(s.empty() ? "" : " ") + step_phase_name(p);
  return s;
}

TEST(Trainer, PhaseClockFollowsTheDataPathBothWaysAndChangesNoNumber) {
  for (const bool routers_only : {false, true}) {
    SCOPED_TRACE(routers_only ? "routers only" : "full training");
    auto timed = tiny_model(), plain = tiny_model();
    config::TrainConfig t;
    t.set_routers_only(routers_only);
    t.set_learning_rate(1e-2);
    t.set_steps(2);
    Trainer a(TaskModel::causal_lm(timed), single_process_groups(), t),
        b(TaskModel::causal_lm(plain), single_process_groups(), t);
    auto tokens = torch::randint(0, 512, {2, 17}, torch::kLong);
    for (int step = 0; step < 2; ++step) {
      start_phase_clock(torch::kCPU);
      const StepMetrics ma = a.step({causal_lm_batch(tokens)});
      const PhaseProfile profile = stop_phase_clock();
      const StepMetrics mb = b.step({causal_lm_batch(tokens)});
      EXPECT_EQ(phase_names(profile.entered), phase_names(expected_phases(routers_only)));
      double total = 0;
      for (double s : profile.seconds) {
        EXPECT_GE(s, 0);
        total += s;
      }
      EXPECT_GT(profile.seconds[size_t(StepPhase::kExperts)], 0);
      EXPECT_GT(profile.seconds[size_t(StepPhase::kOptimizer)], 0);
      EXPECT_GT(total, 0);
      EXPECT_EQ(ma.loss, mb.loss);
      EXPECT_EQ(ma.grad_norm, mb.grad_norm);
    }
    const auto pb = plain->named_parameters();
    for (const auto& p : timed->named_parameters())
      EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  }
  // Without a clock, a boundary is the tensor itself: no autograd node.
  auto x = torch::ones({3}, torch::requires_grad());
  auto y = x * 2;
  EXPECT_TRUE(phase_boundary(y, StepPhase::kOther, StepPhase::kHead).is_same(y));
  EXPECT_THROW(stop_phase_clock(), Error);
}

TEST(Trainer, DistillationTeachesANewRouterTheOriginalGate) {
  // Teachers: the Linear gates of a tiny model; student: the same model with MLP routers (its
  // other weights are identical: same seed, and routers other than Linear keep their own init).
  std::vector<torch::Tensor> gates;
  const auto teacher = tiny_model();
  for (const auto& layer : teacher->layers()) gates.push_back(layer->moe->router->gate_weight());
  config::RouterConfig mlp;
  mlp.mutable_mlp()->set_hidden(32);
  auto model = tiny_model(mlp);
  config::TrainConfig t;
  t.set_learning_rate(1e-2);
  t.set_steps(42);
  t.set_distill_steps(40);
  Trainer trainer(TaskModel::causal_lm(model), single_process_groups(), t);
  trainer.set_distillation_teachers(gates);
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  const int64_t before = host_reads();
  const StepMetrics first = trainer.step({causal_lm_batch(tokens)});
  // Distilling reads no more: each dispatch's counts, then the step's one read.
  EXPECT_EQ(host_reads() - before, 2 /* MoE layers */ + 1);
  EXPECT_TRUE(first.distilling);
  EXPECT_DOUBLE_EQ(first.loss, first.distill_kl);
  StepMetrics last;
  for (int i = 1; i < 40; ++i) last = trainer.step({causal_lm_batch(tokens)});
  EXPECT_TRUE(last.distilling);
  EXPECT_LT(last.distill_kl, 0.3 * first.distill_kl)
      << first.distill_kl << " -> " << last.distill_kl;
  EXPECT_GT(last.topk_agreement, first.topk_agreement);
  EXPECT_GT(last.topk_agreement, 0.8);
  // The language-model phase: the routers route again, and its schedule starts with warmup.
  EXPECT_FALSE(trainer.distilling());
  const StepMetrics lm = trainer.step({causal_lm_batch(tokens)});
  EXPECT_FALSE(lm.distilling);
  EXPECT_DOUBLE_EQ(lm.loss, lm.task_loss + lm.router_loss);
  for (const auto& layer : model->layers()) EXPECT_FALSE(layer->moe->distilling());
  // Wrong teacher count: one clear error.
  Trainer again(TaskModel::causal_lm(tiny_model(mlp)), single_process_groups(), t);
  EXPECT_THROW(again.set_distillation_teachers({gates[0]}), Error);
}

TEST(WeightInit, SeededLikeTransformers) {
  auto a = tiny_model(), b = tiny_model();
  Qwen2MoeForCausalLM c = tiny_model();
  init_for_pretraining(TaskModel::causal_lm(c), single_process_groups(), 0.05, 8);
  const auto pb = b->named_parameters(), pc = c->named_parameters();
  for (const auto& p : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
    const bool norm = p.key().find("norm.weight") != std::string::npos;
    if (norm) EXPECT_TRUE(torch::equal(p.value(), torch::ones_like(p.value()))) << p.key();
    if (!norm && p.value().dim() >= 2 && p.value().numel() > 1000) {
      EXPECT_NEAR(p.value().std().item<double>(), 0.05, 0.005) << p.key();
      EXPECT_FALSE(torch::equal(p.value(), pc[p.key()])) << p.key() << " ignores the seed";
    }
  }
}

}  // namespace
