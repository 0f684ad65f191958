// `switchyard inspect`'s summary: components, GPTQ weights counted as 4-bit weights, active
// parameters per token, name patterns, on a small hand-made Qwen2-MoE-style checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "models/checkpoint_summary.h"
#include "models/safetensors.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

const ComponentCount& component(const CheckpointSummary& s, const std::string& name) {
  for (const auto& c : s.components)
    if (c.component == name) return c;
  throw std::runtime_error("no component " + name);
}

TEST(CheckpointSummary, CountsComponentsActiveParametersAndGptqWeights) {
  const fs::path dir = fs::temp_directory_path() / ("sy_inspect_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json")
      << R"({"model_type": "qwen2_moe", "num_experts": 4, "num_experts_per_tok": 2,
            "hidden_size": 16, "quantization_config": {"quant_method": "gptq", "bits": 4,
            "group_size": 8, "sym": true}})";
  std::vector<std::pair<std::string, torch::Tensor>> t = {
      {"model.embed_tokens.weight", torch::zeros({10, 16})},
      {"model.norm.weight", torch::zeros({16})},
      {"model.layers.0.input_layernorm.weight", torch::zeros({16})},
      {"model.layers.0.self_attn.q_proj.weight", torch::zeros({16, 16})},
      {"model.layers.0.mlp.gate.weight", torch::zeros({4, 16})},
      {"model.layers.0.mlp.shared_expert_gate.weight", torch::zeros({1, 16})},
      {"lm_head.weight", torch::zeros({10, 16})}};
  for (int e = 0; e < 4; ++e) {  // GPTQ experts: [16 in -> 8 out] as qweight [16/8, 8]
    const std::string p = "model.layers.0.mlp.experts." + std::to_string(e) + ".up_proj.";
    t.push_back({p + "qweight", torch::zeros({2, 8}, torch::kInt)});
    t.push_back({p + "qzeros", torch::zeros({2, 1}, torch::kInt)});
    t.push_back({p + "scales", torch::zeros({2, 8}, torch::kHalf)});
  }
  save_safetensors((dir / "model.safetensors").string(), t);

  const CheckpointSummary s = summarize_checkpoint(dir.string());
  EXPECT_EQ(s.architecture.at("model_type"), "qwen2_moe");
  EXPECT_NE(s.quantization.find("gptq int4, group 8"), std::string::npos) << s.quantization;
  EXPECT_EQ(component(s, "routed experts").parameters, 4 * 16 * 8);  // 8 weights per int32
  EXPECT_EQ(component(s, "routed experts").tensors, 12);
  EXPECT_EQ(component(s, "routers").parameters, 64);
  EXPECT_EQ(component(s, "shared expert").parameters, 16);
  EXPECT_EQ(component(s, "norms").parameters, 32);
  EXPECT_EQ(component(s, "attention").parameters, 256);
  EXPECT_EQ(component(s, "embeddings").parameters, 160);
  EXPECT_EQ(component(s, "lm head").parameters, 160);
  const int64_t non_expert = 160 + 32 + 256 + 64 + 16 + 160;
  EXPECT_EQ(s.total_parameters, non_expert + 512);
  EXPECT_EQ(s.active_parameters, non_expert + 512 * 2 / 4);
  int64_t bytes = 0;
  for (const auto& c : s.components) bytes += c.bytes;
  EXPECT_EQ(bytes, s.total_bytes);
  bool grouped = false;
  for (const auto& g : s.groups)
    if (g.pattern == "model.layers.*.mlp.experts.*.up_proj.qweight") {
      grouped = true;
      EXPECT_EQ(g.count, 4);
      EXPECT_EQ(g.dtype, "I32");
      EXPECT_EQ(g.shape, "[2, 8]");
    }
  EXPECT_TRUE(grouped);
  EXPECT_EQ(s.tensors.size(), t.size());
  fs::remove_all(dir);
}

TEST(CheckpointSummary, BertNamesAndMissingPaths) {
  EXPECT_EQ(component_of("bert.encoder.layer.0.attention.output.LayerNorm.gamma"), "norms");
  EXPECT_EQ(component_of("bert.encoder.layer.0.attention.output.dense.weight"), "attention");
  EXPECT_EQ(component_of("bert.encoder.layer.0.output.dense.weight"), "dense mlp");
  EXPECT_EQ(component_of("bert.embeddings.word_embeddings.weight"), "embeddings");
  EXPECT_EQ(component_of("classifier.bias"), "pooler and classifier");
  EXPECT_EQ(component_of("model.layers.1.mlp.gate_proj.weight"), "dense mlp");
  EXPECT_EQ(component_of("model.layers.1.mlp.experts.gate_up_proj"), "routed experts");
  EXPECT_THROW(summarize_checkpoint("/nonexistent/checkpoint"), Error);
}

}  // namespace
