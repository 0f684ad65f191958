// Switchyard model checkpoints (models/model_checkpoint.h, models/switchyard_checkpoint.h): a
// model written and read back is the same model bit for bit, quantized experts as their codes;
// float experts load into quantized banks; damaged folders and other architectures are refused
// with an error naming the checkpoint.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "models/model_checkpoint.h"
#include "models/qwen2_moe.h"
#include "tests/test_support.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

using namespace switchyard::test;

Qwen2MoeConfig tiny(int64_t hidden = 128) {
  Qwen2MoeConfig c = Qwen2MoeConfig::preset("tiny");
  c.vocab_size = 64;
  c.hidden_size = hidden;
  c.dtype = torch::kFloat;
  return c;
}

config::QuantConfig int4() {
  config::QuantConfig q;
  q.set_experts(config::INT4);
  q.set_group_size(32);
  q.set_symmetric(false);
  return q;
}

Qwen2MoeForCausalLM build(uint64_t seed, const config::QuantConfig& quant = {},
                          const Qwen2MoeConfig& c = tiny()) {
  torch::manual_seed(seed);
  Qwen2MoeForCausalLM m(Qwen2MoeOptions(c, single_process_groups()).quant(quant));
  if (quant.experts() != config::QUANT_NONE) {  // real codes, not the empty bank's zeros
    torch::NoGradGuard no_grad;
    for (auto layer : m->layers()) {  // holder copies: non-const access
      if (!layer->moe) continue;
      ExpertBank bank = layer->moe->experts;
      const auto& o = bank->options();
      for (int64_t e = 0; e < o.num_experts(); ++e)
        bank->load_expert(e, torch::randn({2 * o.intermediate_size(), o.hidden_size()}),
                          torch::randn({o.hidden_size(), o.intermediate_size()}));
    }
  }
  m->eval();
  return m;
}

// A path of its own for this test that does not exist yet (checkpoint folders must be new).
std::string new_folder(const std::string& name) {
  const fs::path d = temp_dir(name);
  fs::remove(d);
  return d.string();
}

std::string save(Qwen2MoeForCausalLM& m, const std::string& name) {
  const std::string dir = new_folder(name);
  config::CheckpointManifest manifest;
  manifest.set_complete(true);
  write_checkpoint_folder(dir, model_state_shard(*m, m->options().groups()),
                          single_process_groups(), manifest);
  return dir;
}

void overlay(Qwen2MoeForCausalLM& m, const std::string& dir, bool complete = true) {
  const auto manifest = read_checkpoint_manifest(dir);
  overlay_model_state(*m, CheckpointTensors(dir, manifest), OverlayOptions().complete(complete));
}

torch::Tensor logits(Qwen2MoeForCausalLM& m) {
  torch::NoGradGuard no_grad;
  auto ids = torch::arange(24, torch::kLong).remainder(64).view({2, 12});
  return m->forward(ids).logits;
}

}  // namespace

TEST(ModelCheckpoint, Int4ModelRoundTripsBitForBitAsCodes) {
  auto a = build(1, int4());
  const std::string dir = save(a, "int4");
  auto tensors = CheckpointTensors(dir, read_checkpoint_manifest(dir));
  // Codes are stored as they are, per global expert, and no float expert weights at all.
  EXPECT_TRUE(tensors.contains("buffer.layers.0.moe.experts.w_in_q.expert7"));
  EXPECT_EQ(tensors.get("buffer.layers.0.moe.experts.w_in_q.expert7").scalar_type(), torch::kByte);
  EXPECT_FALSE(tensors.contains("param.layers.0.moe.experts.w_in.expert0"));
  auto b = build(2, int4());
  ASSERT_FALSE(torch::equal(logits(a), logits(b)));
  overlay(b, dir);
  EXPECT_TRUE(torch::equal(logits(a), logits(b)));
  const auto b_buffers = b->named_buffers();
  for (const auto& item : a->named_buffers())
    EXPECT_TRUE(torch::equal(item.value(), b_buffers[item.key()])) << item.key();
  fs::remove_all(dir);
}

TEST(ModelCheckpoint, FloatExpertsLoadIntoAQuantizedBank) {
  auto a = build(3);
  const std::string dir = save(a, "float");
  auto b = build(4, int4());
  overlay(b, dir);
  quantize_experts(*a, int4());  // the same quantization applied to the saved model
  EXPECT_TRUE(torch::equal(logits(a), logits(b)));
  fs::remove_all(dir);
}

TEST(ModelCheckpoint, QuantizedExpertsIntoAFloatBankAreRefused) {
  auto a = build(5, int4());
  const std::string dir = save(a, "refuse_float");
  auto b = build(6);
  EXPECT_NE(error_of([&] { overlay(b, dir); }).find("holds quantized experts"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ModelCheckpoint, AnotherArchitectureIsRefused) {
  auto a = build(7);
  const std::string dir = save(a, "arch");
  auto wider = build(8, {}, tiny(256));
  const std::string msg = error_of([&] { overlay(wider, dir); });
  EXPECT_NE(msg.find("checkpoint " + dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("another architecture"), std::string::npos) << msg;
  Qwen2MoeConfig more = tiny();
  more.num_experts = 4;  // fewer experts than were saved: expert 4..7 have no place
  auto fewer = build(9, {}, more);
  EXPECT_NE(error_of([&] { overlay(fewer, dir); }).find("another architecture"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ModelCheckpoint, PartialOverlayCopiesOnlyWhatIsThere) {
  auto a = build(10);
  auto b = build(11);
  const std::string dir = new_folder("partial");
  CheckpointShard shard;
  shard.replicated.emplace_back("param.norm.weight", a->norm->weight.detach() + 1);
  config::CheckpointManifest manifest;
  write_checkpoint_folder(dir, shard, single_process_groups(), manifest);
  const auto before = b->embed_tokens->weight.clone();
  overlay(b, dir, /*complete=*/false);
  EXPECT_TRUE(torch::equal(b->norm->weight, a->norm->weight + 1));
  EXPECT_TRUE(torch::equal(b->embed_tokens->weight, before));
  EXPECT_NE(error_of([&] { overlay(b, dir, /*complete=*/true); }).find("no tensor"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(ModelCheckpoint, DamagedFoldersAreRefusedNamingTheFile) {
  auto a = build(12);
  const std::string dir = save(a, "damaged");
  const std::string file = dir + "/replicated.safetensors";
  const auto size = fs::file_size(file);
  {  // one byte changed deep in the tensor data: only the checksum can tell
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(size - 100));
    f.put('\x7f');
  }
  auto b = build(13);
  EXPECT_NE(
      error_of([&] { overlay(b, dir); }).find("replicated.safetensors does not match its checksum"),
      std::string::npos);
  fs::resize_file(file, size - 10);
  EXPECT_NE(error_of([&] { read_checkpoint_manifest(dir); }).find("(truncated?)"),
            std::string::npos);
  fs::remove(file);
  EXPECT_NE(
      error_of([&] { read_checkpoint_manifest(dir); }).find("replicated.safetensors is missing"),
      std::string::npos);
  fs::remove(dir + "/manifest.pb");
  EXPECT_FALSE(is_switchyard_checkpoint(dir));
  EXPECT_NE(error_of([&] { read_checkpoint_manifest(dir); }).find("no manifest.pb"),
            std::string::npos);
  { std::ofstream(dir + "/manifest.pb") << "not a manifest \xff\xff\xff"; }
  EXPECT_NE(error_of([&] { read_checkpoint_manifest(dir); }).find("not a valid manifest"),
            std::string::npos);
  fs::remove_all(dir);
}
