// `switchyard plan`'s model: parameter and byte counts against real models built the way
// training builds them, the memory and time equations against hand-computed values for a small
// model, and the refusals.
#include <gtest/gtest.h>

#include <sstream>

#include "models/qwen2_moe.h"
#include "parallel/placement.h"
#include "parallel/process_groups.h"
#include "plan/cluster_plan.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"
#include "trainer/trainer.h"

namespace switchyard {
namespace {

using test::expect_error;

struct Counted {
  int64_t replicated = 0, router = 0, experts = 0, replicated_bytes = 0, expert_bytes = 0;
  int64_t trainable_replicated = 0, trainable_experts = 0;
};

// What the model really holds, by the module paths: routed experts under "moe.experts.", routers
// under "moe.router."; quantized codes, scales and zeros are buffers of the expert banks.
Counted count_model(Qwen2MoeForCausalLM& model) {
  Counted c;
  for (const auto& item : model->named_parameters()) {
    const auto& p = item.value();
    if (p.numel() == 0) continue;  // a quantized bank's placeholders
    const bool expert = item.key().find(".moe.experts.") != std::string::npos;
    const int64_t bytes = p.numel() * int64_t(p.element_size());
    (expert ? c.experts : c.replicated) += p.numel();
    (expert ? c.expert_bytes : c.replicated_bytes) += bytes;
    if (item.key().find(".moe.router.") != std::string::npos) c.router += p.numel();
    if (p.requires_grad()) (expert ? c.trainable_experts : c.trainable_replicated) += p.numel();
  }
  for (const auto& item : model->named_buffers()) {
    const auto& b = item.value();
    const bool codes = item.key().find("w_in_") != std::string::npos ||
                       item.key().find("w_out_") != std::string::npos;
    if (!codes) continue;
    const int64_t bytes = b.numel() * int64_t(b.element_size());
    const bool expert = item.key().find(".moe.experts.") != std::string::npos;
    (expert ? c.expert_bytes : c.replicated_bytes) += bytes;
  }
  return c;
}

struct Case {
  std::string name;
  config::RouterConfig router;
  config::QuantConfig quant;
  bool routers_only = true;
  bool dense_layer = false;  ///< layer 1 a dense MLP (mlp_only_layers)
  int64_t redundant = 0;     ///< copies of expert 0 in the single process's bank
};

std::vector<Case> cases() {
  std::vector<Case> out;
  Case linear{"linear, float, full training"};
  linear.routers_only = false;
  out.push_back(linear);
  Case mlp{"mlp router, int4 asymmetric group 64, routers only, a dense layer"};
  mlp.router.mutable_mlp()->set_hidden(48);
  mlp.quant.set_experts(config::INT4);
  mlp.quant.set_group_size(64);
  mlp.quant.set_symmetric(false);
  mlp.dense_layer = true;
  out.push_back(mlp);
  Case hadamard{"mlp_hadamard router, int8 with the shared expert, full training"};
  hadamard.router.mutable_mlp_hadamard()->set_hidden(32);
  hadamard.quant.set_experts(config::INT8);
  hadamard.quant.set_shared_expert(true);
  hadamard.routers_only = false;
  out.push_back(hadamard);
  Case replicas{"attention router, int4 symmetric, two replicas"};
  replicas.router.mutable_attention()->set_num_heads(2);
  replicas.quant.set_experts(config::INT4);
  replicas.redundant = 2;
  out.push_back(replicas);
  return out;
}

// The planner's per-rank counts equal those of the model training builds: every router kind
// tried here, float and quantized experts (int8, int4 with and without zeros, the shared expert
// quantized), routers-only and full training (what Trainer marks trainable), a dense layer, and
// replicas of an expert.
TEST(PlanModel, ParameterCountsEqualTheBuiltModels) {
  for (const Case& k : cases()) {
    SCOPED_TRACE(k.name);
    Qwen2MoeConfig cfg = Qwen2MoeConfig::preset("tiny");
    cfg.dtype = torch::kFloat;
    if (k.dense_layer) cfg.mlp_only_layers = {1};
    Qwen2MoeOptions options(cfg, single_process_groups());
    options.router(k.router).quant(k.quant);
    if (k.redundant > 0) {
      Placement p = Placement::contiguous(cfg.num_hidden_layers - (k.dense_layer ? 1 : 0),
                                          cfg.num_experts, 1);
      for (auto& layer : p.layers)
        for (int64_t r = 0; r < k.redundant; ++r) layer.slots[0].push_back(0);
      p.slots_per_rank = cfg.num_experts + k.redundant;
      options.placement(std::make_shared<const Placement>(p));
    }
    Qwen2MoeForCausalLM model(options);
    config::TrainConfig t;
    t.set_routers_only(k.routers_only);
    Trainer trainer(TaskModel::causal_lm(model), single_process_groups(), t);  // marks trainable
    const Counted got = count_model(model);

    PlanWorkload w;
    w.model = cfg;
    w.router = k.router;
    w.expert_quant = quant_options(k.quant);
    w.quantize_shared_expert = k.quant.experts() != config::QUANT_NONE && k.quant.shared_expert();
    w.routers_only = k.routers_only;
    w.redundant_slots = k.redundant;
    w.weight_bytes = 4;
    const RankParameters want = rank_parameters(w, 1);
    EXPECT_EQ(want.router, got.router);
    EXPECT_EQ(want.replicated_bytes, got.replicated_bytes);
    EXPECT_EQ(want.expert_bytes, got.expert_bytes);
    if (k.quant.experts() == config::QUANT_NONE) EXPECT_EQ(want.experts, got.experts);
    if (!w.quantize_shared_expert) EXPECT_EQ(want.replicated, got.replicated);
    EXPECT_EQ(want.trainable_replicated, got.trainable_replicated);
    EXPECT_EQ(want.trainable_experts, got.trainable_experts);
    EXPECT_EQ(want.expert_slots, (cfg.num_experts + k.redundant) * w.moe_layers());
  }
}

// A model small enough to follow by hand: hidden 8, 2 heads of 4 (kv 2), 2 layers (both MoE),
// 4 experts top-2 of width 4, shared expert 8, vocabulary 16; EP 2 on a 2-device node.
PlanWorkload hand_workload() {
  PlanWorkload w;
  Qwen2MoeConfig& c = w.model;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.moe_intermediate_size = 4;
  c.shared_expert_intermediate_size = 8;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  w.routers_only = true;
  w.micro_batch = 1;
  w.seq_len = 4;
  w.accumulation = 1;
  w.weight_bytes = 4;
  w.activation_bytes = 4;
  w.rank_imbalance = {1.5};
  return w;
}

ClusterSpec two_devices() {
  ClusterSpec s = cluster_preset("8xh100");
  s.nodes = 1;
  s.devices_per_node = 2;
  s.tflops_fp32 = 1e-6;           // 1 MFLOP/s: the FLOPs read as microseconds
  s.memory_bandwidth_gbs = 1e-3;  // 1 MB/s
  s.intra_node_gbs = 1e-6;        // 1 kB/s
  s.intra_node_latency_us = 0;
  return s;
}

TEST(PlanModel, MemoryAndTimeOfASmallModelByHand) {
  const LayoutPlan p = plan_layout(hand_workload(), two_devices(), 2);
  EXPECT_EQ(p.dp, 1);
  // Elements: embeddings 16*8 = 128, LM head 128, final norm 8; per layer norms 16, q/k/v
  // 3 * (8*8 + 8) = 216, o 64, linear router 4*8 = 32, shared expert 3*8*8 = 192 + gate 8.
  // 264 + 2 * 528 = 1320 replicated, 64 of them routers; experts 2 slots of 3*8*4 = 96 per layer.
  EXPECT_EQ(p.parameters.replicated, 1320);
  EXPECT_EQ(p.parameters.router, 64);
  EXPECT_EQ(p.parameters.experts, 384);
  const MemoryEstimate& m = p.memory;
  EXPECT_DOUBLE_EQ(m.replicated_weights, 1320 * 4);
  EXPECT_DOUBLE_EQ(m.expert_weights, 384 * 4);
  EXPECT_DOUBLE_EQ(m.gradients, 64 * 4);
  EXPECT_DOUBLE_EQ(m.optimizer, 64 * 8);
  // Per token and layer: two norms of 8*8 = 64; attention 4*(4*8 + 4*8) + 2 heads * 4 = 264 (on
  // GPUs SDPA keeps one fp32 log-sum-exp per head); router 8*4 = 32, experts 1.5 * 2 * 4*4*4 =
  // 192, shared 4*(4*8 + 1) = 132. 748 per layer, 1496 per token, 4 tokens, plus the
  // embeddings' 4 * 8 * 4 = 128.
  EXPECT_DOUBLE_EQ(m.activations, 1496 * 4 + 128);
  // Attention per token and layer: projections 2*8*(8 + 2*8) + 2*8*8 = 512 FLOPs, forward and
  // input gradient (routers only); the core 4 * 4 positions * 8 = 128, 3.5 times (SDPA's
  // backward recomputes QK^T). 2 layers, 4 tokens at 1 MFLOP/s.
  EXPECT_NEAR(p.time.attention, (2 * 512 + 3.5 * 128) * 2 * 4 / 1e6, 1e-12);
  // Ranks sharing a node (CPUs) run eager attention: one fp32 row of 4 probabilities per head
  // (2 * 4 * 4 = 32 bytes instead of 8), the core's backward twice its forward, at half the rate.
  ClusterSpec cpu_like = two_devices();
  cpu_like.ranks_share_node = true;
  const LayoutPlan eager = plan_layout(hand_workload(), cpu_like, 2);
  EXPECT_DOUBLE_EQ(eager.memory.activations, (1496 + 2 * 24) * 4 + 128);
  EXPECT_NEAR(eager.time.attention, (2 * 512 + 3 * 128) * 2 * 4 / (1e6 / 2), 1e-12);
  // Rows of 8 fp32 values, 2 per token: sent and combined once, received and returned 1.5 times.
  EXPECT_DOUBLE_EQ(m.exchange, 2 * 4 * 2 * 8 * (2 + 3.0) * 4);
  // A frozen head on GPUs is fused (models/lm_loss.h): a chunk of rows' logits in the
  // activations' dtype beside the loss's fp32 chunk, here all 4 rows of 16 values, and the
  // input's gradient, 4 x 8 fp32.
  EXPECT_DOUBLE_EQ(m.logits, 2 * 4 * 4 * 16 + 4 * 4 * 8);
  // A trained head keeps the logits and their gradient, beside the loss's fp32 chunk.
  PlanWorkload trained = hand_workload();
  trained.routers_only = false;
  const double logits_and_chunk = 2 * 4 * 4 * 16 + 4 * 4 * 16;
  EXPECT_DOUBLE_EQ(plan_layout(trained, two_devices(), 2).memory.logits, logits_and_chunk);
  // Under bf16 autocast (fp32 weights, 2-byte activations) either head also holds its weight
  // cast to bf16, 16 x 8 x 2 bytes: the fused one beside a chunk of 4 rows in bf16 and fp32
  // and the input's gradient in bf16.
  PlanWorkload autocast = hand_workload();
  autocast.activation_bytes = 2;
  EXPECT_DOUBLE_EQ(plan_layout(autocast, two_devices(), 2).memory.logits,
                   4 * 4 * 16 * (1 + 0.5) + 2 * 4 * 8 + 16 * 8 * 2);
  // One exchange sends half of 4 tokens * 2 rows * 32 bytes (the other half stays).
  EXPECT_DOUBLE_EQ(p.time.all_to_all_bytes_per_layer, 128);
  // Four exchanges per layer, two layers, 1.5 * 128 bytes at 1 kB/s each.
  EXPECT_NEAR(p.time.all_to_all, 8 * 1.5 * 128 / 1e3, 1e-12);
  // Experts: forward and input gradient, 1.5 * 2 * 2*3*8*4 FLOPs per token and layer, 8 token-
  // layers, at 1 MFLOP/s.
  EXPECT_NEAR(p.time.experts, 2 * 1.5 * 384 * 8 / 1e6, 1e-12);
  // LM head: 2 * 8 * 16 FLOPs per token, forward and input gradient, 4 tokens; and the logits
  // written and read back, and so is their gradient, at 1 MB/s (fused, a chunk at a time).
  EXPECT_NEAR(p.time.lm_head, 2 * 256 * 4 / 1e6 + 4 * logits_and_chunk / 1e6, 1e-9);
  // AdamW on 64 router weights: 3 * 4 + 16 bytes each at 1 MB/s.
  EXPECT_NEAR(p.time.optimizer, 64 * 28 / 1e6, 1e-12);
  // The routers' 256 bytes of gradients over the world of 2 (ring: 2 * 1/2 of them cross).
  EXPECT_NEAR(p.time.grad_allreduce, 256 / 1e3, 1e-12);
  // The LM head's own measured rate (bench rates: the head and the loss, timed together) is the
  // whole term: the 2048 FLOPs at 4 MFLOP/s, no separate traffic of the logits.
  ClusterSpec head = two_devices();
  head.lm_head_tflops = 4e-6;
  const LayoutPlan h = plan_layout(hand_workload(), head, 2);
  EXPECT_NEAR(h.time.lm_head, 2 * 256 * 4 / 4e6, 1e-12);
  EXPECT_DOUBLE_EQ(h.time.experts, p.time.experts);
  head.lm_head_tflops = -1;
  expect_error([&] { head.validate(); }, {"lm_head_tflops", "must not be negative"});
}

// train.recompute_layers, by hand on the small model: autograd keeps each layer's input (8 fp32
// values per token and layer) and, while backward recomputes one, that layer's activations
// (748 bytes per token) and exchange buffers (320); the layers' forward runs once more.
TEST(PlanModel, RecomputedLayersKeepTheirInputsAndRunTheForwardAgain) {
  PlanWorkload w = hand_workload();
  const LayoutPlan plain = plan_layout(w, two_devices(), 2);
  w.recompute_layers = true;
  const LayoutPlan p = plan_layout(w, two_devices(), 2);
  EXPECT_DOUBLE_EQ(p.memory.activations, (2 * 8 * 4 + 748) * 4 + 128);
  EXPECT_DOUBLE_EQ(p.memory.exchange, 320 * 4);
  // Attention: projections 512 and core 128 FLOPs per token and layer once more.
  EXPECT_NEAR(p.time.attention - plain.time.attention, (512 + 128) * 2 * 4 / 1e6, 1e-12);
  // Experts: 1.5 * 384 forward FLOPs per token and layer once more, 8 token-layers.
  EXPECT_NEAR(p.time.experts - plain.time.experts, 1.5 * 384 * 8 / 1e6, 1e-12);
  // Dispatch and combine forward again: 6 exchanges per layer instead of 4.
  EXPECT_NEAR(p.time.all_to_all, 1.5 * plain.time.all_to_all, 1e-12);
  // The router (3 passes -> 4) and the shared expert (2 -> 3), and the kept bytes written and
  // read once more (the full activations', 2 of the 4 passes again).
  const double kept = plain.memory.activations + plain.memory.exchange;
  EXPECT_NEAR(p.time.rest - plain.time.rest, (64 + 384) * 2 * 4 / 1e6 + 2 * kept / 1e6, 1e-9);
  EXPECT_EQ(p.time.lm_head, plain.time.lm_head);
}

// The rates `switchyard bench rates` measures: a fixed cost per decoder layer, the traffic of
// what autograd keeps (written and read back, for the values and their gradients), and the
// optimizer's time per trained parameter; all of them per rank, so ranks sharing a node take
// them times the ranks.
TEST(PlanModel, MeasuredRatesAddLayerCostKeptTrafficAndOptimizerTime) {
  const LayoutPlan base = plan_layout(hand_workload(), two_devices(), 2);
  ClusterSpec measured = two_devices();
  measured.layer_overhead_ms = 2;
  measured.optimizer_ns_per_param = 1000;
  const LayoutPlan p = plan_layout(hand_workload(), measured, 2);
  const MemoryEstimate& m = p.memory;
  const double kept = m.activations + m.exchange;  // the logits' traffic is the LM head's
  // 2 layers x 2 ms.
  EXPECT_NEAR(p.time.rest - base.time.rest, 2 * 2e-3, 1e-12);
  // The kept bytes four times at the memory rate: at 2 MB/s instead of 1, half the time.
  ClusterSpec faster = two_devices();
  faster.memory_bandwidth_gbs = 2e-3;
  const double traffic = 4 * kept / 1e6;
  const LayoutPlan fast = plan_layout(hand_workload(), faster, 2);
  EXPECT_NEAR(base.time.rest - fast.time.rest, traffic / 2, 1e-9 * traffic);
  const double logits_traffic = 4 * (2 * 4 * 4 * 16 + 4 * 4 * 16) / 1e6;  // as in the test above
  EXPECT_NEAR(base.time.lm_head - fast.time.lm_head, logits_traffic / 2, 1e-9 * logits_traffic);
  EXPECT_NEAR(p.time.optimizer, 64 * 1000e-9, 1e-15);  // the 64 router weights
  EXPECT_DOUBLE_EQ(p.time.experts, base.time.experts);
  // Two ranks sharing the node: every rate halves, every per-rank time doubles (the layer cost
  // and the optimizer here; the kept bytes differ, since such ranks run eager attention).
  ClusterSpec shared = measured, shared_base = two_devices();
  shared.ranks_share_node = shared_base.ranks_share_node = true;
  const LayoutPlan s = plan_layout(hand_workload(), shared, 2);
  const LayoutPlan sb = plan_layout(hand_workload(), shared_base, 2);
  EXPECT_NEAR(s.time.rest - sb.time.rest, 2 * (p.time.rest - base.time.rest), 1e-12);
  EXPECT_NEAR(s.time.optimizer, 2 * p.time.optimizer, 1e-15);
  ClusterSpec shared_fast = shared_base;
  shared_fast.memory_bandwidth_gbs = 2e-3;
  const double shared_traffic = 4 * (s.memory.activations + s.memory.exchange) / (1e6 / 2);
  EXPECT_NEAR(sb.time.rest - plan_layout(hand_workload(), shared_fast, 2).time.rest,
              shared_traffic / 2, 1e-9 * shared_traffic);
}

// The expert bank's measured efficiency divides the experts' GEMM time: forward and input
// gradient by expert_gemm_efficiency, the weight gradients (when experts train) by
// expert_wgrad_efficiency.
TEST(PlanModel, ExpertBankEfficienciesDivideTheExpertTime) {
  const LayoutPlan base = plan_layout(hand_workload(), two_devices(), 2);
  ClusterSpec slow = two_devices();
  slow.expert_gemm_efficiency = 0.5;
  slow.expert_wgrad_efficiency = 0.25;
  EXPECT_NEAR(plan_layout(hand_workload(), slow, 2).time.experts, 2 * base.time.experts, 1e-15);
  PlanWorkload full = hand_workload();
  full.routers_only = false;
  const double trained = plan_layout(full, two_devices(), 2).time.experts;
  // Forward + input gradient is 2/3 of the trained experts' FLOPs, the weight gradient 1/3.
  EXPECT_NEAR(plan_layout(full, slow, 2).time.experts, trained * (2.0 / 3 * 2 + 1.0 / 3 * 4),
              1e-12 * trained);
  slow.expert_gemm_efficiency = 1.5;
  EXPECT_THROW(slow.validate(), ConfigError);
}

// Ranks sharing a node (CPUs) split its memory and rates, and peak while loading a checkpoint:
// runtime + weights as stored + every weight read in the checkpoint's dtype.
TEST(PlanModel, RanksSharingANodePeakWhileLoading) {
  PlanWorkload w = hand_workload();
  w.checkpoint_bytes = 2;
  ClusterSpec node = two_devices();
  node.ranks_share_node = true;
  node.runtime_gb = 1e-6;  // 1000 bytes
  const LayoutPlan p = plan_layout(w, node, 2);
  // 1000 + 1320 * 4 + 384 * 4 + (1320 + 384) * 2
  EXPECT_DOUBLE_EQ(p.memory.loading, 1000 + 5280 + 1536 + 3408);
  EXPECT_DOUBLE_EQ(p.memory.runtime, 1000);
  EXPECT_DOUBLE_EQ(p.memory.peak(), std::max(p.memory.total(), p.memory.loading));
  EXPECT_DOUBLE_EQ(p.capacity_bytes, node.memory_gb * 1e9 / 2);
  // Half a node's GEMM rate each: the expert time doubles.
  EXPECT_NEAR(p.time.experts, 2 * (2 * 1.5 * 384 * 8 / 1e6), 1e-12);
  // A GPTQ checkpoint (group 4) stores its decoder linears packed, 0.5 + 2.5 / 4 bytes per
  // weight: this rank's 384 expert weights and per layer q, k, v, o (256) and the shared expert
  // (192), 1280 in all, are read at 1.125 bytes instead of 2.
  w.checkpoint_gptq_group = 4;
  EXPECT_DOUBLE_EQ(plan_layout(w, node, 2).memory.loading,
                   1000 + 5280 + 1536 + 3408 - 1280 * (2 - 1.125));
  w.checkpoint_gptq_group = 0;
  w.checkpoint_bytes = 0;  // built from scratch: nothing read
  EXPECT_DOUBLE_EQ(plan_layout(w, node, 2).memory.loading, 0);
}

// The workloads launch/plan_calibration.sh trains (docs/planning.md, "Calibration").
// medium: the 503 M-parameter model it builds (hidden 1024, 8 layers, 16 experts top-4), fully
// trained in fp32 from scratch, or with int4 experts and MLP-Hadamard routers fine-tuned from its
// fp32 checkpoint; 4 x 128 tokens per rank.
PlanWorkload medium_workload(bool full) {
  PlanWorkload w;
  Qwen2MoeConfig& c = w.model;
  c.vocab_size = 8192;
  c.hidden_size = 1024;
  c.intermediate_size = 2816;
  c.moe_intermediate_size = 1024;
  c.shared_expert_intermediate_size = 2048;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.num_experts = 16;
  c.num_experts_per_tok = 4;
  w.micro_batch = 4;
  w.seq_len = 128;
  w.weight_bytes = w.activation_bytes = 4;
  w.routers_only = !full;
  if (!full) {
    w.router.mutable_mlp_hadamard()->set_hidden(64);
    w.expert_quant = QuantOptions().kind(QuantKind::kInt4).group_size(128).symmetric(true);
    w.checkpoint_bytes = 4;
  }
  return w;
}

// small: the quickstart base (hidden 128, 4 layers, 8 experts top-2) with its fine-tune config:
// int4 experts, MLP-Hadamard routers alone, fp32, 4 x 128 tokens per rank.
PlanWorkload small_workload() {
  PlanWorkload w;
  Qwen2MoeConfig& c = w.model;
  c.vocab_size = 8192;
  c.hidden_size = 128;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 128;
  c.shared_expert_intermediate_size = 256;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  w.micro_batch = 4;
  w.seq_len = 128;
  w.weight_bytes = w.activation_bytes = 4;
  w.routers_only = true;
  w.router.mutable_mlp_hadamard()->set_hidden(64);
  w.expert_quant = QuantOptions().kind(QuantKind::kInt4).group_size(128).symmetric(true);
  w.checkpoint_bytes = 4;
  return w;
}

// a27b: Qwen1.5-MoE-A2.7B from a GPTQ-Int4 checkpoint in the hub layout, MLP-Hadamard routers
// fine-tuned on int4 experts, bf16, 1 x 128 tokens per rank.
PlanWorkload a27b_workload() {
  PlanWorkload w;  // Qwen2MoeConfig's defaults are Qwen1.5-MoE-A2.7B
  w.micro_batch = 1;
  w.seq_len = 128;
  w.weight_bytes = w.activation_bytes = 2;
  w.routers_only = true;
  w.router.mutable_mlp_hadamard()->set_hidden(64);
  w.expert_quant = QuantOptions().kind(QuantKind::kInt4).group_size(128).symmetric(true);
  w.checkpoint_bytes = 2;  // fp16 non-linear tensors
  w.checkpoint_gptq_group = 128;
  return w;
}

// The `cpu` preset with one rank per EP rank on its node, as the calibration ran.
void expect_peak_within_ten_percent(PlanWorkload w, const std::vector<double>& imbalance, int ep,
                                    double measured_gb) {
  w.rank_imbalance = imbalance;
  ClusterSpec cpu = cluster_preset("cpu");
  cpu.devices_per_node = ep;
  const double predicted = plan_layout(w, cpu, ep).memory.peak() / 1e9;
  EXPECT_NEAR(predicted / measured_gb, 1.0, 0.10) << predicted << " GB predicted";
}

// Quantized experts in bf16 on a GPU take the grouped GEMM, which dequantises every local expert
// into one bank-sized weight per GEMM: that weight's bytes count once (the larger, gate and up
// rows), and the dequantisation time no longer shrinks with the share of experts that get rows.
// In fp32 (the slice loop, one expert at a time) neither holds.
TEST(PlanModel, QuantizedBf16ExpertsOnAGpuDequantiseTheWholeBank) {
  PlanWorkload w = small_workload();
  w.weight_bytes = w.activation_bytes = 2;
  const ClusterSpec gpu = cluster_preset("8xh100");
  const LayoutPlan at2 = plan_layout(w, gpu, 2);
  EXPECT_DOUBLE_EQ(at2.memory.dequantized, 4 * 2 * 128 * 128 * 2);  // 8 experts / EP 2
  EXPECT_NEAR(at2.memory.total() - plan_layout(w, gpu, 4).memory.total(),
              at2.memory.expert_weights / 2 + 2 * 2 * 128 * 128 * 2, 1e-6);
  const double all = at2.time.experts;
  w.active_expert_share = {0.25, 0.5, 1.0, 0.25};
  EXPECT_EQ(plan_layout(w, gpu, 2).time.experts, all);
  w.weight_bytes = w.activation_bytes = 4;
  const LayoutPlan fp32 = plan_layout(w, gpu, 2);
  EXPECT_EQ(fp32.memory.dequantized, 0);
  w.active_expert_share = {};
  EXPECT_GT(plan_layout(w, gpu, 2).time.experts, fp32.time.experts);
  w.weight_bytes = w.activation_bytes = 2;
  w.expert_quant = QuantOptions();  // float experts: no dequantisation
  EXPECT_EQ(plan_layout(w, gpu, 2).memory.dequantized, 0);
  // The CPU's ranks run the slice loop in bf16 too.
  w.expert_quant = QuantOptions().kind(QuantKind::kInt4).group_size(128);
  EXPECT_EQ(plan_layout(w, cluster_preset("cpu"), 2).memory.dequantized, 0);
}

// A recomputed layer keeps the weights its recomputed forward dequantised until its backward
// (models/weight_quant.h): all of its local experts' weights (3 I x H each, SwiGLU) at once, and
// as many dequantisations per step as without recomputation. The CPU's bf16 GEMMs dequantise in
// chunks and keep nothing: one more pass there, nothing kept.
TEST(PlanModel, RecomputedQuantizedLayersKeepTheirDequantisedWeights) {
  PlanWorkload w = small_workload();
  auto dequant_time = [&](const ClusterSpec& cluster, bool recompute) {
    w.recompute_layers = recompute;
    const double quantized = plan_layout(w, cluster, 2).time.experts;
    PlanWorkload plain = w;
    plain.expert_quant = QuantOptions();
    return quantized - plan_layout(plain, cluster, 2).time.experts;
  };
  for (int bytes : {2, 4}) {
    SCOPED_TRACE(bytes == 2 ? "bf16" : "fp32");
    w.weight_bytes = w.activation_bytes = bytes;
    const ClusterSpec gpu = cluster_preset("8xh100"), cpu = cluster_preset("cpu");
    const double gpu_plain = dequant_time(gpu, false), gpu_kept = dequant_time(gpu, true);
    EXPECT_GT(gpu_plain, 0);
    EXPECT_NEAR(gpu_kept, gpu_plain, 1e-9 * gpu_plain);
    EXPECT_DOUBLE_EQ(plan_layout(w, gpu, 2).memory.dequantized, 4.0 * 3 * 128 * 128 * bytes);
    const double cpu_plain = dequant_time(cpu, false), cpu_again = dequant_time(cpu, true);
    EXPECT_NEAR(cpu_again, bytes == 2 ? 1.5 * cpu_plain : cpu_plain, 1e-9 * cpu_plain);
    EXPECT_DOUBLE_EQ(plan_layout(w, cpu, 2).memory.dequantized,
                     bytes == 2 ? 0.0 : 4.0 * 3 * 128 * 128 * bytes);
  }
}

// At a few rows per busy expert the CPU's int4 GEMMs fuse (models/quantized_cpu_gemm.h): they
// multiply in fp32 whatever the rows' dtype, so the bf16 rate does not price them, and they keep
// no weight for a recomputed backward, even with fp32 rows (one more pass, nothing kept).
// Dequantised experts multiply in the rows' dtype, at its rate, as a float bank does, from the
// rows native GEMMs take (models/weight_quant.h); below them in fp32.
TEST(PlanModel, CpuInt4ExpertsFuseAtAFewRowsAndMultiplyInFp32There) {
  PlanWorkload w = small_workload();
  w.weight_bytes = w.activation_bytes = 2;
  ClusterSpec cpu = cluster_preset("cpu");
  const ClusterSpec same_rates = cpu;
  ClusterSpec fast_bf16 = cpu;
  fast_bf16.tflops_bf16 = 3 * cpu.tflops_fp32;
  // bf16 GEMMs' FLOPs of the experts (the float bank's and the dequantised one's) and the same
  // with only the dequantisation left: the difference is what tflops_bf16 divides.
  auto expert_gemms = [&](const PlanWorkload& workload, const ClusterSpec& cluster) {
    ClusterSpec no_gemms = cluster;
    no_gemms.tflops_fp32 = no_gemms.tflops_bf16 = 1e9;
    return plan_layout(workload, cluster, 2).time.experts -
           plan_layout(workload, no_gemms, 2).time.experts;
  };
  // 4 x 128 tokens x top-2 over 4 local experts at EP 2: 256 rows each, dequantised, in bf16.
  PlanWorkload plain = w;
  plain.expert_quant = QuantOptions();
  for (const PlanWorkload& bank : {w, plain}) {
    const double same = expert_gemms(bank, same_rates);
    EXPECT_GT(same, 0);
    EXPECT_NEAR(expert_gemms(bank, fast_bf16), same / 3, 1e-9 * same);
  }
  // One sequence of 32 tokens: 16 rows each, too many to fuse bf16 rows
  // (kFusedHalfQuantGemmMaxRows) and too few for native GEMMs: int4 and int8 dequantise into
  // fp32 GEMMs, and the bf16 rate does not matter.
  w.micro_batch = 1;
  w.seq_len = 32;
  for (const auto& quant :
       {w.expert_quant, QuantOptions().kind(QuantKind::kInt8), QuantOptions()}) {
    PlanWorkload few = w;
    few.expert_quant = quant;
    const double same = plan_layout(few, same_rates, 2).time.experts;
    if (quant.kind() == QuantKind::kNone)  // a float bank takes the bf16 rate at any rows
      EXPECT_LT(plan_layout(few, fast_bf16, 2).time.experts, same);
    else
      EXPECT_DOUBLE_EQ(plan_layout(few, fast_bf16, 2).time.experts, same);
  }

  // Recomputed with fp32 rows: at 256 rows per busy expert the weights are kept, at 16 (fused,
  // kFusedQuantGemmMaxRows) not.
  w.micro_batch = 4;
  w.seq_len = 128;
  w.weight_bytes = w.activation_bytes = 4;
  w.recompute_layers = true;
  EXPECT_DOUBLE_EQ(plan_layout(w, cpu, 2).memory.dequantized, 4.0 * 3 * 128 * 128 * 4);
  w.micro_batch = 1;
  w.seq_len = 32;
  auto dequant_time = [&](bool recompute) {
    w.recompute_layers = recompute;
    PlanWorkload floats = w;
    floats.expert_quant = QuantOptions();
    return plan_layout(w, cpu, 2).time.experts - plan_layout(floats, cpu, 2).time.experts;
  };
  const double plain_passes = dequant_time(false), recomputed = dequant_time(true);
  EXPECT_NEAR(recomputed, 1.5 * plain_passes, 1e-9 * plain_passes);
  EXPECT_EQ(plan_layout(w, cpu, 2).memory.dequantized, 0);
  // Half the experts busy: 32 rows each, above the fused path's limit, so kept again.
  w.active_expert_share = {0.5};
  EXPECT_DOUBLE_EQ(plan_layout(w, cpu, 2).memory.dequantized, 4.0 * 3 * 128 * 128 * 4);
  // int8 never fuses.
  w.active_expert_share = {};
  w.expert_quant = QuantOptions().kind(QuantKind::kInt8);
  EXPECT_GT(plan_layout(w, cpu, 2).memory.dequantized, 0);
}

// An expert without rows costs nothing (the bank skips it), so a quantized bank dequantises only
// the share of its experts that get rows: codes read, a weight written and read back by the
// GEMM, forward and backward, per active expert.
TEST(PlanModel, OnlyExpertsWithRowsAreDequantised) {
  PlanWorkload w = small_workload();
  const ClusterSpec cpu = cluster_preset("cpu");
  const RankParameters p = rank_parameters(w, 1);
  const double all = plan_layout(w, cpu, 1).time.experts;
  w.active_expert_share = {0.25, 0.5, 1.0, 0.25};  // mean 0.5
  const double some = plan_layout(w, cpu, 1).time.experts;
  const double mem_rate = cpu.memory_bandwidth_gbs * 1e9 / cpu.devices_per_node;
  const double dequant = 2 * (double(p.expert_bytes) + 2.0 * 4 * double(p.experts)) / mem_rate;
  EXPECT_NEAR(all - some, 0.5 * dequant, 1e-12 * all);
  // A measured dequantisation rate (bench rates) replaces the memory traffic: each active
  // expert's weights, forward and input gradient, at the node's rate shared by its ranks.
  ClusterSpec measured = cpu;
  measured.dequant_gweights_per_s = 2;
  const double at_rate = 2 * double(p.experts) / (2e9 / measured.devices_per_node);
  const double float_time = all - dequant;
  EXPECT_NEAR(plan_layout(w, measured, 1).time.experts, float_time + 0.5 * at_rate, 1e-12 * all);
  w.active_expert_share = {};
  EXPECT_NEAR(plan_layout(w, measured, 1).time.experts, float_time + at_rate, 1e-12 * all);
  w.active_expert_share = {0.25, 0.5, 1.0, 0.25};
  w.expert_quant = QuantOptions();  // float experts: nothing to dequantise
  const double float_all = plan_layout(w, cpu, 1).time.experts;
  w.active_expert_share = {};
  EXPECT_EQ(plan_layout(w, cpu, 1).time.experts, float_all);
  w.active_expert_share = {0.0};
  expect_error([&] { plan_layout(w, cpu, 1); }, {"active expert share 0", "(0, 1]"});
  w.active_expert_share = {1.0, 1.0};
  expect_error([&] { plan_layout(w, cpu, 1); }, {"2 per-layer active expert shares", "4 MoE"});
}

// Peak resident memory that launch/plan_calibration.sh measured on the 2-core machine (two
// calibrations before 2026-12-07 and the one of that day, on another CPU; docs/planning.md) for the
// 503 M-parameter model it builds (hidden 1024, 8 layers, 16 experts top-4): full fp32 training
// from scratch, and int4 experts with MLP-Hadamard routers fine-tuned from its fp32 checkpoint; 4 x
// 128 tokens per rank; each layer's rank imbalance as its run measured. The plan must stay within
// 10% of each.
TEST(PlanModel, MemoryWithinTenPercentOfTheCalibrationRuns) {
  struct Measured {
    bool full;
    int ep;
    double peak_rss_gb;
    std::vector<double> imbalance;
  };
  // Full training's per-layer imbalance: seeded routing, the same in both calibrations.
  const std::vector<double> full_ep2 = {1.021, 1.061, 1.093, 1.063, 1.135, 1.135, 1.056, 1.030},
                            full_ep4 = {1.141, 1.148, 1.192, 1.067, 1.123, 1.128, 1.156, 1.058};
  const std::vector<Measured> runs = {
      {true, 1, 9.955, {1.0}},
      {true, 2, 6.520, full_ep2},
      {true, 4, 4.806, full_ep4},
      {false, 1, 3.317, {1.0}},
      {false, 2, 2.404, {1.010, 1.024, 1.067, 1.059, 1.002, 1.009, 1.048, 1.025}},
      {false, 4, 1.986, {1.088, 1.118, 1.043, 1.083, 1.052, 1.067, 1.050, 1.084}},
      // The calibration with the measured dequantisation and LM-head rates (the same routing).
      {true, 1, 9.752, {1.0}},
      {true, 2, 6.467, full_ep2},
      {true, 4, 4.792, full_ep4},
      {false, 1, 3.131, {1.0}},
      {false, 2, 2.253, {1.010, 1.028, 1.024, 1.013, 1.064, 1.051, 1.088, 1.015}},
      {false, 4, 1.908, {1.116, 1.144, 1.053, 1.033, 1.019, 1.051, 1.029, 1.049}},
      // 2026-12-07, another CPU (the same routing for full training).
      {true, 1, 9.961, {1.0}},
      {true, 2, 6.472, full_ep2},
      {true, 4, 4.782, full_ep4},
      {false, 1, 3.111, {1.0}},
      {false, 2, 2.201, {1.011, 1.028, 1.023, 1.014, 1.064, 1.051, 1.089, 1.016}},
      {false, 4, 1.883, {1.118, 1.145, 1.052, 1.033, 1.018, 1.052, 1.029, 1.048}},
  };
  for (const auto& run : runs) {
    SCOPED_TRACE(std::string(run.full ? "full training" : "int4 routers only") + ", EP " +
                 std::to_string(run.ep));
    expect_peak_within_ten_percent(medium_workload(run.full), run.imbalance, run.ep,
                                   run.peak_rss_gb);
  }
}

// Each MoE layer's rank imbalance in the full-size EP 2 calibration runs since CPU bf16 linears
// began reusing one chunk buffer: the seeded routing repeats from calibration to calibration.
const std::vector<double> kA27bEp2SeededImbalance = {
    1.160, 1.214, 1.127, 1.239, 1.175, 1.141, 1.113, 1.230, 1.002, 1.437, 1.029, 1.021,
    1.033, 1.080, 1.139, 1.048, 1.212, 1.278, 1.034, 1.031, 1.260, 1.192, 1.047, 1.279};

// The full-size case launch/plan_calibration.sh measured (2026-12-06): Qwen1.5-MoE-A2.7B from a
// GPTQ-Int4 checkpoint in the hub layout, MLP-Hadamard routers fine-tuned on int4 experts, bf16,
// 1 x 128 tokens per rank, each layer's rank imbalance as its run measured: at EP 2 in two
// calibrations, and at EP 1 since load_model builds the model in bf16 (it peaks while loading;
// built in fp32 and cast after the load, it measured 22.8-23.6 GB: docs/planning.md) and at EP 2
// with that build. Within 10% of each.
TEST(PlanModel, FullSizeGptqRouterFineTuneWithinTenPercentOfItsRuns) {
  struct Measured {
    int ep;
    double peak_rss_gb;
    std::vector<double> imbalance;
  };
  const std::vector<Measured> runs = {
      {2, 12.862, {1.124, 1.261, 1.132, 1.092, 1.257, 1.111, 1.425, 1.333,
                   1.069, 1.171, 1.015, 1.236, 1.002, 1.283, 1.219, 1.034,
                   1.044, 1.023, 1.190, 1.338, 1.243, 1.116, 1.067, 1.237}},
      {2, 13.109, {1.104, 1.109, 1.058, 1.389, 1.017, 1.181, 1.158, 1.132,
                   1.551, 1.158, 1.069, 1.265, 1.130, 1.020, 1.096, 1.068,
                   1.085, 1.025, 1.096, 1.395, 1.200, 1.451, 1.188, 1.096}},
      {1, 19.252, std::vector<double>(24, 1.0)},
      {2, 12.097, {1.052, 1.090, 1.176, 1.174, 1.136, 1.016, 1.098, 1.091,
                   1.222, 1.127, 1.044, 1.718, 1.366, 1.168, 1.113, 1.109,
                   1.006, 1.064, 1.079, 1.232, 1.165, 1.410, 1.273, 1.217}},
      // The calibration after CPU bf16 linears began reusing one chunk buffer.
      {1, 19.352, std::vector<double>(24, 1.0)},
      {2, 12.452, kA27bEp2SeededImbalance},
      // The calibration with the measured dequantisation and LM-head rates (the same routing).
      {1, 19.310, std::vector<double>(24, 1.0)},
      {2, 12.219, kA27bEp2SeededImbalance},
      // 2026-12-07: bf16 rows into dequantised int4 experts take native bf16 GEMMs.
      {1, 19.135, std::vector<double>(24, 1.0)},
      {2, 12.711, {1.073, 1.527, 1.095, 1.111, 1.305, 1.023, 1.115, 1.170,
                   1.062, 1.439, 1.374, 1.092, 1.090, 1.145, 1.043, 1.268,
                   1.230, 1.083, 1.086, 1.164, 1.431, 1.270, 1.175, 1.267}},
  };
  for (const auto& run : runs) {
    SCOPED_TRACE("EP " + std::to_string(run.ep) + ", " + std::to_string(run.peak_rss_gb) + " GB");
    expect_peak_within_ten_percent(a27b_workload(), run.imbalance, run.ep, run.peak_rss_gb);
  }
}

// Step time that two runs of `./launch/plan_calibration.sh` measured on the 2-core machine of the
// day (2026-12-06, and 2026-12-07 on another CPU, after the CPU's bf16 and int4 GEMM paths changed;
// docs/planning.md has the later one): every workload at every EP size, rank 0's median step after
// the first, each run planned with the rates `bench rates` measured right after it (the
// --cluster-set values it printed: with the quantized bank's dequantisation rate and the LM head
// and loss timed at the run's vocabulary), and each MoE layer's rank imbalance and share of experts
// with rows as the run measured. The plan must stay within 25% of each.
TEST(PlanModel, StepTimeWithinAQuarterOfTheCalibrationRuns) {
  struct Measured {
    const char* workload;
    int ep;
    const char* rates;
    std::vector<double> imbalance;
    double step_s;
    std::vector<double> active = {};  ///< experts with rows (--loads); empty: all
  };
  const std::vector<Measured> runs = {
      {"small_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.0918133 tflops_bf16=0.0918133 "
       "memory_bandwidth_gbs=55.0532 layer_overhead_ms=1.99828 optimizer_ns_per_param=6.00606 "
       "expert_gemm_efficiency=0.912116 expert_wgrad_efficiency=0.708422 "
       "dequant_gweights_per_s=1.42703 lm_head_tflops=0.0537638",
       {1.000},
       0.0821},  // plan 0.0815
      {"small_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.104488 tflops_bf16=0.104488 "
       "memory_bandwidth_gbs=46.2901 layer_overhead_ms=0.777293 optimizer_ns_per_param=5.21429 "
       "expert_gemm_efficiency=0.964806 expert_wgrad_efficiency=1 dequant_gweights_per_s=1.77812 "
       "lm_head_tflops=0.0726422 intra_node_gbs=0.943619 intra_node_latency_us=0",
       {1.420, 1.131, 1.048, 1.001},
       0.1281},  // plan 0.1311
      {"small_ro",
       4,
       "devices_per_node=4 tflops_fp32=0.127315 tflops_bf16=0.127315 "
       "memory_bandwidth_gbs=72.2156 layer_overhead_ms=1.068 optimizer_ns_per_param=5.92938 "
       "expert_gemm_efficiency=0.94936 expert_wgrad_efficiency=0.687067 "
       "dequant_gweights_per_s=0.226897 lm_head_tflops=0.0779377 intra_node_gbs=0.827972 "
       "intra_node_latency_us=0",
       {1.600, 1.383, 1.087, 1.100},
       0.2857},  // plan 0.2500
      {"medium_full",
       1,
       "devices_per_node=1 tflops_fp32=0.16879 tflops_bf16=0.16879 memory_bandwidth_gbs=46.7912 "
       "layer_overhead_ms=2.57125 optimizer_ns_per_param=6.29167 expert_gemm_efficiency=0.758708 "
       "expert_wgrad_efficiency=0.32429 lm_head_tflops=0.142477",
       {1.000},
       7.8816,  // plan 8.5058
       {1.000, 0.979, 0.958, 0.896, 0.948, 0.906, 0.875, 0.865}},
      {"medium_full",
       2,
       "devices_per_node=2 tflops_fp32=0.176772 tflops_bf16=0.176772 "
       "memory_bandwidth_gbs=58.6548 layer_overhead_ms=0.738634 optimizer_ns_per_param=5.21444 "
       "expert_gemm_efficiency=0.973558 expert_wgrad_efficiency=0.612599 lm_head_tflops=0.154837 "
       "intra_node_gbs=1.05274 intra_node_latency_us=0",
       {1.021, 1.061, 1.093, 1.063, 1.135, 1.135, 1.056, 1.030},
       11.5143,  // plan 11.7541
       {1.000, 0.990, 0.990, 1.000, 0.990, 0.979, 0.979, 0.958}},
      {"medium_full",
       4,
       "devices_per_node=4 tflops_fp32=0.152448 tflops_bf16=0.152448 "
       "memory_bandwidth_gbs=51.3421 layer_overhead_ms=0.715173 optimizer_ns_per_param=5.49842 "
       "expert_gemm_efficiency=1 expert_wgrad_efficiency=1 lm_head_tflops=0.143984 "
       "intra_node_gbs=1.9168 intra_node_latency_us=0",
       {1.141, 1.148, 1.192, 1.067, 1.123, 1.128, 1.156, 1.058},
       23.8539,  // plan 21.9811
       {1.000, 1.000, 1.000, 1.000, 0.990, 1.000, 1.000, 0.979}},
      {"medium_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.16685 tflops_bf16=0.16685 memory_bandwidth_gbs=42.9565 "
       "layer_overhead_ms=1.39245 optimizer_ns_per_param=6.01825 expert_gemm_efficiency=0.842693 "
       "expert_wgrad_efficiency=0.364336 dequant_gweights_per_s=1.15001 lm_head_tflops=0.152289",
       {1.000},
       2.9912,  // plan 3.4345
       {1.000, 0.990, 0.969, 0.979, 0.969, 0.948, 0.969, 0.948}},
      {"medium_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.167768 tflops_bf16=0.167768 "
       "memory_bandwidth_gbs=60.9738 layer_overhead_ms=0.883574 optimizer_ns_per_param=6.4006 "
       "expert_gemm_efficiency=0.928491 expert_wgrad_efficiency=0.550089 "
       "dequant_gweights_per_s=2.81588 lm_head_tflops=0.158997 intra_node_gbs=0.86987 "
       "intra_node_latency_us=0",
       {1.010, 1.028, 1.024, 1.013, 1.064, 1.051, 1.088, 1.015},
       5.2903},  // plan 5.6924
      {"medium_ro",
       4,
       "devices_per_node=4 tflops_fp32=0.148508 tflops_bf16=0.148508 "
       "memory_bandwidth_gbs=78.4227 layer_overhead_ms=0.882897 optimizer_ns_per_param=4.83142 "
       "expert_gemm_efficiency=0.904348 expert_wgrad_efficiency=1 dequant_gweights_per_s=4.06632 "
       "lm_head_tflops=0.149564 intra_node_gbs=0.845027 intra_node_latency_us=0",
       {1.116, 1.144, 1.053, 1.033, 1.019, 1.051, 1.029, 1.049},
       11.9459},  // plan 12.5030
      {"a27b_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.124045 tflops_bf16=0.124045 "
       "memory_bandwidth_gbs=52.6043 layer_overhead_ms=2.07885 optimizer_ns_per_param=3.19924 "
       "expert_gemm_efficiency=0.760349 expert_wgrad_efficiency=0.0746944 "
       "dequant_gweights_per_s=1.38172 lm_head_tflops=0.0787176",
       {1.000},
       14.1621,  // plan 14.8004
       {0.792, 0.169, 0.146, 0.146, 0.133, 0.135, 0.137, 0.135, 0.137, 0.137, 0.135, 0.135,
        0.135, 0.135, 0.133, 0.133, 0.135, 0.133, 0.131, 0.133, 0.133, 0.135, 0.133, 0.133}},
      {"a27b_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.154156 tflops_bf16=0.154156 "
       "memory_bandwidth_gbs=51.0253 layer_overhead_ms=1.05073 optimizer_ns_per_param=5.48417 "
       "expert_gemm_efficiency=0.920644 expert_wgrad_efficiency=0.173332 "
       "dequant_gweights_per_s=3.4936 lm_head_tflops=0.113666 intra_node_gbs=0.929513 "
       "intra_node_latency_us=0",
       kA27bEp2SeededImbalance,
       21.3872,  // plan 19.5892
       {0.915, 0.200, 0.154, 0.150, 0.138, 0.135, 0.138, 0.133, 0.142, 0.140, 0.133, 0.135,
        0.138, 0.135, 0.135, 0.135, 0.135, 0.133, 0.138, 0.135, 0.133, 0.133, 0.135, 0.135}},
      // The calibration of 2026-12-07 (a 2-core Intel Xeon with AMX, whose native bf16 GEMMs ran
      // 1.6-4.6x its fp32 ones; bf16 rows into dequantised int4 experts take native GEMMs).
      {"small_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.133841 tflops_bf16=0.221616 "
       "memory_bandwidth_gbs=38.9494 layer_overhead_ms=1.13806 optimizer_ns_per_param=6.60178 "
       "expert_gemm_efficiency=0.833048 expert_wgrad_efficiency=1 "
       "dequant_gweights_per_s=0.769526 lm_head_tflops=0.126164",
       {1.000},
       0.0627},  // plan 0.0500
      {"small_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.180049 tflops_bf16=0.331511 "
       "memory_bandwidth_gbs=36.9113 layer_overhead_ms=0.703315 optimizer_ns_per_param=6.22904 "
       "expert_gemm_efficiency=0.88546 expert_wgrad_efficiency=1 dequant_gweights_per_s=2.40362 "
       "lm_head_tflops=0.0968934 intra_node_gbs=2.4921 intra_node_latency_us=0",
       {1.303, 1.107, 1.169, 1.055},
       0.1031},  // plan 0.0936
      {"small_ro",
       4,
       "devices_per_node=4 tflops_fp32=0.162719 tflops_bf16=0.491345 "
       "memory_bandwidth_gbs=40.4007 layer_overhead_ms=0.893873 optimizer_ns_per_param=6.4856 "
       "expert_gemm_efficiency=1 expert_wgrad_efficiency=1 dequant_gweights_per_s=26.5128 "
       "lm_head_tflops=0.108691 intra_node_gbs=1.45538 intra_node_latency_us=0",
       {1.417, 1.240, 1.149, 1.072},
       0.2343},  // plan 0.1830
      {"medium_full",
       1,
       "devices_per_node=1 tflops_fp32=0.246434 tflops_bf16=1.09635 memory_bandwidth_gbs=37.6633 "
       "layer_overhead_ms=1.35545 optimizer_ns_per_param=6.93982 expert_gemm_efficiency=0.856129 "
       "expert_wgrad_efficiency=0.55357 lm_head_tflops=0.243578",
       {1.000},
       8.4383,  // plan 6.5118
       {1.000, 0.979, 0.958, 0.896, 0.948, 0.906, 0.875, 0.865}},
      {"medium_full",
       2,
       "devices_per_node=2 tflops_fp32=0.27133 tflops_bf16=0.677336 memory_bandwidth_gbs=38.747 "
       "layer_overhead_ms=0.620287 optimizer_ns_per_param=6.30905 expert_gemm_efficiency=0.92869 "
       "expert_wgrad_efficiency=0.756491 lm_head_tflops=0.258285 intra_node_gbs=2.86617 "
       "intra_node_latency_us=0",
       {1.021, 1.061, 1.094, 1.063, 1.135, 1.135, 1.056, 1.030},
       10.8467,  // plan 9.1907
       {1.000, 0.990, 0.990, 1.000, 0.990, 0.979, 0.979, 0.958}},
      {"medium_full",
       4,
       "devices_per_node=4 tflops_fp32=0.258877 tflops_bf16=0.996692 "
       "memory_bandwidth_gbs=37.8903 layer_overhead_ms=0.591632 optimizer_ns_per_param=6.26195 "
       "expert_gemm_efficiency=0.935764 expert_wgrad_efficiency=1 lm_head_tflops=0.255326 "
       "intra_node_gbs=1.54581 intra_node_latency_us=0",
       {1.141, 1.148, 1.192, 1.067, 1.123, 1.128, 1.156, 1.058},
       17.6637,  // plan 16.1233
       {1.000, 1.000, 1.000, 1.000, 0.990, 1.000, 1.000, 0.979}},
      {"medium_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.255186 tflops_bf16=1.16436 memory_bandwidth_gbs=38.2865 "
       "layer_overhead_ms=1.22105 optimizer_ns_per_param=7.00246 expert_gemm_efficiency=0.832808 "
       "expert_wgrad_efficiency=0.441664 dequant_gweights_per_s=2.07139 lm_head_tflops=0.254949",
       {1.000},
       2.0954,  // plan 2.2265
       {1.000, 0.990, 0.969, 0.979, 0.969, 0.948, 0.969, 0.948}},
      {"medium_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.261591 tflops_bf16=1.13796 memory_bandwidth_gbs=38.4145 "
       "layer_overhead_ms=0.60497 optimizer_ns_per_param=6.02822 expert_gemm_efficiency=0.986198 "
       "expert_wgrad_efficiency=0.87624 dequant_gweights_per_s=4.15775 lm_head_tflops=0.264207 "
       "intra_node_gbs=2.85597 intra_node_latency_us=0",
       {1.011, 1.028, 1.023, 1.014, 1.064, 1.051, 1.089, 1.016},
       3.6620},  // plan 3.6104
      {"medium_ro",
       4,
       "devices_per_node=4 tflops_fp32=0.270909 tflops_bf16=1.06637 memory_bandwidth_gbs=43.1774 "
       "layer_overhead_ms=0.690615 optimizer_ns_per_param=5.80994 expert_gemm_efficiency=1 "
       "expert_wgrad_efficiency=0.882651 dequant_gweights_per_s=3.28096 lm_head_tflops=0.259314 "
       "intra_node_gbs=1.60738 intra_node_latency_us=0",
       {1.118, 1.145, 1.052, 1.033, 1.018, 1.052, 1.029, 1.048},
       7.2897},  // plan 6.9068
      {"a27b_ro",
       1,
       "devices_per_node=1 tflops_fp32=0.233444 tflops_bf16=0.836589 "
       "memory_bandwidth_gbs=37.8984 layer_overhead_ms=1.34528 optimizer_ns_per_param=4.48318 "
       "expert_gemm_efficiency=0.704864 expert_wgrad_efficiency=0.0765021 "
       "dequant_gweights_per_s=2.07656 lm_head_tflops=0.878498",
       {1.000},
       3.5591,  // plan 3.7545
       {0.760, 0.165, 0.137, 0.142, 0.135, 0.133, 0.137, 0.133, 0.140, 0.138, 0.133, 0.137,
        0.135, 0.135, 0.138, 0.133, 0.138, 0.135, 0.137, 0.133, 0.135, 0.135, 0.133, 0.135}},
      {"a27b_ro",
       2,
       "devices_per_node=2 tflops_fp32=0.228775 tflops_bf16=0.849771 "
       "memory_bandwidth_gbs=39.9495 layer_overhead_ms=0.631644 optimizer_ns_per_param=5.37378 "
       "expert_gemm_efficiency=0.889385 expert_wgrad_efficiency=0.166952 "
       "dequant_gweights_per_s=3.58529 lm_head_tflops=0.698252 intra_node_gbs=2.63139 "
       "intra_node_latency_us=0",
       {1.073, 1.527, 1.095, 1.111, 1.305, 1.023, 1.115, 1.170, 1.062, 1.439, 1.374, 1.092,
        1.090, 1.145, 1.043, 1.268, 1.230, 1.083, 1.086, 1.164, 1.431, 1.270, 1.175, 1.267},
       4.8997,  // plan 4.7855
       {0.927, 0.208, 0.156, 0.146, 0.140, 0.135, 0.138, 0.135, 0.138, 0.138, 0.133, 0.140,
        0.133, 0.140, 0.133, 0.133, 0.137, 0.135, 0.133, 0.133, 0.133, 0.133, 0.133, 0.138}},
  };
  for (const auto& run : runs) {
    const std::string name = run.workload;
    SCOPED_TRACE(name + " at EP " + std::to_string(run.ep));
    PlanWorkload w = name == "small_ro"  ? small_workload()
                     : name == "a27b_ro" ? a27b_workload()
                                         : medium_workload(name == "medium_full");
    w.rank_imbalance = run.imbalance;
    w.active_expert_share = run.active;
    ClusterSpec cpu = cluster_preset("cpu");
    std::istringstream sets(run.rates);
    for (std::string kv; sets >> kv;) set_cluster_field(cpu, kv);
    const double predicted = plan_layout(w, cpu, run.ep).time.total();
    EXPECT_NEAR(predicted / run.step_s, 1.0, 0.25) << predicted << " s predicted";
  }
}

// The imbalance term against the placement study's widened skewed case (docs/parallelism.md,
// `PLACEMENT_EP=2 PLACEMENT_EXPERT_WIDTH=4096 PLACEMENT_STEPS=100 PLACEMENT_ROUNDS=3
// ./launch/placement_study.sh`, 2026-12-06): the quickstart base with Linear routers and int4
// experts widened to 4096, EP 2, one core per rank, each placement planned at its run's measured
// mean rank max/mean with small_ro's 2-rank rates. Every placement's measured saving on
// contiguous is at least half of the predicted one, and not more than all of it.
TEST(PlanModel, ImbalanceTermPredictsTheWidenedSkewedCasesSavings) {
  PlanWorkload w = small_workload();
  w.model.moe_intermediate_size = 4096;
  w.router = config::RouterConfig();
  w.router.mutable_linear()->set_init_from_checkpoint(true);
  ClusterSpec cpu = cluster_preset("cpu");
  for (const char* kv :
       {"devices_per_node=2", "tflops_fp32=0.116377", "tflops_bf16=0.116377",
        "memory_bandwidth_gbs=49.2538", "layer_overhead_ms=0.684417",
        "optimizer_ns_per_param=6.93781", "expert_gemm_efficiency=0.835407",
        "expert_wgrad_efficiency=1", "intra_node_gbs=2.66475", "intra_node_latency_us=0"})
    set_cluster_field(cpu, kv);
  struct Run {
    const char* placement;
    double imbalance;  ///< mean over layers, exact from rank_tokens
    int64_t redundant;
    double step_s;  ///< rank 0's median over 3 interleaved rounds
  };
  const std::vector<Run> runs = {{"contiguous", 1.285927734375, 0, 0.664143},
                                 {"balanced", 1.0663916015625, 0, 0.61415},
                                 {"replicas", 1.067958984375, 2, 0.596734},
                                 {"live", 1.0313232421875, 0, 0.565854},
                                 {"live + replicas", 1.00708740234375, 2, 0.599061}};
  auto predicted = [&](const Run& r) {
    PlanWorkload p = w;
    p.rank_imbalance = {r.imbalance};
    p.redundant_slots = r.redundant;
    return plan_layout(p, cpu, 2).time.total();
  };
  const double base = predicted(runs[0]);
  EXPECT_NEAR(base, 0.8410, 1e-3);  // the study's predicted contiguous step
  for (size_t i = 1; i < runs.size(); ++i) {
    SCOPED_TRACE(runs[i].placement);
    const double want = predicted(runs[i]) / base - 1, got = runs[i].step_s / runs[0].step_s - 1;
    EXPECT_LT(want, 0);
    EXPECT_GE(got / want, 0.5) << "measured " << got << ", predicted " << want;
    EXPECT_LE(got / want, 1.0) << "measured " << got << ", predicted " << want;
  }
}

TEST(PlanModel, RefusesWhatCannotBe) {
  PlanWorkload w = hand_workload();
  expect_error([&] { plan_layout(w, two_devices(), 3); }, {"EP 3", "world of 2"});
  ClusterSpec six = two_devices();
  six.devices_per_node = 6;
  expect_error([&] { plan_layout(w, six, 3); }, {"EP 3", "4 expert slots"});
  expect_error([] { cluster_preset("dgx-9000"); }, {"dgx-9000", "8xh100"});
  ClusterSpec s = two_devices();
  expect_error([&] { set_cluster_field(s, "gpus=4"); }, {"gpus", "nodes"});
  expect_error([&] { set_cluster_field(s, "nodes=four"); }, {"nodes", "number"});
  set_cluster_field(s, "nodes=4");
  EXPECT_EQ(s.world(), 8);
  set_cluster_field(s, "dequant_gweights_per_s=-1");
  expect_error([&] { s.validate(); }, {"dequant_gweights_per_s", "must not be negative"});
  w.rank_imbalance = {0.5};
  expect_error([&] { plan_layout(w, two_devices(), 2); }, {"imbalance 0.5"});
  expect_error([] { plan_model_config("no-such-model"); }, {"no-such-model", "qwen1.5-moe-a2.7b"});
}

// --loads from a run that used a placement of its own: at the run's EP size the plan takes the
// tokens its ranks received under it; at other sizes, or asked to balance, the expert loads.
TEST(PlanModel, LoadsAtTheRunsEpSizeKeepThePlacementItUsed) {
  PlanRequest r;
  r.workload = hand_workload();
  r.cluster = two_devices();
  r.cluster.devices_per_node = 4;
  r.expert_loads = {{40, 30, 20, 10}, {40, 30, 20, 10}};
  r.rank_loads = {{52, 48}, {45, 55}};  // EP 2 under a placement that pairs experts 0-3, 1-2
  r.loads_ep = 2;
  const auto plans = plan_cluster(r);
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(plans[1].ep, 2);
  EXPECT_EQ(plans[1].imbalance, (std::vector<double>{52 / 50.0, 1.1}));  // the run's placement
  EXPECT_EQ(plans[2].imbalance, (std::vector<double>{1.6, 1.6}));        // contiguous at EP 4
  r.balanced_placement = true;  // what `switchyard placement` would make: {0, 3} and {1, 2}
  EXPECT_EQ(plan_cluster(r)[1].imbalance, (std::vector<double>{1.0, 1.0}));
  r.balanced_placement = false;
  r.rank_loads.clear();  // a log without rank_tokens: contiguous at every size
  EXPECT_EQ(plan_cluster(r)[1].imbalance, (std::vector<double>{1.4, 1.4}));
}

// Layouts: every EP size dividing both the world and the slots, and the one that does not fit
// says so (the full model's experts in fp32 on one 80 GB device).
TEST(PlanModel, FullSizeLayoutsAndTheFit) {
  PlanRequest r;
  r.workload.model = Qwen2MoeConfig::preset("qwen1.5-moe-a2.7b");
  r.workload.micro_batch = 4;  // 4 x 2048 tokens per rank
  r.workload.weight_bytes = 4;
  r.workload.activation_bytes = 2;
  r.cluster = cluster_preset("8xh100");
  const auto plans = plan_cluster(r);
  std::vector<int> eps;
  for (const auto& p : plans) eps.push_back(p.ep);
  EXPECT_EQ(eps, (std::vector<int>{1, 2, 4}));  // 60 experts: 8 does not divide them
  EXPECT_FALSE(plans.front().fits());           // 14.3 B fp32 weights are 57 GB, activations more
  EXPECT_GT(plans.front().memory.replicated_weights + plans.front().memory.expert_weights,
            14.0e9 * 4);
  // Sharding the experts lowers each rank's memory.
  EXPECT_LT(plans.back().memory.total(), plans.front().memory.total());
}

}  // namespace
}  // namespace switchyard
