// The memory and step-time model behind `switchyard plan`: what one rank of an EP x DP layout
// holds (weights by kind, gradients, AdamW moments, activations kept for backward, logits) and
// how long a training step takes (expert GEMMs, the rest of the model, all-to-all, gradient
// all-reduce, optimizer), for a Qwen2-MoE model under uneven routing.
#pragma once

#include <cstdint>
#include <vector>

#include "configs/run_config.h"
#include "models/qwen2_moe_config.h"
#include "models/weight_quant.h"
#include "plan/cluster_spec.h"

namespace switchyard {

/// What is trained and how: everything the model needs besides the cluster and the layout.
struct PlanWorkload {
  Qwen2MoeConfig model;
  config::RouterConfig router;  ///< the router kind sets its parameter count
  QuantOptions expert_quant;    ///< routed experts (frozen when quantized)
  bool quantize_shared_expert = false;
  bool routers_only = true;       ///< else every float parameter trains
  bool recompute_layers = false;  ///< train.recompute_layers: layers run again in backward
  int64_t micro_batch = 1;        ///< sequences per rank and micro-batch
  int64_t seq_len = 2048;
  int64_t accumulation = 1;      ///< micro-batches per optimizer step
  int64_t weight_bytes = 4;      ///< master weights and gradients (train --dtype)
  int64_t activation_bytes = 4;  ///< 2 under bf16 autocast
  int64_t redundant_slots = 0;   ///< R: replicas per MoE layer (parallel.placement)
  /// Bytes per weight of the checkpoint the model loads from (0: built from scratch).
  int64_t checkpoint_bytes = 0;
  /// A GPTQ-Int4 checkpoint's group size (0: not GPTQ). Its decoder linears (attention, routed
  /// and shared experts, dense MLPs) are stored packed, not at checkpoint_bytes per weight.
  int64_t checkpoint_gptq_group = 0;
  /// Per MoE layer: the most loaded EP rank's received tokens over the mean (1: balanced).
  /// Empty: 1 everywhere. A single value applies to every layer.
  std::vector<double> rank_imbalance;
  /// Per MoE layer: the share of a rank's local experts that get rows in a micro-batch (an
  /// expert without rows costs nothing: no GEMM, no dequantisation). Empty: 1 everywhere, as
  /// under even routing of many tokens. A single value applies to every layer.
  std::vector<double> active_expert_share;

  /// k: the model's num_experts_per_tok (the router takes the model's, models/qwen2_moe.cpp).
  int64_t top_k() const { return model.num_experts_per_tok; }
  int64_t moe_layers() const;
  double imbalance(int64_t moe_layer) const;
  double active_share(int64_t moe_layer) const;
  double worst_imbalance() const;
  /// Throws ConfigError for a workload the model cannot have (k > E, a non-positive size).
  void validate() const;
};

/// Parameters one rank holds at EP size `ep`, by kind. Elements, and bytes as stored.
struct RankParameters {
  int64_t replicated = 0;    ///< embeddings, attention, norms, dense MLPs, shared experts, LM head
  int64_t router = 0;        ///< all MoE layers' routers (part of `replicated`)
  int64_t expert_slots = 0;  ///< routed-expert slots on this rank, over all MoE layers
  int64_t experts = 0;       ///< elements of those slots' weights
  /// Elements of the attention projections, shared experts and dense MLPs (part of
  /// `replicated`): with `experts`, the decoder linears a GPTQ checkpoint stores packed.
  int64_t decoder_linears = 0;
  int64_t replicated_bytes = 0;
  int64_t expert_bytes = 0;          ///< codes, scales and zeros when quantized
  int64_t trainable_replicated = 0;  ///< elements with a gradient and AdamW moments
  int64_t trainable_experts = 0;
};

RankParameters rank_parameters(const PlanWorkload& w, int ep);

/// Bytes per rank at the peak (the end of a micro-batch's forward, the logits' gradient written).
struct MemoryEstimate {
  double replicated_weights = 0, expert_weights = 0, gradients = 0, optimizer = 0;
  double activations = 0;  ///< kept for backward by the decoder layers, one micro-batch
  double exchange = 0;  ///< all-to-all send/receive buffers autograd keeps (in activations' sense)
  double logits = 0;    ///< LM-head logits and their gradient (fused head: a chunk of them)
  /// Quantized experts in bf16 on a GPU take the grouped GEMM, which dequantises a whole local
  /// bank's weight per GEMM (models/expert_bank.h): one such weight, the larger (2I x H each).
  /// With recomputed layers (not the CPU's bf16 GEMMs), a layer's dequantised weights, all of
  /// its local experts' at most, are kept from its recomputed forward to its backward.
  double dequantized = 0;
  double runtime = 0;  ///< ClusterSpec::runtime_gb
  /// Ranks that share a node's memory (CPUs) peak while loading too: the runtime, the model as
  /// stored and the checkpoint pages the rank read (memory-mapped safetensors, resident until the
  /// load ends). 0 on GPUs, whose device memory never holds the file.
  double loading = 0;
  double peak() const;  ///< max(total(), loading)
  double total() const;
};

/// Seconds per optimizer step on the critical-path rank (the one with the most expert tokens).
struct StepTimeEstimate {
  double experts = 0;         ///< routed-expert GEMMs (and int4/int8 dequantisation)
  double attention = 0;       ///< projections and the attention core
  double rest = 0;            ///< router, shared expert, dense layers, norms, per-layer costs
  double lm_head = 0;         ///< LM head and loss (and the logits' traffic)
  double all_to_all = 0;      ///< dispatch and combine, forward and backward
  double grad_allreduce = 0;  ///< replicated gradients over the world, experts' over DP
  double optimizer = 0;
  double all_to_all_bytes_per_layer = 0;  ///< sent by one rank per exchange, one micro-batch
  double total() const;
};

/// One EP x DP layout of the cluster.
struct LayoutPlan {
  int ep = 1, dp = 1;
  RankParameters parameters;
  MemoryEstimate memory;
  StepTimeEstimate time;
  std::vector<double> imbalance;  ///< per MoE layer, as planned
  double capacity_bytes = 0;      ///< what a rank may use (the node's share when ranks share it)
  int64_t tokens_per_step = 0;    ///< over the world
  bool fits() const { return memory.peak() <= capacity_bytes; }
};

/// The plan for EP size `ep` (DP = world / ep). Throws ConfigError when ep does not divide the
/// world or the expert slots (E + R).
LayoutPlan plan_layout(const PlanWorkload& w, const ClusterSpec& cluster, int ep);

/// Every EP size that divides both the world and E + R, smallest first.
std::vector<int> feasible_ep_sizes(const PlanWorkload& w, const ClusterSpec& cluster);

}  // namespace switchyard
