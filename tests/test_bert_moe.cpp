// BERT-MoE against transformers: tiny random BertForSequenceClassification models saved by the
// pinned transformers (scripts/hf_bert_reference.py). The dense model must give transformers'
// hidden states, pooled output and logits; upcycled to 4 identical experts it must give the same
// logits under every router; with noise it must not. Checkpoint and config errors name the
// file and the field or tensor.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "common/errors.h"
#include "models/bert_moe.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace switchyard {
void PrintTo(const RouterEntry& entry, std::ostream* os);  // defined in test_routers.cpp
}  // namespace switchyard

namespace {

using namespace switchyard::test;

using Tensors = std::map<std::string, torch::Tensor>;
Tensors load_reference(const std::string& dir) {
  auto f = SafetensorsFile::open(dir + "/reference.safetensors");
  Tensors out;
  for (const auto& e : f->header().tensors) out[e.name] = f->get(e.name).clone();
  return out;
}

// Max |ours - theirs| relative to the reference's scale; for [B, S, H] states only at
// positions the attention mask keeps.
double relative_error(const torch::Tensor& ours, const torch::Tensor& ref,
                      const torch::Tensor& mask = {}) {
  EXPECT_EQ(ours.sizes(), ref.sizes());
  auto diff = (ours.to(torch::kFloat) - ref).abs();
  if (mask.defined()) diff = diff.masked_select(mask.to(torch::kBool).unsqueeze(-1).expand_as(ref));
  return diff.max().item<double>() / std::max(1.0, ref.abs().max().item<double>());
}

BertMoeOptions options_for(const std::string& dir) {
  return BertMoeOptions(BertConfig::from_file(dir + "/config.json"), single_process_groups());
}

BertMoeForSequenceClassification load_model(const std::string& dir, BertMoeOptions options,
                                            BertLoadReport* report = nullptr) {
  BertMoeForSequenceClassification model(std::move(options));
  auto r = load_hf_weights(*model, SafetensorsCheckpoint(dir));
  if (report) *report = r;
  model->eval();
  return model;
}

BertMoeOutput run(BertMoeForSequenceClassification& model, const Tensors& ref) {
  torch::NoGradGuard no_grad;
  return model->forward(ref.at("input_ids"), ref.at("attention_mask"), ref.at("token_type_ids"));
}

// ---- dense BERT against transformers -----------------------------------------------------------

TEST(HfReference, BertDenseMatchesTransformers) {
  const std::string dir = reference_case("bert", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const Tensors ref = load_reference(dir);
  BertLoadReport report;
  auto model = load_model(dir, options_for(dir), &report);
  EXPECT_TRUE(report.pooler && report.classifier);
  const auto out = run(model, ref);
  const double hidden =
      relative_error(out.last_hidden_state, ref.at("last_hidden_state"), ref.at("attention_mask"));
  const double pooled = relative_error(out.pooled, ref.at("pooled"));
  const double logits = relative_error(out.logits, ref.at("logits"));
  std::printf("[bert dense] max relative error: hidden %.3e pooled %.3e logits %.3e\n", hidden,
              pooled, logits);
  EXPECT_LE(hidden, 1e-4);
  EXPECT_LE(pooled, 1e-4);
  EXPECT_LE(logits, 1e-4);
  EXPECT_TRUE(out.moe.empty());
  EXPECT_EQ(out.router_loss.item<double>(), 0.0);
}

// gamma/beta LayerNorm names (bert. prefix, classifier) and a BertModel save (no prefix, no
// classifier; with and without pooler) load to transformers' outputs.
TEST(HfReference, BertLegacyAndBertModelCheckpointsLoad) {
  if (reference_case("bert", "base").empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  struct Case {
    std::string name;
    bool pooler, classifier;
  };
  for (const Case& c : {Case{"legacy", true, true}, Case{"bert_model", true, false},
                        Case{"no_pooler", false, false}}) {
    SCOPED_TRACE(c.name);
    const std::string dir = reference_case("bert", c.name);
    const Tensors ref = load_reference(dir);
    BertLoadReport report;
    auto model = load_model(dir, options_for(dir), &report);
    EXPECT_EQ(report.pooler, c.pooler);
    EXPECT_EQ(report.classifier, c.classifier);
    const auto out = run(model, ref);
    const double hidden = relative_error(out.last_hidden_state, ref.at("last_hidden_state"),
                                         ref.at("attention_mask"));
    std::printf("[bert %s] max relative error: hidden %.3e", c.name.c_str(), hidden);
    EXPECT_LE(hidden, 1e-4);
    if (c.pooler) {
      const double pooled = relative_error(out.pooled, ref.at("pooled"));
      std::printf(" pooled %.3e", pooled);
      EXPECT_LE(pooled, 1e-4);
    }
    if (c.classifier) {
      const double logits = relative_error(out.logits, ref.at("logits"));
      std::printf(" logits %.3e", logits);
      EXPECT_LE(logits, 1e-4);
    }
    std::printf("\n");
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
  }
}

// ---- upcycling ---------------------------------------------------------------------------------

BertMoeOptions upcycled(const std::string& dir, config::RouterConfig::KindCase kind, double noise) {
  config::RouterConfig rc;  // each router with its default shape
  rc.set_norm_topk_prob(true);
  return options_for(dir)
      .num_experts(4)
      .top_k(2)
      .router(with_router_kind(rc, kind))
      .upcycle_noise(noise)
      .seed(11);
}

class BertMoeUpcycled : public ::testing::TestWithParam<RouterEntry> {};

// Four equal experts with top-2 weights renormalised to 1: whatever the router picks, each
// token gets exactly the dense FFN, so the logits are transformers' through the expert path.
TEST_P(BertMoeUpcycled, IdenticalExpertsReproduceDenseLogits) {
  const std::string dir = reference_case("bert", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const Tensors ref = load_reference(dir);
  auto model = load_model(dir, upcycled(dir, GetParam().kind, 0.0));
  const auto out = run(model, ref);
  ASSERT_EQ(out.moe.size(), 3u);
  for (const auto& m : out.moe) {
    EXPECT_EQ(m.routing.topk_ids.size(1), 2);
    EXPECT_EQ(m.routing.topk_ids.size(0), ref.at("input_ids").numel());
  }
  EXPECT_TRUE(torch::isfinite(out.router_loss).item<bool>());
  const double logits = relative_error(out.logits, ref.at("logits"));
  const double hidden =
      relative_error(out.last_hidden_state, ref.at("last_hidden_state"), ref.at("attention_mask"));
  std::printf("[bert upcycled E=4 top-2, %s] max relative error: hidden %.3e logits %.3e\n",
              GetParam().name.c_str(), hidden, logits);
  EXPECT_LE(logits, 1e-4);
  EXPECT_LE(hidden, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(HfReference, BertMoeUpcycled, ::testing::ValuesIn(router_registry()),
                         [](const auto& info) { return info.param.name; });

TEST(HfReference, BertUpcycleNoiseMakesExpertsDiffer) {
  const std::string dir = reference_case("bert", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const Tensors ref = load_reference(dir);
  auto model = load_model(dir, upcycled(dir, config::RouterConfig::kLinear, 0.2));
  const auto out = run(model, ref);
  const double logits = relative_error(out.logits, ref.at("logits"));
  std::printf("[bert upcycled noise 0.2] logits differ from dense by %.3e (relative)\n", logits);
  EXPECT_GT(logits, 1e-3);
  // Every expert differs from the others, and the noise is a fraction of the weights' scale.
  const auto& bank = model->bert->layers()[0]->moe->experts;
  for (int64_t e = 1; e < 4; ++e) EXPECT_FALSE(torch::allclose(bank->w_in[0], bank->w_in[e]));
  const double rel = ((bank->w_in[1] - bank->w_in[0]).std() / bank->w_in[0].std()).item<double>();
  EXPECT_GT(rel, 0.1);
  EXPECT_LT(rel, 0.5);
  // Biases are copied, not perturbed.
  EXPECT_TRUE(torch::equal(bank->b_in[0], bank->b_in[3]));
  // Same seed, same model.
  auto again = load_model(dir, upcycled(dir, config::RouterConfig::kLinear, 0.2));
  EXPECT_TRUE(torch::equal(run(again, ref).logits, out.logits));
}

// ---- errors ------------------------------------------------------------------------------------

TEST(HfReference, BertCheckpointErrorsNameTheTensor) {
  const std::string dir = reference_case("bert", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const std::string missing = "bert.encoder.layer.1.output.dense.bias";
  std::vector<std::pair<std::string, torch::Tensor>> kept;
  SafetensorsCheckpoint full(dir);
  for (const auto& name : full.names())
    if (name != missing) kept.emplace_back(name, full.get(name));
  const fs::path broken = fs::temp_directory_path() / "switchyard_bert_missing.safetensors";
  save_safetensors(broken.string(), kept);
  expect_error(
      [&] {
        BertMoeForSequenceClassification model(options_for(dir));
        load_hf_weights(*model, SafetensorsCheckpoint(broken.string()));
      },
      {broken.string(), missing});
  fs::remove(broken);

  auto cfg = BertConfig::from_file(dir + "/config.json");
  cfg.intermediate_size = 48;  // the checkpoint's FFN is 64 wide
  expect_error(
      [&] {
        BertMoeForSequenceClassification model(
            BertMoeOptions(cfg, single_process_groups()).num_experts(4));
        load_hf_weights(*model, SafetensorsCheckpoint(dir));
      },
      {dir, "bert.encoder.layer.0.intermediate.dense.weight", "shape"});
}

}  // namespace

// ---- no reference data needed ------------------------------------------------------------------

TEST(BertConfigTest, ReadsHfFieldsAndRefusesWhatIsNotImplemented) {
  auto c = BertConfig::from_json(
      R"({"model_type":"bert","hidden_size":64,"num_attention_heads":4,"intermediate_size":96,
          "hidden_act":"gelu","position_embedding_type":"absolute","layer_norm_eps":1e-5,
          "id2label":{"0":"neg","1":"neu","2":"pos"},"torch_dtype":"bfloat16","pad_token_id":1})",
      "cfg.json");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.head_dim(), 16);
  EXPECT_EQ(c.num_labels, 3);
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.pad_token_id, 1);
  EXPECT_EQ(c.dtype, torch::kBFloat16);
  EXPECT_EQ(BertConfig::from_json(R"({"num_labels":5})", "x").num_labels, 5);
  EXPECT_EQ(BertConfig::from_json("{}", "x").intermediate_size, 3072);  // transformers' defaults
  auto bad = [](const std::string& json, const std::string& want) {
    expect_error([&] { BertConfig::from_json(json, "cfg.json"); }, {"cfg.json", want});
  };
  bad(R"({"hidden_act":"relu"})", "hidden_act");
  bad(R"({"hidden_act":"gelu_new"})", "hidden_act");
  bad(R"({"model_type":"roberta"})", "model_type");
  bad(R"({"position_embedding_type":"relative_key"})", "position_embedding_type");
  bad(R"({"is_decoder":true})", "is_decoder");
  bad(R"({"hidden_size":30,"num_attention_heads":4})", "hidden_size");
  bad(R"({"vocab_size":"many"})", "vocab_size: must be an integer");
  bad("{not json", "invalid JSON");
  EXPECT_EQ(BertConfig::preset("tiny").hidden_size, 32);
  EXPECT_THROW(BertConfig::preset("huge"), ConfigError);
}

TEST(BertMoeTest, FreshModelShapesSeedsAndMoeLayers) {
  auto options = BertMoeOptions(BertConfig::preset("tiny"), single_process_groups())
                     .num_experts(4)
                     .moe_layer_step(2)
                     .seed(3);
  BertMoeForSequenceClassification a(options), b(options);
  a->eval();
  b->eval();
  ASSERT_EQ(a->bert->layers().size(), 2u);
  EXPECT_FALSE(a->bert->layers()[0]->moe);  // (i + 1) % 2 == 0: layer 1 only
  EXPECT_TRUE(a->bert->layers()[1]->moe);
  // Replicated parameters come from the seed alone: two builds agree, the caller's RNG is kept.
  torch::manual_seed(5);
  const auto before = torch::rand({4});
  torch::manual_seed(5);
  BertMoeForSequenceClassification c(options);
  EXPECT_TRUE(torch::equal(torch::rand({4}), before));
  for (const auto& m : {b, c}) {
    EXPECT_TRUE(torch::equal(a->classifier->weight, m->classifier->weight));
    for (const auto& p : a->bert->layers()[1]->moe->router->named_parameters())
      EXPECT_TRUE(
          torch::equal(p.value(), m->bert->layers()[1]->moe->router->named_parameters()[p.key()]));
  }
  auto ids = torch::randint(1, 100, {2, 7});
  auto mask = torch::ones({2, 7}, torch::kLong);
  mask[1].narrow(0, 5, 2).zero_();
  torch::NoGradGuard no_grad;
  auto out = a->forward(ids, mask);
  EXPECT_EQ(out.last_hidden_state.sizes(), (std::vector<int64_t>{2, 7, 32}));
  EXPECT_EQ(out.pooled.sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(out.moe.size(), 1u);
  EXPECT_GT(out.router_loss.item<double>(), 0.0);
  // Padding keys are masked: changing a padded token leaves the other row-1 positions alone.
  auto ids2 = ids.clone();
  ids2[1][6] = 42;
  auto out2 = a->forward(ids2, mask);
  EXPECT_TRUE(torch::allclose(out.last_hidden_state[1].narrow(0, 0, 5),
                              out2.last_hidden_state[1].narrow(0, 0, 5), 1e-5, 1e-6));
  expect_error(
      [&] {
        a->forward(torch::zeros({1, 65}, torch::kLong));
      },
      {"max_position_embeddings"});
  expect_error([&] { auto m = BertMoeModel(BertMoeOptions(options).top_k(5)); }, {"top_k"});
}
