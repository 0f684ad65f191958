// BERT-MoE under expert parallelism: an upcycled model with noisy (hence different) experts and
// fresh seeded routers gives, at every EP size that divides the world (EP x DP = 2 x 2 at four
// ranks), the logits of the same model built single-process in the same process.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "models/bert_moe.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

double relative_error(const torch::Tensor& ours, const torch::Tensor& ref) {
  return (ours - ref).abs().max().item<double>() / std::max(1.0, ref.abs().max().item<double>());
}

TEST(BertMoeExpertParallel, EveryEpSizeGivesTheSingleProcessLogits) {
  const char* refs = std::getenv("SWITCHYARD_REF_DIR");
  if (!refs) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const std::string dir = std::string(refs) + "/bert/base";
  const auto cfg = BertConfig::from_file(dir + "/config.json");
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  // Each rank brings a different row of the batch, so the exchange carries uneven loads.
  const int64_t r = world()->rank() % ref->get("input_ids").size(0);
  auto ids = ref->get("input_ids").narrow(0, r, 1),
       mask = ref->get("attention_mask").narrow(0, r, 1),
       types = ref->get("token_type_ids").narrow(0, r, 1);
  const SafetensorsCheckpoint ckpt(dir);
  torch::NoGradGuard no_grad;
  for (auto kind : {config::RouterConfig::kLinear, config::RouterConfig::kMlpHadamard}) {
    config::RouterConfig rc;
    rc.mutable_mlp_hadamard()->set_hidden(16);
    rc = with_router_kind(rc, kind);
    auto options = [&](ProcessGroups groups) {
      return BertMoeOptions(cfg, std::move(groups))
          .num_experts(4)
          .top_k(2)
          .router(rc)
          .upcycle_noise(0.1)
          .seed(5);
    };
    BertMoeForSequenceClassification single(options(single_process_groups()));
    load_hf_weights(*single, ckpt);
    single->eval();
    const auto want = single->forward(ids, mask, types);
    for (int ep = 1; ep <= world()->size(); ++ep) {
      if (world()->size() % ep || 4 % ep) continue;
      SCOPED_TRACE(router_entry(kind).name + " EP " + std::to_string(ep));
      BertMoeForSequenceClassification model(options(make_process_groups(world(), ep)));
      load_hf_weights(*model, ckpt);
      model->eval();
      for (const auto& layer : model->bert->layers())
        EXPECT_EQ(layer->moe->experts->w_in.size(0), 4 / ep);
      const auto got = model->forward(ids, mask, types);
      const double logits = relative_error(got.logits, want.logits),
                   hidden = relative_error(got.last_hidden_state, want.last_hidden_state);
      if (world()->rank() == 0)
        std::printf(
            "[bert %s EP %d of %d] max relative error vs single process: logits %.3e "
            "hidden %.3e\n",
            router_entry(kind).name.c_str(), ep, world()->size(), logits, hidden);
      EXPECT_LE(logits, 1e-5);
      EXPECT_LE(hidden, 1e-5);
      EXPECT_NEAR(got.router_loss.item<double>(), want.router_loss.item<double>(), 1e-6);
    }
  }
}

}  // namespace
