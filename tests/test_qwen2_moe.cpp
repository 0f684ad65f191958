// The Qwen2-MoE decoder against transformers: tiny random models saved by the pinned
// transformers (scripts/hf_qwen2_moe_reference.py), logits for padded inputs compared at every
// non-padding position, to 1e-4 of the logits' scale in fp32.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <functional>

#include "common/autocast.h"
#include "common/errors.h"
#include "common/host_reads.h"
#include "common/kernel_profile.h"
#include "models/load_model.h"
#include "models/quantized_cpu_gemm.h"
#include "models/qwen2_moe.h"
#include "models/weight_quant.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace {

using namespace switchyard::test;

// Router fine-tuning's freezing: every parameter but the routers' stops taking gradients.
void train_only_routers(Qwen2MoeForCausalLM& m) {
  for (auto& p : m->named_parameters())
    p.value().set_requires_grad(p.key().find(".router.") != std::string::npos);
}

struct Reference {
  torch::Tensor input_ids, attention_mask, logits;
};
Reference load_reference(const std::string& dir) {
  auto f = SafetensorsFile::open(dir + "/reference.safetensors");
  return {f->get("input_ids").clone(), f->get("attention_mask").clone(), f->get("logits").clone()};
}

// Max |ours - theirs| over positions that are not padding, relative to the logits' scale.
double relative_error(const torch::Tensor& ours, const Reference& ref) {
  auto keep = ref.attention_mask.to(torch::kBool).unsqueeze(-1).expand_as(ref.logits);
  auto diff = (ours.to(torch::kFloat) - ref.logits).abs().masked_select(keep).max().item<double>();
  return diff / std::max(1.0, ref.logits.abs().max().item<double>());
}

Qwen2MoeForCausalLM load_model(const std::string& dir, config::RouterConfig router = {}) {
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()).router(router));
  load_hf_weights(*model, SafetensorsCheckpoint(dir));
  model->eval();
  return model;
}

class Qwen2MoeParity : public ::testing::TestWithParam<std::string> {};

TEST_P(Qwen2MoeParity, LogitsMatchTransformers) {
  const std::string dir = reference_case("qwen2_moe", GetParam());
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  auto model = load_model(dir);
  const Reference ref = load_reference(dir);
  torch::NoGradGuard no_grad;
  auto out = model->forward(ref.input_ids, ref.attention_mask);
  ASSERT_EQ(out.logits.sizes(), ref.logits.sizes());
  EXPECT_LE(relative_error(out.logits, ref), 1e-4) << GetParam();
  EXPECT_GT(out.moe.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(HfReference, Qwen2MoeParity,
                         ::testing::Values("base", "norm_topk", "no_shared", "sharded_tied",
                                           "fused"));

// SDPA, forced on the CPU (where the default is eager), against the same transformers logits:
// padded rows go through the additive mask, unpadded ones through the causal flag.
TEST(HfReference, Qwen2MoeWithSdpaAttentionMatchesTransformers) {
  const std::string dir = reference_case("qwen2_moe", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const Reference ref = load_reference(dir);
  auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
  Qwen2MoeForCausalLM sdpa(
      Qwen2MoeOptions(cfg, single_process_groups()).attention(AttentionKernel::kSdpa));
  load_hf_weights(*sdpa, SafetensorsCheckpoint(dir));
  sdpa->eval();
  EXPECT_EQ(sdpa->layers()[0]->self_attn->kernel_on(torch::kCPU), AttentionKernel::kSdpa);
  torch::NoGradGuard no_grad;
  EXPECT_LE(relative_error(sdpa->forward(ref.input_ids, ref.attention_mask).logits, ref), 1e-4);
  auto eager = load_model(dir);
  EXPECT_EQ(eager->layers()[0]->self_attn->kernel_on(torch::kCPU), AttentionKernel::kEager);
  auto a = eager->forward(ref.input_ids).logits, b = sdpa->forward(ref.input_ids).logits;
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-5 * std::max(1.0, a.abs().max().item<double>()));
}

// The whole decoder on the GPU (fp32): the same transformers logits, and int4 experts
// dequantised on the GPU agree with the CPU's int4 model.
TEST(HfReference, Qwen2MoeOnGpuMatchesTransformers) {
  const std::string dir = reference_case("qwen2_moe", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const Reference ref = load_reference(dir);
  torch::NoGradGuard no_grad;
  auto model = load_model(dir);
  model->to(torch::kCUDA);
  auto out = model->forward(ref.input_ids.cuda(), ref.attention_mask.cuda());
  EXPECT_LE(relative_error(out.logits.cpu(), ref), 1e-4);

  config::QuantConfig int4;
  int4.set_experts(config::INT4);
  int4.set_group_size(8);  // divides the tiny model's hidden (32) and expert width (24)
  auto load_int4 = [&] {
    auto cfg = Qwen2MoeConfig::from_file(dir + "/config.json");
    Qwen2MoeForCausalLM m(Qwen2MoeOptions(cfg, single_process_groups()).quant(int4));
    load_hf_weights(*m, SafetensorsCheckpoint(dir));
    m->eval();
    return m;
  };
  auto cpu = load_int4(), gpu = load_int4();
  gpu->to(torch::kCUDA);
  auto a = cpu->forward(ref.input_ids, ref.attention_mask).logits;
  auto b = gpu->forward(ref.input_ids.cuda(), ref.attention_mask.cuda()).logits.cpu();
  EXPECT_LE((a - b).abs().max().item<double>() / a.abs().max().item<double>(), 1e-4);
}

TEST(HfReference, Qwen2MoeRouterReplacement) {
  const std::string dir = reference_case("qwen2_moe", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  const Reference ref = load_reference(dir);
  torch::NoGradGuard no_grad;
  // Every router runs in the model; only those with a linear part can reproduce the checkpoint.
  for (const auto& entry : router_registry()) {
    config::RouterConfig rc = with_router_kind(config::RouterConfig(), entry.kind);
    rc.mutable_mlp_hadamard()->set_hidden(16);
    rc = with_router_kind(rc, entry.kind);
    auto out = load_model(dir, rc)->forward(ref.input_ids, ref.attention_mask);
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>()) << entry.name;
    if (entry.name == "linear") EXPECT_LE(relative_error(out.logits, ref), 1e-4);
  }
}

// load_model builds a model in the dtype it will compute in and leaves its expert banks to the
// loader (models/load_model.cpp, fresh_for_loading). Loaded that way in bf16, every parameter
// and buffer, quantized codes included, equals a float32 load cast to bf16: the fp32 build
// changed no number, it only held the weights at 4 bytes through the load.
TEST(HfReference, Qwen2MoeLoadsInItsComputeDtypeAsAFloatLoadCastAfter) {
  const std::string dir = reference_case("qwen2_moe", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  for (const bool int4 : {false, true}) {
    RunConfig config;
    if (int4) {
      config.mutable_model()->mutable_quant()->set_experts(config::INT4);
      config.mutable_model()->mutable_quant()->set_group_size(8);
      config.mutable_model()->mutable_quant()->set_symmetric(false);
    }
    const LoadedModel bf16 = switchyard::load_model(dir, config, "bfloat16");
    EXPECT_EQ(torch::typeMetaToScalarType(torch::get_default_dtype()), torch::kFloat)
        << "the build's default dtype outlived it";
    const LoadedModel fp32 = switchyard::load_model(dir, config, "float32");
    fp32.module().to(torch::kBFloat16);
    const auto theirs = fp32.module().named_parameters();
    for (const auto& p : bf16.module().named_parameters()) {
      ASSERT_EQ(p.value().scalar_type(), theirs[p.key()].scalar_type()) << p.key();
      EXPECT_TRUE(torch::equal(p.value(), theirs[p.key()])) << p.key() << (int4 ? " (int4)" : "");
    }
    const auto their_buffers = fp32.module().named_buffers();
    for (const auto& b : bf16.module().named_buffers())
      EXPECT_TRUE(torch::equal(b.value(), their_buffers[b.key()])) << b.key();
    if (int4)
      EXPECT_GT(their_buffers["layers.0.moe.experts.w_in_q"].count_nonzero().item<int64_t>(), 0);
  }
}

// A Switchyard checkpoint loaded in bf16: its router's expert bias (kept fp32, since updates of
// 1e-3 vanish in bf16) is read back exactly, not through a bf16 buffer built under the default.
TEST(HfReference, Qwen2MoeCheckpointLoadedInBf16KeepsItsExpertBiasExact) {
  const std::string dir = reference_case("qwen2_moe", "base");
  if (dir.empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  RunConfig config;
  config.mutable_router()->mutable_expert_bias()->set_update_rate(0.001);
  const LoadedModel m = switchyard::load_model(dir, config, "float32");
  const auto bias =
      torch::tensor({0.1234567f, -0.0012345f, 0.5f, 1e-4f, 0.f, 0.f, 0.3333333f, 0.f});
  for (const auto& b : m.module().named_buffers())
    if (b.key().find("expert_bias") != std::string::npos) b.value().copy_(bias);
  const auto tmp = temp_dir();
  const std::string out = (tmp / "ckpt").string();
  save_switchyard_checkpoint(m, out, torch::kFloat, dir);
  const LoadedModel back = switchyard::load_model(out, {}, "bfloat16");
  int biases = 0;
  for (const auto& b : back.module().named_buffers()) {
    if (b.key().find("expert_bias") == std::string::npos) continue;
    ++biases;
    ASSERT_EQ(b.value().scalar_type(), torch::kFloat) << b.key();
    EXPECT_TRUE(torch::equal(b.value(), bias)) << b.key() << ": " << b.value();
  }
  EXPECT_EQ(biases, 2);  // the two MoE layers of the three
  std::filesystem::remove_all(tmp);
}

}  // namespace

// A router no checkpoint holds is drawn from its layer's own seeded stream (model.init_seed):
// LibTorch seeds its default generator from the OS, so before this every run and every rank drew
// its own router, and the replicated routers of a fine-tune differed across ranks. The stream
// does not depend on what the layer's experts drew (the placement, quantization, EP size), and
// the caller's random stream is left where it was.
TEST(Qwen2MoeModel, RoutersNoCheckpointHoldsAreSeededPerLayerNotByTheProcess) {
  const auto cfg = Qwen2MoeConfig::preset("tiny");
  config::RouterConfig rc;
  rc.mutable_mlp_hadamard()->set_hidden(16);
  config::QuantConfig int4;
  int4.set_experts(config::INT4);
  int4.set_group_size(8);
  auto routers = [&](uint64_t process_seed, uint64_t seed, const config::QuantConfig& quant) {
    torch::manual_seed(process_seed);
    Qwen2MoeForCausalLM m(
        Qwen2MoeOptions(cfg, single_process_groups()).router(rc).seed(seed).quant(quant));
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : m->named_parameters())
      if (p.key().find(".router.") != std::string::npos) out.emplace_back(p.key(), p.value());
    return out;
  };
  const auto a = routers(1, 0, {}), b = routers(2, 0, int4), other = routers(1, 7, {});
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  bool any_differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    any_differs = any_differs || !torch::equal(a[i].second, other[i].second);
  }
  EXPECT_TRUE(any_differs) << "model.init_seed did not change the routers";
  torch::manual_seed(3);
  const auto expected = torch::rand({4});
  torch::manual_seed(3);
  Qwen2MoeForCausalLM(Qwen2MoeOptions(cfg, single_process_groups()).router(rc));
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected)) << "the build moved the caller's stream";
}

namespace {

// The tiny preset with grouped kv heads, built twice from the same draws: eager and SDPA.
std::pair<Qwen2MoeForCausalLM, Qwen2MoeForCausalLM> eager_and_sdpa(torch::Device device) {
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.num_key_value_heads = 2;
  auto build = [&](AttentionKernel kernel) {
    torch::manual_seed(11);
    Qwen2MoeForCausalLM m(Qwen2MoeOptions(cfg, single_process_groups()).attention(kernel));
    m->to(device);
    return m;
  };
  return {build(AttentionKernel::kEager), build(AttentionKernel::kSdpa)};
}

double max_relative(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max() /
          b.to(torch::kFloat).abs().max().clamp_min(1e-12))
      .item<double>();
}

}  // namespace

// SDPA and eager attention compute the same function: logits (fully masked rows included) and
// every gradient agree in fp32, unpadded (the causal flag) and left-padded (the additive mask).
TEST(Qwen2MoeModel, SdpaAttentionEqualsEagerInLogitsAndGradients) {
  auto [eager, sdpa] = eager_and_sdpa(torch::kCPU);
  for (const auto& p : eager->named_parameters())
    ASSERT_TRUE(torch::equal(p.value(), sdpa->named_parameters()[p.key()])) << p.key();
  torch::manual_seed(12);
  const auto ids = torch::randint(512, {2, 24});
  auto padding = torch::ones({2, 24}, torch::kLong);
  padding[1].narrow(0, 0, 5).zero_();  // row 1 left-padded by 5
  for (const auto& mask : {torch::Tensor(), padding}) {
    eager->zero_grad();
    sdpa->zero_grad();
    auto a = eager->forward(ids, mask).logits, b = sdpa->forward(ids, mask).logits;
    EXPECT_LE(max_relative(b, a), 1e-5) << (mask.defined() ? "padded" : "causal");
    // A loss over the positions that are not padding, as every loss here is: a fully masked row
    // averages all values in both, but their derivatives there differ (eager backpropagates
    // through scores the mask's minimum has absorbed).
    const auto keep = (mask.defined() ? mask : torch::ones({2, 24})).unsqueeze(-1);
    (a.square() * keep).mean().backward();
    (b.square() * keep).mean().backward();
    for (const auto& p : eager->named_parameters()) {
      if (!p.value().grad().defined()) continue;
      EXPECT_LE(max_relative(sdpa->named_parameters()[p.key()].grad(), p.value().grad()), 1e-4)
          << p.key() << (mask.defined() ? " padded" : " causal");
    }
  }
}

// train.recompute_layers: each layer keeps its input and runs again in backward (the dispatch's
// one read to the host happens twice per MoE layer). The loss, the router losses and every
// gradient are the ones without recomputation, with the routers alone training (the first
// layer's input needs no gradient then) and with every parameter; and without gradients
// (evaluation) nothing is recomputed.
TEST(Qwen2MoeModel, RecomputedLayersGiveTheSameLossAndGradients) {
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.num_hidden_layers = 3;
  config::RouterConfig router;
  router.set_aux_loss_coef(0.05f);
  router.set_z_loss_coef(0.01f);
  auto build = [&](bool recompute, bool routers_only) {
    torch::manual_seed(21);
    Qwen2MoeForCausalLM m(
        Qwen2MoeOptions(cfg, single_process_groups()).router(router).recompute_layers(recompute));
    if (routers_only) train_only_routers(m);
    return m;
  };
  torch::manual_seed(22);
  const auto ids = torch::randint(512, {2, 16});
  for (bool routers_only : {true, false}) {
    SCOPED_TRACE(routers_only ? "routers only" : "all parameters");
    auto plain = build(false, routers_only), again = build(true, routers_only);
    auto loss = [&](Qwen2MoeForCausalLM& m, int64_t& reads) {
      const int64_t before = host_reads();
      auto out = m->forward(ids);
      auto l = out.logits.square().mean() + out.router_loss;
      l.backward();
      reads = host_reads() - before;
      EXPECT_EQ(out.moe.size(), 3u);
      EXPECT_GT(out.router_loss.item<double>(), 0);
      return l.item<double>();
    };
    int64_t plain_reads = 0, again_reads = 0;
    EXPECT_EQ(loss(plain, plain_reads), loss(again, again_reads));
    EXPECT_EQ(plain_reads, 3);
    EXPECT_EQ(again_reads, 6);
    int checked = 0;
    for (const auto& p : plain->named_parameters()) {
      const auto& g = p.value().grad();
      const auto& h = again->named_parameters()[p.key()].grad();
      ASSERT_EQ(g.defined(), h.defined()) << p.key();
      if (!g.defined()) continue;
      EXPECT_TRUE(torch::allclose(h, g, 1e-6, 1e-9)) << p.key();
      ++checked;
    }
    EXPECT_EQ(checked, routers_only ? 3 : int(plain->parameters().size()));
    torch::NoGradGuard no_grad;
    const int64_t before = host_reads();
    again->forward(ids);
    EXPECT_EQ(host_reads() - before, 3);
  }
}

namespace {

// Weights a plain and a recomputed int4 model (3 tiny layers, routers trained) decode: in one
// forward without gradients, and in one training step of each.
struct DecodeCounts {
  int64_t one_pass = 0, plain_step = 0, recomputed_step = 0;
};

// Runs both models on one batch with `gemm` experts and checks that the recomputed step's loss
// equals the plain one's bit for bit and its three router gradients agree to 1e-6.
DecodeCounts recomputed_int4_step(GroupedGemm gemm) {
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.num_hidden_layers = 3;
  config::QuantConfig int4;
  int4.set_experts(config::INT4);
  int4.set_group_size(32);
  torch::manual_seed(23);
  const auto ids = torch::randint(512, {2, 16});
  auto build = [&](bool recompute) {
    torch::manual_seed(24);
    Qwen2MoeForCausalLM m(Qwen2MoeOptions(cfg, single_process_groups())
                              .quant(int4)
                              .gemm(gemm)
                              .recompute_layers(recompute));
    train_only_routers(m);
    return m;
  };
  auto plain = build(false), again = build(true);
  DecodeCounts counts;
  counts.one_pass = experts_dequantized();
  {
    torch::NoGradGuard no_grad;
    plain->forward(ids);
  }
  counts.one_pass = experts_dequantized() - counts.one_pass;
  auto step = [&](Qwen2MoeForCausalLM& m, int64_t& decoded) {
    const int64_t before = experts_dequantized();
    auto out = m->forward(ids);
    auto loss = out.logits.square().mean() + out.router_loss;
    loss.backward();
    decoded = experts_dequantized() - before;
    return loss.item<double>();
  };
  EXPECT_EQ(step(plain, counts.plain_step), step(again, counts.recomputed_step));
  int checked = 0;
  for (const auto& p : plain->named_parameters()) {
    if (!p.value().grad().defined()) continue;
    const auto& h = again->named_parameters()[p.key()].grad();
    EXPECT_TRUE(h.defined()) << p.key();
    if (h.defined()) EXPECT_TRUE(torch::allclose(h, p.value().grad(), 1e-6, 1e-9)) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, 3);
  return counts;
}

}  // namespace

// Quantized experts under recomputation: the recomputed forward keeps the weights it dequantised
// for the backward that follows, so a step dequantises each weight twice (forward, recomputed
// forward), not three times; the plain run dequantises in forward and backward. The losses and
// router gradients are those of the plain run. Both expert paths: the grouped GEMM (the GPU's,
// here forced on the CPU) dequantises whole banks, the slice loop each expert with rows.
TEST(Qwen2MoeModel, RecomputedQuantizedLayersDequantiseEachWeightTwicePerStep) {
  // Dequantised weights, which a recomputed forward can keep; the fused CPU path at a few rows
  // keeps nothing, and decodes in each pass (the next test).
  CpuQuantGemmScope dequantise(CpuQuantGemm::kDequantise);
  const int64_t experts = Qwen2MoeConfig::preset("tiny").num_experts;
  for (auto gemm : {GroupedGemm::kGroupedMm, GroupedGemm::kSliceLoop}) {
    SCOPED_TRACE(gemm == GroupedGemm::kGroupedMm ? "grouped GEMM" : "slice loop");
    const auto c = recomputed_int4_step(gemm);
    if (gemm == GroupedGemm::kGroupedMm) EXPECT_EQ(c.one_pass, 3 * 2 * experts);
    EXPECT_GT(c.one_pass, 0);
    // The plain backward dequantises each layer's weights but the first's: the first layer's
    // input is the frozen embedding's output, so its experts' input gradient reaches nothing
    // trainable. The recomputed backward dequantises none.
    if (gemm == GroupedGemm::kGroupedMm) EXPECT_EQ(c.plain_step, c.one_pass + 2 * 2 * experts);
    EXPECT_GT(c.plain_step, c.one_pass);
    EXPECT_EQ(c.recomputed_step, 2 * c.one_pass);
  }
}

// The fused CPU path keeps nothing for backward, so a recomputed step decodes each weight three
// times (forward, recomputed forward, backward) where the dequantise path does twice; the loss
// and the router gradients are still the plain run's.
TEST(Qwen2MoeModel, RecomputedQuantizedLayersOnTheFusedCpuPathMatchThePlainRun) {
  CpuQuantGemmScope fused(CpuQuantGemm::kFused);
  const auto c = recomputed_int4_step(GroupedGemm::kSliceLoop);
  ASSERT_GT(c.one_pass, 0);
  // The plain backward decodes every layer's weights but the first's (its input gradient reaches
  // nothing trainable); the recomputed one decodes those again after the recomputed forward.
  EXPECT_EQ(c.recomputed_step, c.plain_step + c.one_pass);
}

// On a GPU, kAuto is SDPA: in bf16 it follows eager to bf16 rounding, and keeps no S x S
// probabilities for backward (eager keeps fp32 and bf16 copies: 6 bytes per head and key pair).
TEST(Qwen2MoeGpu, SdpaFollowsEagerInBf16AndKeepsNoAttentionProbabilities) {
#ifndef SWITCHYARD_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto [eager, sdpa] = eager_and_sdpa(cuda);
  Qwen2MoeForCausalLM automatic(
      Qwen2MoeOptions(Qwen2MoeConfig::preset("tiny"), single_process_groups()));
  EXPECT_EQ(automatic->layers()[0]->self_attn->kernel_on(cuda), AttentionKernel::kSdpa);
  eager->to(torch::kBFloat16);
  sdpa->to(torch::kBFloat16);
  torch::manual_seed(13);
  const int64_t B = 2, S = 1024;
  const auto ids = torch::randint(512, {B, S}).to(cuda);
  auto run = [&](Qwen2MoeForCausalLM& m, torch::Tensor& logits) {
    return peak_extra_bytes(
        [&] {
          auto out = m->forward(ids).logits;
          out.to(torch::kFloat).square().mean().backward();
          logits = out.detach();
        },
        cuda);
  };
  torch::Tensor a, b;
  const int64_t eager_peak = run(eager, a), sdpa_peak = run(sdpa, b);
  EXPECT_LE(max_relative(b, a), 3e-2);
  // Two layers, 4 heads: eager keeps 2 x 4 x S x S x 6 bytes more (100 MB at S = 1024).
  const double probabilities = 2.0 * B * 4 * double(S) * double(S) * 6;
  EXPECT_GT(double(eager_peak - sdpa_peak), 0.5 * probabilities)
      << eager_peak << " vs " << sdpa_peak << " bytes";
#endif
}

// On a GPU under bf16 autocast, recomputation keeps each layer's input instead of its
// activations: an 8-layer forward + backward peaks less than half as high above what was
// allocated before it, with the same loss (the forward runs the same kernels).
TEST(Qwen2MoeGpu, RecomputedLayersPeakLessThanHalfWithTheSameLoss) {
#ifndef SWITCHYARD_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.num_hidden_layers = 8;
  auto build = [&](bool recompute) {
    torch::manual_seed(23);
    Qwen2MoeForCausalLM m(
        Qwen2MoeOptions(cfg, single_process_groups()).recompute_layers(recompute));
    m->to(cuda);
    return m;
  };
  auto plain = build(false), again = build(true);
  torch::manual_seed(24);
  const auto ids = torch::randint(512, {4, 512}).to(cuda);
  auto run = [&](Qwen2MoeForCausalLM& m, double& loss) {
    return peak_extra_bytes(
        [&] {
          torch::Tensor l;
          {
            AutocastScope amp(cuda, true);
            l = m->forward(ids).logits.to(torch::kFloat).square().mean();
          }
          l.backward();
          loss = l.item<double>();
        },
        cuda);
  };
  double a = 0, b = 0;
  const int64_t plain_peak = run(plain, a), again_peak = run(again, b);
  EXPECT_NEAR(b, a, 1e-5 * std::abs(a));
  EXPECT_LT(double(again_peak), 0.5 * double(plain_peak))
      << again_peak << " vs " << plain_peak << " bytes";
#endif
}

// The whole model on a GPU under bf16 autocast, int4 experts and recomputed layers too: the host
// waits for the device once per MoE layer and forward (the dispatch's counts), nothing else, in
// forward or backward, on any thread (every synchronising CUDA call the profiler sees).
TEST(Qwen2MoeGpu, ForwardAndBackwardWaitForTheDeviceOncePerMoeLayerForward) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.num_hidden_layers = 3;
  config::QuantConfig int4;
  int4.set_experts(config::INT4);
  int4.set_group_size(32);
  for (bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "recomputed, int4 experts" : "bf16 experts");
    torch::manual_seed(25);
    Qwen2MoeForCausalLM m(Qwen2MoeOptions(cfg, single_process_groups())
                              .quant(recompute ? int4 : config::QuantConfig())
                              .recompute_layers(recompute));
    m->to(cuda);
    train_only_routers(m);
    const auto ids = torch::randint(512, {2, 256}).to(cuda);
    auto step = [&] {
      torch::Tensor loss;
      {
        AutocastScope amp(cuda, true);
        auto out = m->forward(ids);
        loss = out.logits.to(torch::kFloat).square().mean() + out.router_loss;
      }
      loss.backward();
    };
    step();  // warm
    const int64_t reads = host_reads();
    const KernelProfile p = profile_kernels(step, cuda);
    ASSERT_FALSE(p.kernels.empty()) << "the profiler saw no kernels: no waits to count";
    const int64_t forwards = recompute ? 2 : 1;
    EXPECT_EQ(host_reads() - reads, 3 * forwards);
    EXPECT_EQ(p.host_syncs, 3 * forwards);
  }
}

TEST(Qwen2MoeConfigTest, ReadsHfFieldsAndRefusesWhatIsNotImplemented) {
  auto c = Qwen2MoeConfig::from_json(
      R"({"model_type":"qwen2_moe","hidden_size":64,"num_attention_heads":4,
          "num_key_value_heads":2,"rope_parameters":{"rope_theta":500.0,"rope_type":"default"},
          "torch_dtype":"float32","mlp_only_layers":[0,2],"decoder_sparse_step":1,
          "num_experts":6,"num_experts_per_tok":2})",
      "cfg.json");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.attention_head_dim(), 16);
  EXPECT_EQ(c.rope_theta, 500.0);
  EXPECT_EQ(c.dtype, torch::kFloat);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_EQ(
      Qwen2MoeConfig::from_json(R"({"rope_theta": 7.0, "dtype": "bfloat16"})", "x").rope_theta,
      7.0);
  auto expect_error = [](const std::string& json, const std::string& want) {
    try {
      Qwen2MoeConfig::from_json(json, "cfg.json");
      ADD_FAILURE() << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"model_type":"bert"})", "model_type");
  expect_error(R"({"hidden_size":"big"})", "hidden_size: must be an integer");
  expect_error(R"({"num_attention_heads":4,"num_key_value_heads":3})", "num_key_value_heads");
  expect_error(R"({"rope_scaling":{"type":"yarn"}})", "rope_scaling");
  expect_error(R"({"use_sliding_window":true})", "sliding");
  expect_error(R"({"hidden_act":"gelu"})", "hidden_act");
  expect_error(R"({"num_experts":4,"num_experts_per_tok":5})", "num_experts_per_tok");
  expect_error("{not json", "invalid JSON");
}
