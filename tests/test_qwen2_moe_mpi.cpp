// The Qwen2-MoE decoder under expert parallelism: every EP size that divides the world gives
// transformers' logits (the same references as tests/test_qwen2_moe.cpp), each rank loading
// only its own experts from the checkpoint.
#include <gtest/gtest.h>

#include <cstdlib>

#include "models/qwen2_moe.h"
#include "parallel/process_groups.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

TEST(Qwen2MoeExpertParallel, EveryEpSizeGivesTransformersLogits) {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  if (!refs) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  for (const std::string name : {"base", "norm_topk", "sharded_tied", "fused"}) {
    const std::string dir = std::string(refs) + "/qwen2_moe/" + name;
    auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
    auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
    auto ids = ref->get("input_ids"), mask = ref->get("attention_mask"), want = ref->get("logits");
    for (int ep = 1; ep <= world()->size(); ++ep) {
      if (world()->size() % ep || cfg.num_experts % ep) continue;
      SCOPED_TRACE(name + " EP " + std::to_string(ep));
      Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, make_process_groups(world(), ep)));
      load_hf_weights(*model, SafetensorsCheckpoint(dir));
      model->eval();
      for (const auto& layer : model->layers())
        if (layer->moe) EXPECT_EQ(layer->moe->experts->w_in.size(0), cfg.num_experts / ep);
      torch::NoGradGuard no_grad;
      // Each rank brings a different slice of the batch, so the exchange carries uneven loads.
      const int64_t B = ids.size(0), r = world()->rank() % B;
      auto out = model->forward(ids.narrow(0, r, 1), mask.narrow(0, r, 1));
      auto keep = mask.narrow(0, r, 1).to(torch::kBool).unsqueeze(-1).expand_as(out.logits);
      auto expected = want.narrow(0, r, 1);
      const double err = (out.logits - expected).abs().masked_select(keep).max().item<double>() /
                         std::max(1.0, expected.abs().max().item<double>());
      EXPECT_LE(err, 1e-4);
    }
  }
}

// A router the checkpoint lacks (here MLP-Hadamard replacing the gate) is replicated, so every
// rank must draw the same one, whatever its process's random state (LibTorch seeds the default
// generator from the OS; the ranks' different seeds stand in for that here).
TEST(Qwen2MoeExpertParallel, ARouterTheCheckpointLacksIsTheSameOnEveryRank) {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  if (!refs) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const std::string dir = std::string(refs) + "/qwen2_moe/base";
  const auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  config::RouterConfig rc;
  rc.mutable_mlp_hadamard()->set_hidden(16);
  torch::manual_seed(1000 + uint64_t(world()->rank()));
  Qwen2MoeForCausalLM model(
      Qwen2MoeOptions(cfg, make_process_groups(world(), world()->size())).router(rc));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  int routers = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.key().find(".router.") == std::string::npos) continue;
    ++routers;
    const auto all = world()->all_gather(p.value().detach().flatten().contiguous());
    const auto mine = p.value().detach().flatten();
    for (int r = 0; r < world()->size(); ++r)
      EXPECT_TRUE(torch::equal(all.narrow(0, r * mine.numel(), mine.numel()), mine))
          << p.key() << ": rank " << r << " holds another router than rank " << world()->rank();
  }
  EXPECT_GT(routers, 0);
}

}  // namespace
