// Training is invariant to the expert-parallel size: the first steps' losses under mpirun, for
// every EP that divides the world (EP only, and EP x DP), equal a single-process run of the same
// global batch in one forward to 1e-5 — with the routers alone training, and with every
// parameter, and with load-balancing and z losses strong enough to matter (the balancing loss
// counts experts over the world, so it is the global batch's).
#include <gtest/gtest.h>

#include <cstdlib>

#include "models/qwen2_moe.h"
#include "tests/test_support.h"
#include "trainer/trainer.h"
#include "trainer/weight_init.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

std::vector<double> losses(const std::string& dir, ProcessGroups groups, bool routers_only,
                           const std::vector<std::vector<torch::Tensor>>& steps) {
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  cfg.dtype = torch::kFloat;
  config::RouterConfig router;
  router.set_aux_loss_coef(0.05f);
  router.set_z_loss_coef(0.01f);
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, groups).router(router));
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
  return out;
}

TEST(TrainerExpertParallel, LossesEqualTheSingleProcessRunForEveryEpSize) {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  if (!refs) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const std::string dir = std::string(refs) + "/qwen2_moe/base";
  const int R = world()->size(), r = world()->rank();
  const int64_t num_experts = Qwen2MoeConfig::from_file(dir + "/config.json").num_experts;
  // One global batch of R blocks (two sequences each), five steps on it, so the loss must fall;
  // rank r trains on block r.
  torch::manual_seed(11);
  const std::vector<torch::Tensor> global(5, torch::randint(0, 96, {R, 2, 9}, torch::kLong));
  for (bool routers_only : {true, false}) {
    // The reference: one process, the whole global batch (rank order) in one forward.
    std::vector<std::vector<torch::Tensor>> all, mine;
    for (const auto& g : global) {
      all.push_back({g.reshape({-1, g.size(2)})});
      mine.push_back({g[r]});
    }
    const auto expected = losses(dir, single_process_groups(), routers_only, all);
    for (int ep = 1; ep <= R; ++ep) {
      if (R % ep || num_experts % ep) continue;
      SCOPED_TRACE("EP " + std::to_string(ep) + " x DP " + std::to_string(R / ep) +
                   (routers_only ? ", routers only" : ", all parameters"));
      const auto got = losses(dir, make_process_groups(world(), ep), routers_only, mine);
      for (size_t s = 0; s < got.size(); ++s)
        EXPECT_NEAR(got[s], expected[s], 1e-5) << "step " << s;
      if (!routers_only) EXPECT_LT(got.back(), got.front());  // and it trains
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
