// GPTQ-Int4 checkpoints: unpacking checked against AutoGPTQ's own packing code
// (scripts/hf_gptq_reference.py), whole-model logits against transformers running the
// dequantized model, and clear errors for the GPTQ variants we do not load.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "models/gptq.h"
#include "models/qwen2_moe.h"
#include "tests/test_support.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

using namespace switchyard::test;

class GptqCase : public ::testing::TestWithParam<std::string> {};

TEST_P(GptqCase, UnpacksWhatAutoGptqPacked) {
  const std::string dir = reference_case("gptq", GetParam());
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  auto ref = SafetensorsFile::open(dir + "/unpack_reference.safetensors");
  const std::string prefix = ref->header().metadata.at("prefix");
  const auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  ASSERT_TRUE(cfg.gptq.has_value());
  auto codes = ref->get("codes");
  Int4Codes got =
      read_gptq_linear(SafetensorsCheckpoint(dir), prefix, *cfg.gptq, codes.size(0), codes.size(1));
  EXPECT_TRUE(torch::equal(got.codes(), codes));
  EXPECT_TRUE(torch::equal(got.zero, ref->get("zeros")));
  EXPECT_TRUE(torch::equal(got.scale, ref->get("scales")));
  EXPECT_TRUE(torch::equal(got.dequantize(torch::kFloat), ref->get("weight")));
}

TEST_P(GptqCase, LogitsMatchTransformersOnTheDequantizedModel) {
  const std::string dir = reference_case("gptq", GetParam());
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  model->to(torch::kFloat);
  model->eval();
  // The experts hold the checkpoint's codes (int4 with zero points), not float copies.
  for (const auto& layer : model->layers()) {
    if (!layer->moe) continue;
    EXPECT_TRUE(layer->moe->experts->quantized());
    EXPECT_TRUE(layer->moe->shared_expert->quantized());
  }
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  auto ids = ref->get("input_ids"), mask = ref->get("attention_mask"), want = ref->get("logits");
  torch::NoGradGuard no_grad;
  auto logits = model->forward(ids, mask).logits;
  ASSERT_EQ(logits.sizes(), want.sizes());
  auto keep = mask.to(torch::kBool).unsqueeze(-1).expand_as(want);
  const double err = (logits - want).abs().masked_select(keep).max().item<double>() /
                     std::max(1.0, want.abs().max().item<double>());
  RecordProperty("relative_error", std::to_string(err));
  std::cout << GetParam() << ": max |ours - transformers| / scale = " << err << "\n";
  EXPECT_LE(err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(HfReference, GptqCase, ::testing::Values("gptq", "gptq_asym"));

TEST(HfReferenceGptq, RequantizingToInt8StillRuns) {
  const std::string dir = reference_case("gptq", "gptq");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  // Asking for another expert format dequantizes the codes and quantizes them again.
  config::QuantConfig int8;
  int8.set_experts(config::INT8);
  Qwen2MoeForCausalLM model(
      Qwen2MoeOptions(Qwen2MoeConfig::from_file(dir + "/config.json"), single_process_groups())
          .quant(int8));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  model->to(torch::kFloat);
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  torch::NoGradGuard no_grad;
  auto logits = model->forward(ref->get("input_ids"), ref->get("attention_mask")).logits;
  auto want = ref->get("logits");
  const double err = (logits - want).abs().max().item<double>() / want.abs().max().item<double>();
  EXPECT_GT(err, 0.0);   // int8 of a 4-bit grid is close but not the same numbers
  EXPECT_LT(err, 0.05);  // ... and close: one int8 step is 1/127 of a row's range
}

}  // namespace

TEST(GptqConfigTest, ReadsQuantizationConfigAndRefusesOtherVariants) {
  auto parse = [](const std::string& text) {
    return GptqConfig::from_hf_config(nlohmann::json::parse(text), "cfg.json");
  };
  EXPECT_FALSE(parse(R"({"hidden_size": 8})").has_value());
  auto c = parse(R"({"quantization_config": {"quant_method": "gptq", "bits": 4,
                     "group_size": 64, "sym": false, "desc_act": false}})");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->group_size, 64);
  EXPECT_FALSE(c->sym);
  EXPECT_TRUE(c->zeros_minus_one);
  EXPECT_FALSE(
      parse(R"({"quantization_config": {"checkpoint_format": "gptq_v2"}})")->zeros_minus_one);
  expect_error([&] { parse(R"({"quantization_config": {"quant_method": "awq"}})"); },
               {"cfg.json", "quant_method", "awq"});
  expect_error([&] { parse(R"({"quantization_config": {"bits": 8}})"); }, {"cfg.json", "bits"});
  expect_error([&] { parse(R"({"quantization_config": {"desc_act": true}})"); }, {"desc_act"});
  expect_error([&] { parse(R"({"quantization_config": {"group_size": -1}})"); }, {"group_size"});
}

TEST(GptqUnpack, RefusesActOrderWrongShapesAndMissingTensors) {
  const fs::path dir = fs::temp_directory_path() / ("sy_gptq_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const int64_t in = 16, out = 8, group = 8;
  auto g_idx = torch::arange(in, torch::kInt).div(group, "floor").to(torch::kInt);
  auto write = [&](torch::Tensor qweight, torch::Tensor idx) {
    save_safetensors((dir / "model.safetensors").string(),
                     {{"l.qweight", qweight},
                      {"l.qzeros", torch::zeros({in / group, out / 8}, torch::kInt)},
                      {"l.scales", torch::ones({in / group, out}, torch::kHalf)},
                      {"l.g_idx", idx}});
  };
  const GptqConfig config{4, group, true, true};
  // A valid layer: all codes 0x7, zeros stored 0 (v1: zero 1) -> w = 6 everywhere.
  write(torch::full({in / 8, out}, 0x77777777, torch::kInt), g_idx);
  auto w = read_gptq_linear(SafetensorsCheckpoint(dir.string()), "l.", config, out, in)
               .dequantize(torch::kFloat);
  EXPECT_TRUE(torch::equal(w, torch::full({out, in}, 6.0f)));
  // Negative int32 words (high nibble >= 8) unpack like any other.
  write(torch::full({in / 8, out}, int32_t(0xF0000000u), torch::kInt), g_idx);
  auto codes = read_gptq_linear(SafetensorsCheckpoint(dir.string()), "l.", config, out, in).codes();
  EXPECT_EQ(codes.index({0, 7}).item<int>(), 15);
  EXPECT_EQ(codes.index({0, 6}).item<int>(), 0);

  write(torch::zeros({in / 8, out}, torch::kInt), g_idx.flip(0));
  expect_error(
      [&] { read_gptq_linear(SafetensorsCheckpoint(dir.string()), "l.", config, out, in); },
      {"sy_gptq_", "l.g_idx", "act-order"});
  write(torch::zeros({in / 8, out}, torch::kLong), g_idx);
  expect_error(
      [&] { read_gptq_linear(SafetensorsCheckpoint(dir.string()), "l.", config, out, in); },
      {"l.qweight", "expected"});
  expect_error(
      [&] { read_gptq_linear(SafetensorsCheckpoint(dir.string()), "m.", config, out, in); },
      {"m.qweight", "missing"});
  fs::remove_all(dir);
}
