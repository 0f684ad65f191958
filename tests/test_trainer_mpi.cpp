// Training is invariant to the expert-parallel size: the first steps' losses under mpirun, for
// every EP that divides the world (EP only, and EP x DP), equal a single-process run of the same
// global batch in one forward to 1e-5 — with the routers alone training, and with every
// parameter, and with load-balancing and z losses strong enough to matter (the balancing loss
// counts experts over the world, so it is the global batch's).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "models/qwen2_moe.h"
#include "parallel/placement.h"
#include "routers/gating.h"
#include "tests/test_support.h"
#include "trainer/live_placement.h"
#include "trainer/trainer.h"
#include "trainer/weight_init.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

config::RouterConfig strong_router_losses() {
  config::RouterConfig router;
  router.set_aux_loss_coef(0.05f);
  router.set_z_loss_coef(0.01f);
  return router;
}

// The per-step losses of training on `steps`; with `biases`, also every MoE layer's expert bias
// after the last step.
std::vector<double> losses(const std::string& dir, ProcessGroups groups, bool routers_only,
                           const std::vector<std::vector<torch::Tensor>>& steps,
                           const config::RouterConfig& router = strong_router_losses(),
                           std::vector<torch::Tensor>* biases = nullptr,
                           PlacementPtr placement = nullptr, bool recompute_layers = false) {
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  cfg.dtype = torch::kFloat;
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, groups)
                                .router(router)
                                .placement(placement)
                                .recompute_layers(recompute_layers));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  model->to(torch::kFloat);
  config::TrainConfig t;
  t.set_routers_only(routers_only);
  t.set_learning_rate(5e-3);
  t.set_steps(int(steps.size()));
  Trainer trainer(TaskModel::causal_lm(model), groups, t);
  std::vector<double> out;
  for (const auto& micro : steps) {
    std::vector<TaskBatch> batches;
    for (const auto& block : micro) batches.push_back(causal_lm_batch(block));
    out.push_back(trainer.step(batches).loss);
  }
  const TaskModel task = TaskModel::causal_lm(model);
  if (biases)
    for (const auto& moe : task.moe_blocks()) biases->push_back(moe->router->expert_bias().clone());
  return out;
}

// One global batch of R blocks (two sequences each), `n` steps on it; rank r trains on block r.
// The reference, one process, takes the whole global batch (rank order) in one forward.
struct SplitBatches {
  std::vector<std::vector<torch::Tensor>> all, mine;
};
// The reference Qwen2-MoE (SWITCHYARD_REF_DIR/qwen2_moe/base); "" when the variable is unset.
std::string reference_qwen() {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  return refs ? std::string(refs) + "/qwen2_moe/base" : "";
}

// Every EP size from `first` up that divides the world and the model in `dir`'s experts.
std::vector<int> ep_sizes(const std::string& dir, int first = 1) {
  const int R = world()->size();
  const int64_t num_experts = Qwen2MoeConfig::from_file(dir + "/config.json").num_experts;
  std::vector<int> out;
  for (int ep = first; ep <= R; ++ep)
    if (R % ep == 0 && num_experts % ep == 0) out.push_back(ep);
  return out;
}

SplitBatches split_batches(int n) {
  const int R = world()->size(), r = world()->rank();
  torch::manual_seed(11);
  const std::vector<torch::Tensor> global(size_t(n),
                                          torch::randint(0, 96, {R, 2, 9}, torch::kLong));
  SplitBatches b;
  for (const auto& g : global) {
    b.all.push_back({g.reshape({-1, g.size(2)})});
    b.mine.push_back({g[r]});
  }
  return b;
}

TEST(TrainerExpertParallel, LossesEqualTheSingleProcessRunForEveryEpSize) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const int R = world()->size();
  const SplitBatches batches = split_batches(5);  // five steps on one batch: the loss must fall
  for (bool routers_only : {true, false}) {
    const auto expected = losses(dir, single_process_groups(), routers_only, batches.all);
    for (int ep : ep_sizes(dir)) {
      SCOPED_TRACE("EP " + std::to_string(ep) + " x DP " + std::to_string(R / ep) +
                   (routers_only ? ", routers only" : ", all parameters"));
      const auto got = losses(dir, make_process_groups(world(), ep), routers_only, batches.mine);
      for (size_t s = 0; s < got.size(); ++s)
        EXPECT_NEAR(got[s], expected[s], 1e-5) << "step " << s;
      if (!routers_only) EXPECT_LT(got.back(), got.front());  // and it trains
    }
  }
}

// Recomputing each layer in backward runs its collectives again (the balancing loss's count
// all-reduce, the dispatch's count exchange and both all-to-alls), in the same order on every
// rank: the losses stay the single-process ones (no recomputation) at every EP size, with the
// routers alone training (the first layer's input then needs no gradient) and with everything.
TEST(TrainerExpertParallel, RecomputedLayersGiveTheSingleProcessLosses) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const SplitBatches batches = split_batches(3);
  for (bool routers_only : {true, false}) {
    const auto expected = losses(dir, single_process_groups(), routers_only, batches.all);
    for (int ep : ep_sizes(dir)) {
      SCOPED_TRACE("EP " + std::to_string(ep) + (routers_only ? ", routers only" : ", all"));
      const auto got = losses(dir, make_process_groups(world(), ep), routers_only, batches.mine,
                              strong_router_losses(), nullptr, nullptr, /*recompute_layers=*/true);
      for (size_t s = 0; s < got.size(); ++s)
        EXPECT_NEAR(got[s], expected[s], 1e-5) << "step " << s;
    }
  }
}

// Pretraining from scratch starts from the same model at every EP size: each rank's experts are
// its slice of what a single process draws.
TEST(TrainerExpertParallel, InitialisationForPretrainingIsTheSameAtEveryEpSize) {
  const int R = world()->size();
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.dtype = torch::kFloat;
  Qwen2MoeForCausalLM whole(Qwen2MoeOptions(cfg, single_process_groups()));
  init_for_pretraining(TaskModel::causal_lm(whole), single_process_groups(), 0.02, 5);
  const auto reference = whole->named_parameters();
  for (int ep = 2; ep <= R; ++ep) {
    if (R % ep || cfg.num_experts % ep) continue;
    auto groups = make_process_groups(world(), ep);
    Qwen2MoeForCausalLM sharded(Qwen2MoeOptions(cfg, groups));
    init_for_pretraining(TaskModel::causal_lm(sharded), groups, 0.02, 5);
    int sliced = 0;
    for (const auto& p : sharded->named_parameters()) {
      auto expected = reference[p.key()];
      if (expected.size(0) != p.value().size(0)) {  // an expert tensor, [E / EP, ...] here
        expected = expected.narrow(0, groups.ep_rank() * p.value().size(0), p.value().size(0));
        ++sliced;
      }
      EXPECT_TRUE(torch::equal(p.value(), expected)) << "EP " << ep << ": " << p.key();
    }
    EXPECT_GT(sliced, 0);
  }
}

}  // namespace

namespace {

// Aux-loss-free balancing moves the biases by the global batch's loads: at every EP size (and
// EP x DP) the biases equal the single process's exactly and the losses to 1e-6, with and
// without the balancing loss, while the routers train.
TEST(TrainerExpertParallel, ExpertBiasesAndLossesEqualTheSingleProcessRunForEveryEpSize) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const int R = world()->size();
  const SplitBatches batches = split_batches(5);
  for (float aux : {0.0f, 0.05f}) {
    config::RouterConfig router;
    router.set_aux_loss_coef(aux);
    router.mutable_expert_bias()->set_update_rate(0.01f);
    std::vector<torch::Tensor> expected_bias;
    const auto expected =
        losses(dir, single_process_groups(), true, batches.all, router, &expected_bias);
    ASSERT_FALSE(expected_bias.empty());
    // The biases moved (some experts above the mean load, some below) ...
    EXPECT_GT(expected_bias.front().abs().max().item<double>(), 0.0);
    for (int ep : ep_sizes(dir)) {
      SCOPED_TRACE("EP " + std::to_string(ep) + " x DP " + std::to_string(R / ep) +
                   ", aux_loss_coef " + std::to_string(aux));
      std::vector<torch::Tensor> bias;
      const auto got =
          losses(dir, make_process_groups(world(), ep), true, batches.mine, router, &bias);
      for (size_t s = 0; s < got.size(); ++s)
        EXPECT_NEAR(got[s], expected[s], 1e-6) << "step " << s;
      ASSERT_EQ(bias.size(), expected_bias.size());
      for (size_t l = 0; l < bias.size(); ++l)  // ... and identically at every split
        EXPECT_TRUE(torch::equal(bias[l], expected_bias[l])) << "layer " << l;
    }
  }
}

// Capacity counts the global batch, and which assignments drop does not depend on the split:
// each rank's mask is its slice of the mask one process computes on the concatenated batch —
// for uneven shares, one of them empty.
TEST(GlobalCapacity, EveryRankDropsItsSliceOfTheSingleProcessDrops) {
  const int R = world()->size(), r = world()->rank();
  torch::manual_seed(21);
  std::vector<int64_t> share(static_cast<size_t>(R), 0);
  for (int i = 0; i < R; ++i) share[size_t(i)] = i == 1 ? 0 : 5 + 3 * i;  // rank 1: no tokens
  const int64_t total = std::accumulate(share.begin(), share.end(), int64_t(0));
  const int64_t first = std::accumulate(share.begin(), share.begin() + r, int64_t(0));
  // Skewed choices (expert 0 most popular), so that every capacity factor drops some.
  auto logits = torch::randn({total, 6}) + torch::tensor({2.0f, 1.0f, 0.f, 0.f, 0.f, 0.f});
  for (double cf : {0.5, 1.0, 1.5}) {
    GatingOptions whole;
    whole.num_experts = 6;
    whole.top_k = 2;
    whole.capacity_factor = cf;
    const Routing reference = gate(logits, whole);
    if (cf < 1.5) EXPECT_TRUE(reference.dropped.any().item<bool>()) << cf;
    GatingOptions mine = whole;
    mine.balance_group = world();
    const Routing got = gate(logits.narrow(0, first, share[size_t(r)]), mine);
    EXPECT_TRUE(torch::equal(got.dropped, reference.dropped.narrow(0, first, share[size_t(r)])))
        << "capacity_factor " << cf << ", rank " << r;
    EXPECT_TRUE(
        torch::equal(got.topk_weights, reference.topk_weights.narrow(0, first, share[size_t(r)])));
  }
}

// With capacity, training at every EP size drops what the single process drops: the same losses.
TEST(TrainerExpertParallel, LossesWithCapacityEqualTheSingleProcessRunForEveryEpSize) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const int R = world()->size();
  const SplitBatches batches = split_batches(3);
  config::RouterConfig router = strong_router_losses();
  router.set_capacity_factor(0.75f);
  const auto expected = losses(dir, single_process_groups(), false, batches.all, router);
  for (int ep : ep_sizes(dir)) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " x DP " + std::to_string(R / ep));
    const auto got = losses(dir, make_process_groups(world(), ep), false, batches.mine, router);
    for (size_t s = 0; s < got.size(); ++s) EXPECT_NEAR(got[s], expected[s], 1e-5) << "step " << s;
  }
}

}  // namespace

namespace {

// A placement of every MoE layer of the model in `dir` for EP `ep`: the contiguous split with
// the ranks' blocks reversed, or (replicas) balanced_layer on a load where one expert per layer
// is hot, with one extra slot per rank.
PlacementPtr test_placement(const std::string& dir, int ep, bool replicas) {
  const auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  int64_t layers = 0;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) layers += cfg.is_moe_layer(i) ? 1 : 0;
  Placement p = Placement::contiguous(layers, cfg.num_experts, ep);
  for (int64_t l = 0; l < layers; ++l) {
    auto& slots = p.layers[size_t(l)].slots;
    if (!replicas) {
      std::reverse(slots.begin(), slots.end());
      continue;
    }
    std::vector<double> load(size_t(cfg.num_experts), 1.0);
    load[size_t(l % cfg.num_experts)] = 50;
    p.layers[size_t(l)] = balanced_layer(load, ep, ep);
  }
  p.slots_per_rank = int64_t(p.layers.front().slots.front().size());
  return std::make_shared<const Placement>(p);
}

// Any placement computes the same model: at every EP size, experts moved between ranks and hot
// experts replicated on every rank give the single process's losses to 1e-5, every parameter
// training (a replicated expert's copies sum their gradients over the ranks holding them).
TEST(TrainerExpertParallel, AnyPlacementGivesTheSingleProcessLosses) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const int R = world()->size();
  const SplitBatches batches = split_batches(3);
  const auto expected = losses(dir, single_process_groups(), false, batches.all);
  for (bool replicas : {false, true}) {
    for (int ep : ep_sizes(dir, 2)) {
      SCOPED_TRACE("EP " + std::to_string(ep) + (replicas ? ", replicated" : ", moved"));
      const auto got = losses(dir, make_process_groups(world(), ep), false, batches.mine,
                              strong_router_losses(), nullptr, test_placement(dir, ep, replicas));
      for (size_t s = 0; s < got.size(); ++s)
        EXPECT_NEAR(got[s], expected[s], 1e-5) << "step " << s;
    }
  }
}

}  // namespace

namespace {

// A model trained on `steps` with a re-placement after every step (when `live`): its trainer,
// the per-step losses and the slots the re-placements changed.
struct LiveRun {
  std::unique_ptr<Trainer> trainer;
  std::vector<double> losses;
  int64_t slots_changed = 0;
};

LiveRun train_live(const std::string& dir, const ProcessGroups& groups,
                   const std::vector<std::vector<torch::Tensor>>& steps, PlacementPtr placement,
                   bool live) {
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  cfg.dtype = torch::kFloat;
  Qwen2MoeForCausalLM model(
      Qwen2MoeOptions(cfg, groups).router(strong_router_losses()).placement(placement));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  model->to(torch::kFloat);
  config::TrainConfig t;
  t.set_routers_only(false);  // experts train: their AdamW moments must move with them
  t.set_learning_rate(5e-3);
  t.set_steps(int(steps.size()));
  LiveRun run;
  run.trainer = std::make_unique<Trainer>(TaskModel::causal_lm(model), groups, t);
  // Every step re-places, and any gain counts: as many moves as the loads allow.
  LivePlacement replacer(1, 0.0, *run.trainer, groups);
  for (const auto& micro : steps) {
    std::vector<TaskBatch> batches;
    for (const auto& block : micro) batches.push_back(causal_lm_batch(block));
    const StepMetrics m = run.trainer->step(batches);
    run.losses.push_back(m.loss);
    replacer.record(m);
    if (!live) continue;
    for (const auto& layer : replacer.rebalance(*run.trainer, m.step).layers)
      run.slots_changed += layer.slots_changed;
  }
  return run;
}

}  // namespace

// Live re-placement computes the same model: at EP 2 and 4, from the contiguous split and from a
// placement with replicas, experts re-placed after every step give the single process's losses,
// and every slot's weights and AdamW moments are those of its expert in the single process.
TEST(TrainerExpertParallel, LiveReplacementMovesWeightsAndMomentsWithTheirExperts) {
  const std::string dir = reference_qwen();
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const SplitBatches batches = split_batches(4);
  const LiveRun ref = train_live(dir, single_process_groups(), batches.all, nullptr, false);
  const auto ref_blocks = ref.trainer->model().moe_blocks();
  for (bool replicas : {false, true}) {
    for (int ep : ep_sizes(dir, 2)) {
      SCOPED_TRACE("EP " + std::to_string(ep) + (replicas ? ", replicas" : ", contiguous start"));
      const ProcessGroups groups = make_process_groups(world(), ep);
      const LiveRun got = train_live(dir, groups, batches.mine,
                                     replicas ? test_placement(dir, ep, true) : nullptr, true);
      EXPECT_GT(got.slots_changed, 0);  // the loads did move experts
      for (size_t s = 0; s < got.losses.size(); ++s)
        EXPECT_NEAR(got.losses[s], ref.losses[s], 1e-5) << "step " << s;
      const auto blocks = got.trainer->model().moe_blocks();
      for (size_t l = 0; l < blocks.size(); ++l) {
        const auto& held = blocks[l]->dispatcher().local_experts();
        const auto mine = blocks[l]->expert_parameters();
        const auto theirs = ref_blocks[l]->expert_parameters();
        for (size_t i = 0; i < mine.size(); ++i) {
          const auto rows = torch::tensor(held, torch::kLong);
          const auto want = theirs[i].detach().index_select(0, rows);
          // AdamW divides by sqrt(v): where v is ~1e-9, the 1e-3 relative differences that the
          // reduction order leaves in the moments move a weight by ~lr * 1e-3 per step, so
          // weights match to 1e-4 absolute. A row of the wrong expert is off by far more (the
          // check below makes sure rows differ by at least 1e-3).
          EXPECT_TRUE(torch::allclose(mine[i].detach(), want, 0, 1e-4))
              << "layer " << l << ": max |diff| "
              << (mine[i].detach() - want).abs().max().item<double>();
          if (want.size(0) > 1)
            EXPECT_GT((want - want.roll(1, 0)).abs().max().item<double>(), 1e-3);
          const auto m = got.trainer->optimizer().moments(mine[i]);
          const auto r = ref.trainer->optimizer().moments(theirs[i]);
          ASSERT_EQ(m.size(), 2u);
          // Relative 1e-3 as for the weights, and where a moment is a sum that cancels to near
          // zero, 1e-5 of the largest moment: the reduction order leaves ~1e-6 of it there
          // (measured 2.5e-9 against 2.4e-3), a wrong expert's moments differ by their scale.
          for (size_t k = 0; k < 2; ++k) {
            const auto want_k = r[k].index_select(0, rows);
            const double atol = 1e-5 * r[k].abs().max().item<double>();
            EXPECT_TRUE(torch::allclose(m[k], want_k, 1e-3, atol))
                << "layer " << l << ", moment " << k << ": max |diff| "
                << (m[k] - want_k).abs().max().item<double>() << ", atol " << atol;
          }
        }
      }
    }
  }
}
