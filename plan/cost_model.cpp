#include "plan/cost_model.h"

#include <algorithm>
#include <cmath>

#include "common/errors.h"
#include "models/lm_loss.h"
#include "models/quantized_cpu_gemm.h"
#include "routers/router_registry.h"

namespace switchyard {
namespace {

// Bytes of one [out, in] weight as the expert bank stores it (models/weight_quant.h): int8 codes
// with an fp32 scale per row; int4 codes two per byte with an fp32 scale (and a uint8 zero when
// asymmetric) per group of input columns; else `weight_bytes` per element.
int64_t stored_bytes(int64_t out, int64_t in, const QuantOptions& q, int64_t weight_bytes) {
  switch (q.kind()) {
    case QuantKind::kInt8:
      return out * in + out * 4;
    case QuantKind::kInt4: {
      const int64_t groups = out * (in / q.group_size());
      return out * in / 2 + groups * 4 + (q.symmetric() ? 0 : groups);
    }
    case QuantKind::kNone:
      break;
  }
  return out * in * weight_bytes;
}

// A SwiGLU bank's weights per expert: w_in [2I, H] (gate rows, then up rows) and w_out [H, I].
int64_t swiglu_bytes(int64_t hidden, int64_t inter, const QuantOptions& q, int64_t weight_bytes) {
  return stored_bytes(2 * inter, hidden, q, weight_bytes) +
         stored_bytes(hidden, inter, q, weight_bytes);
}

// Rows a busy local expert gets per micro-batch, the mean over MoE layers: a rank receives
// T * k rows on average, spread over the share of its slots that get any (as `bench rates`
// gives its bank probe rows, so that the dequantisation it measures and the GEMM rate the plan
// takes are those of one path).
double mean_rows_per_busy_expert(const PlanWorkload& w, int64_t ep, int64_t slots) {
  const double local_slots = double(slots) / double(ep);
  const double rows = double(w.micro_batch * w.seq_len * w.top_k());
  double sum = 0;
  for (int64_t l = 0; l < w.moe_layers(); ++l)
    sum += rows / std::max(1.0, local_slots * w.active_share(l));
  return sum / double(std::max<int64_t>(1, w.moe_layers()));
}

int64_t router_parameter_count(const PlanWorkload& w) {
  // Built once at the real shape: every router kind counts its own parameters.
  const auto router =
      make_router(RouterOptions(w.model.hidden_size, w.model.num_experts, w.router));
  int64_t n = 0;
  for (const auto& p : router->parameters()) n += p.numel();
  return n;
}

// Ring all-reduce of `bytes` over `n` ranks: 2 (n - 1) / n of the data crosses each link.
double ring_all_reduce_s(double bytes, int n, double gbs, double latency_us) {
  if (n <= 1 || bytes <= 0) return 0;
  return 2.0 * (n - 1) / n * bytes / (gbs * 1e9) + 2.0 * (n - 1) * latency_us * 1e-6;
}

// Whether the group of `size` ranks with stride `stride` starting at rank 0 spans nodes.
bool spans_nodes(int size, int stride, int devices_per_node) {
  return int64_t(size - 1) * stride >= devices_per_node;
}

}  // namespace

int64_t PlanWorkload::moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l) n += model.is_moe_layer(l) ? 1 : 0;
  return n;
}

double PlanWorkload::imbalance(int64_t moe_layer) const {
  if (rank_imbalance.empty()) return 1.0;
  if (rank_imbalance.size() == 1) return rank_imbalance.front();
  return rank_imbalance[size_t(moe_layer)];
}

double PlanWorkload::active_share(int64_t moe_layer) const {
  if (active_expert_share.empty()) return 1.0;
  if (active_expert_share.size() == 1) return active_expert_share.front();
  return active_expert_share[size_t(moe_layer)];
}

double PlanWorkload::worst_imbalance() const {
  double worst = 1.0;
  for (double v : rank_imbalance) worst = std::max(worst, v);
  return worst;
}

void PlanWorkload::validate() const {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw ConfigError(what);
  };
  require(model.num_experts > 0 && moe_layers() > 0, "plan: the model has no MoE layer");
  require(
      top_k() >= 1 && top_k() <= model.num_experts,
      detail::concat("plan: router.top_k = ", top_k(), " must be in [1, ", model.num_experts, "]"));
  require(micro_batch >= 1 && seq_len >= 1 && accumulation >= 1,
          "plan: micro-batch, sequence length and accumulation must be positive");
  require(redundant_slots >= 0, "plan: redundant slots must not be negative");
  require(rank_imbalance.size() <= 1 || int64_t(rank_imbalance.size()) == moe_layers(),
          detail::concat("plan: ", rank_imbalance.size(), " per-layer imbalances for ",
                         moe_layers(), " MoE layers"));
  for (double v : rank_imbalance)
    require(std::isfinite(v) && v >= 1.0,
            detail::concat("plan: rank imbalance ", v, " must be >= 1 (max over mean)"));
  require(active_expert_share.size() <= 1 || int64_t(active_expert_share.size()) == moe_layers(),
          detail::concat("plan: ", active_expert_share.size(),
                         " per-layer active expert shares for ", moe_layers(), " MoE layers"));
  for (double v : active_expert_share)
    require(std::isfinite(v) && v > 0.0 && v <= 1.0,
            detail::concat("plan: active expert share ", v, " must be in (0, 1]"));
  if (expert_quant.kind() == QuantKind::kInt4) {
    const int64_t g = expert_quant.group_size();
    require(
        g > 0 && model.hidden_size % g == 0 && model.moe_intermediate_size % g == 0,
        detail::concat("plan: int4 group size ", g, " must divide the hidden size ",
                       model.hidden_size, " and the expert width ", model.moe_intermediate_size));
  }
}

RankParameters rank_parameters(const PlanWorkload& w, int ep) {
  const auto& c = w.model;
  const int64_t H = c.hidden_size, Hq = c.num_attention_heads * c.attention_head_dim(),
                Hkv = c.num_key_value_heads * c.attention_head_dim();
  const int64_t slots = c.num_experts + w.redundant_slots;
  SY_CHECK(ep > 0 && slots % ep == 0, "rank_parameters: EP ", ep, " for ", slots, " slots");
  RankParameters p;
  const int64_t wb = w.weight_bytes;
  auto replicated = [&](int64_t elements, bool trainable) {
    p.replicated += elements;
    p.replicated_bytes += elements * wb;
    if (trainable && !w.routers_only) p.trainable_replicated += elements;
  };
  replicated(c.vocab_size * H, true);                              // embed_tokens
  if (!c.tie_word_embeddings) replicated(c.vocab_size * H, true);  // lm_head
  replicated(H, true);                                             // final norm
  const int64_t router = router_parameter_count(w);
  const QuantOptions shared_quant = w.quantize_shared_expert ? w.expert_quant : QuantOptions();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    replicated(2 * H, true);                                                   // two RMSNorms
    replicated(H * Hq + H * 2 * Hkv + (c.qkv_bias ? Hq + 2 * Hkv : 0), true);  // q, k, v
    replicated(Hq * H, true);                                                  // o_proj
    p.decoder_linears += 2 * H * Hq + 2 * H * Hkv;
    if (!c.is_moe_layer(l)) {
      replicated(3 * H * c.intermediate_size, true);  // dense SwiGLU
      p.decoder_linears += 3 * H * c.intermediate_size;
      continue;
    }
    // Routers always train (they are what a router fine-tune trains).
    p.replicated += router;
    p.router += router;
    p.replicated_bytes += router * wb;
    p.trainable_replicated += router;
    if (c.shared_expert_intermediate_size > 0) {
      const int64_t Is = c.shared_expert_intermediate_size;
      const bool quantized = shared_quant.kind() != QuantKind::kNone;
      p.replicated += 3 * H * Is + H;  // the shared expert and its sigmoid gate [1, H]
      p.decoder_linears += 3 * H * Is;
      p.replicated_bytes += swiglu_bytes(H, Is, shared_quant, wb) + H * wb;
      if (!w.routers_only) p.trainable_replicated += (quantized ? 0 : 3 * H * Is) + H;
    }
    const int64_t local = slots / ep;
    const bool quantized = w.expert_quant.kind() != QuantKind::kNone;
    p.expert_slots += local;
    p.experts += local * 3 * H * c.moe_intermediate_size;
    p.expert_bytes += local * swiglu_bytes(H, c.moe_intermediate_size, w.expert_quant, wb);
    if (!w.routers_only && !quantized)
      p.trainable_experts += local * 3 * H * c.moe_intermediate_size;
  }
  return p;
}

double MemoryEstimate::total() const {
  return replicated_weights + expert_weights + gradients + optimizer + activations + exchange +
         logits + dequantized + runtime;
}

double MemoryEstimate::peak() const {
  return std::max(total(), loading);
}

double StepTimeEstimate::total() const {
  return experts + attention + rest + lm_head + all_to_all + grad_allreduce + optimizer;
}

std::vector<int> feasible_ep_sizes(const PlanWorkload& w, const ClusterSpec& cluster) {
  std::vector<int> out;
  const int64_t slots = w.model.num_experts + w.redundant_slots;
  for (int ep = 1; ep <= cluster.world(); ++ep)
    if (cluster.world() % ep == 0 && slots % ep == 0) out.push_back(ep);
  return out;
}

// ---- the plan of one layout -------------------------------------------------------------------

LayoutPlan plan_layout(const PlanWorkload& w, const ClusterSpec& cluster, int ep) {
  w.validate();
  cluster.validate();
  const int world = cluster.world();
  const int64_t slots = w.model.num_experts + w.redundant_slots;
  if (ep <= 0 || world % ep != 0)
    throw ConfigError(detail::concat("plan: EP ", ep, " does not divide the world of ", world,
                                     " ranks (", cluster.nodes, " node(s) x ",
                                     cluster.devices_per_node, ")"));
  if (slots % ep != 0)
    throw ConfigError(detail::concat("plan: EP ", ep, " does not divide the ", slots,
                                     " expert slots (", w.model.num_experts, " experts + ",
                                     w.redundant_slots, " redundant)"));
  const auto& c = w.model;
  LayoutPlan plan;
  plan.ep = ep;
  plan.dp = world / ep;
  plan.parameters = rank_parameters(w, ep);
  for (int64_t l = 0; l < w.moe_layers(); ++l) plan.imbalance.push_back(w.imbalance(l));
  const RankParameters& p = plan.parameters;
  const double wb = double(w.weight_bytes), ab = double(w.activation_bytes);
  const int64_t T = w.micro_batch * w.seq_len;  // tokens per rank and micro-batch
  plan.tokens_per_step = T * w.accumulation * world;
  const int64_t H = c.hidden_size, Hq = c.num_attention_heads * c.attention_head_dim(),
                Hkv = c.num_key_value_heads * c.attention_head_dim(), S = w.seq_len, k = w.top_k(),
                I = c.moe_intermediate_size, Is = c.shared_expert_intermediate_size,
                V = c.vocab_size;

  // ---- memory ----
  MemoryEstimate& m = plan.memory;
  m.replicated_weights = double(p.replicated_bytes);
  m.expert_weights = double(p.expert_bytes);
  const double trainable = double(p.trainable_replicated + p.trainable_experts);
  m.gradients = trainable * wb;
  m.optimizer = trainable * 8;  // AdamW: two fp32 moments
  // What autograd keeps per token and layer (bytes): each RMSNorm its fp32 input and fp32
  // normalised rows (plus the cast back when activations are narrower); attention q, k, v, their
  // rotations, the output, and per head either one row of fp32 softmax probabilities and their
  // cast (eager attention, the CPU) or one fp32 log-sum-exp (SDPA, GPUs: models/qwen2_moe.h);
  // a dense SwiGLU its 2I hidden, silu and product rows.
  // Ranks sharing a node are CPU ranks; the other presets are GPUs, whose attention is SDPA and
  // whose quantized bf16 experts take the grouped GEMM.
  const bool on_gpus = !cluster.ranks_share_node;
  const bool sdpa = on_gpus;
  const double cast = ab < 4 ? ab : 0;
  const double norm = double(H) * (8 + cast);
  const double attention = ab * double(4 * Hq + 4 * Hkv) +
                           double(c.num_attention_heads) * (sdpa ? 4.0 : double(S) * (4 + cast));
  double per_token = 0, exchange_per_token = 0;
  double layer_most = 0, layer_exchange_most = 0;  // the largest layer's, for recomputation
  int64_t moe_index = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const double before = per_token, exchange_before = exchange_per_token;
    per_token += 2 * norm + attention;
    if (!c.is_moe_layer(l)) {
      per_token += ab * 4 * double(c.intermediate_size);
      layer_most = std::max(layer_most, per_token - before);
      continue;
    }
    const double imb = w.imbalance(moe_index++);
    // Router: fp32 logits and probabilities. Routed experts on the rows this rank receives
    // (k per token on average, times the layer's imbalance): 2I hidden, silu and product rows.
    // Shared expert likewise, its gate one value.
    per_token += 8 * double(c.num_experts) + imb * double(k) * ab * 4 * double(I) +
                 ab * (4 * double(Is) + 1);
    // The exchange: rows sent and received on dispatch, returned and weighted on combine.
    exchange_per_token += ab * double(k) * double(H) * (2 + 2 * imb);
    layer_most = std::max(layer_most, per_token - before);
    layer_exchange_most = std::max(layer_exchange_most, exchange_per_token - exchange_before);
  }
  m.activations = per_token * double(T) + ab * double(H) * double(T);  // + the embeddings' output
  m.exchange = exchange_per_token * double(T);
  // What the step writes and reads back, recomputed or not (the time's traffic term below).
  const double kept_traffic = m.activations + m.exchange;
  if (w.recompute_layers) {
    // Each layer's input (the residual stream, in the weights' dtype), and one layer's
    // activations and exchange buffers at a time while backward recomputes it.
    m.activations = double(T) * (double(c.num_hidden_layers) * double(H) * wb + layer_most) +
                    ab * double(H) * double(T);
    m.exchange = layer_exchange_most * double(T);
  }
  // The LM head and loss by the kernel a step takes (models/lm_loss.h: a frozen head on GPUs is
  // fused and holds a chunk of the logits; else the logits and their gradient and the loss's
  // chunk). Under autocast (weights wider than the activations) either also holds its weight
  // cast to the activations' dtype at the end of the forward, the peak.
  const auto head_kernel = resolve_head_loss_kernel(
      HeadLossKernel::kAuto, on_gpus ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU),
      /*weight_trains=*/!w.routers_only);
  const double head_cast = wb != ab ? ab * double(V) * double(H) : 0;
  m.logits = head_loss_bytes(head_kernel, T, H, V, w.activation_bytes, on_gpus) + head_cast;
  // Its passes over the logits, fused or not (the fused head makes them a chunk at a time).
  const double logits_traffic =
      head_loss_bytes(HeadLossKernel::kLogits, T, H, V, w.activation_bytes, on_gpus);
  // Quantized experts in bf16 on GPUs take the grouped GEMM: each GEMM dequantises the whole
  // local bank (models/expert_bank.h), one bank-sized weight alive at a time. A recomputed layer
  // keeps its dequantised weights (all of its local experts' at most) from its recomputed
  // forward to its backward (models/weight_quant.h); the CPU's bf16 GEMMs keep nothing, and
  // neither do its fused int4 GEMMs, taken where a busy expert gets a few rows
  // (models/quantized_cpu_gemm.h; the mean rows over layers decide it here).
  const bool quantized = w.expert_quant.kind() != QuantKind::kNone;
  const bool bank_dequantised = quantized && on_gpus && w.activation_bytes == 2;
  const int64_t busy_expert_rows = std::llround(mean_rows_per_busy_expert(w, ep, slots));
  // The default choice (kAuto without SWITCHYARD_CPU_QUANT_GEMM): the planned cluster's, not
  // this process's.
  const bool cpu_fuses =
      quantized && !on_gpus && w.expert_quant.kind() == QuantKind::kInt4 &&
      busy_expert_rows <=
          fused_quant_gemm_max_rows(w.activation_bytes == 2 ? torch::kBFloat16 : torch::kFloat);
  // Their GEMMs in fp32: fused, or dequantised for fewer rows than native GEMMs take.
  const bool cpu_quantized_in_fp32 =
      quantized && !on_gpus && (cpu_fuses || busy_expert_rows < kNativeQuantGemmMinRows);
  const bool keeps_recomputed =
      quantized && w.recompute_layers && (on_gpus || (w.activation_bytes == 4 && !cpu_fuses));
  const double layer_expert_weights =
      double(p.experts) / double(std::max<int64_t>(1, w.moe_layers()));
  if (keeps_recomputed)
    m.dequantized = layer_expert_weights * ab;
  else if (bank_dequantised)
    m.dequantized = double(slots / ep) * 2 * double(I) * double(H) * ab;
  m.runtime = cluster.runtime_gb * 1e9;
  if (cluster.ranks_share_node && w.checkpoint_bytes > 0) {
    double read = double(p.replicated + p.experts) * double(w.checkpoint_bytes);
    if (w.checkpoint_gptq_group > 0) {
      // GPTQ-Int4 stores each decoder linear as 4-bit codes, an fp16 scale and a 4-bit zero per
      // group of input columns: the pages a rank reads for them are that, not fp16 weights.
      const double packed = 0.5 + 2.5 / double(w.checkpoint_gptq_group);
      read -= double(p.decoder_linears + p.experts) * (double(w.checkpoint_bytes) - packed);
    }
    m.loading = m.runtime + m.replicated_weights + m.expert_weights + read;
  }

  // ---- time ----
  const bool bf16 = w.activation_bytes == 2;
  const double per_device = cluster.ranks_share_node ? double(cluster.devices_per_node) : 1.0;
  const double flops_rate = (bf16 ? cluster.tflops_bf16 : cluster.tflops_fp32) * 1e12 / per_device;
  const double mem_rate = cluster.memory_bandwidth_gbs * 1e9 / per_device;
  // Forward FLOPs per token. Backward computes every input gradient (about the forward again;
  // twice for the attention core) and the weight gradients of what trains.
  const double attn_proj = 2.0 * double(H) * double(Hq + 2 * Hkv) + 2.0 * double(Hq) * double(H);
  const double attn_core = 4.0 * double(S) * double(Hq);  // QK^T and PV over all S
  // Eager's backward is twice its forward; SDPA's recomputes QK^T first (flash attention).
  const double attn_core_passes = sdpa ? 3.5 : 3.0;
  const double expert_flops = 2.0 * double(k) * 3 * double(H) * double(I);
  const double shared_flops = 2.0 * 3 * double(H) * double(Is);
  const double router_flops = 2.0 * double(p.router) / double(w.moe_layers());
  const double dense_flops = 2.0 * 3 * double(H) * double(c.intermediate_size);
  const bool experts_train = p.trainable_experts > 0;
  double attention_flops = 0, rest = 0, experts = 0;
  moe_index = 0;
  // Recomputation runs each layer's forward once more, in backward.
  const double again = w.recompute_layers ? 1.0 : 0.0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const double wgrad = w.routers_only ? 0.0 : 1.0;
    attention_flops += attn_proj * (2 + wgrad + again) + attn_core * (attn_core_passes + again);
    if (!c.is_moe_layer(l)) {
      rest += dense_flops * (2 + wgrad + again);
      continue;
    }
    const double imb = w.imbalance(moe_index++);
    rest += router_flops * (3 + again) + shared_flops * (2 + wgrad + again);
    experts += imb * expert_flops *
               ((2 + again) / cluster.expert_gemm_efficiency +
                (experts_train ? 1 / cluster.expert_wgrad_efficiency : 0.0));
  }
  const double lm_head = 2.0 * double(H) * double(V) * (2 + (w.routers_only ? 0.0 : 1.0));
  const double micro_batches = double(w.accumulation);
  StepTimeEstimate& t = plan.time;
  t.attention = attention_flops * double(T) / flops_rate * micro_batches;
  t.rest = rest * double(T) / flops_rate * micro_batches;
  // A measured LM-head rate includes the loss and its passes over the logits (bench rates);
  // else the GEMMs at the GEMM rate and the logits' traffic below.
  const bool head_measured = cluster.lm_head_tflops > 0;
  t.lm_head = lm_head * double(T) /
              (head_measured ? cluster.lm_head_tflops * 1e12 / per_device : flops_rate) *
              micro_batches;
  // CPU quantized experts multiply in fp32 whatever the rows' dtype where int4 fuses or their
  // rows are too few for native GEMMs (models/weight_quant.h); else in the rows' dtype (bf16
  // chunks into native GEMMs, or fp32 ones where the CPU has none, whose tflops_bf16 is then its
  // fp32 rate). bench rates' dequant rate is their time over the float bank's in that dtype.
  const double expert_rate =
      cpu_quantized_in_fp32 ? cluster.tflops_fp32 * 1e12 / per_device : flops_rate;
  t.experts = experts * double(T) / expert_rate * micro_batches;
  // Beyond the FLOPs, per micro-batch: each decoder layer's fixed cost, and the traffic of what
  // autograd keeps. Every kept byte (activations, exchange buffers, logits) is written once by
  // the forward and read once by the backward, and so is its gradient; the logits' count with
  // the LM head. (Blocks above glibc's mmap threshold, 32 MiB at most, come as new pages at a
  // fraction of this rate on a CPU; in these models that is the experts' weight gradients,
  // which expert_wgrad_efficiency includes.)
  // Recomputation writes the activations once more and reads them back (2 more passes), and
  // takes each layer's fixed cost twice.
  t.rest +=
      ((1 + again) * double(c.num_hidden_layers) * cluster.layer_overhead_ms * 1e-3 * per_device +
       (4 + 2 * again) * kept_traffic / mem_rate) *
      micro_batches;
  if (!head_measured) t.lm_head += 4 * logits_traffic / mem_rate * micro_batches;
  if (quantized) {
    // Dequantising each local expert that gets rows (the slice loop; the grouped GEMM does them
    // all), forward and backward (every MoE layer holds the same slots): at the measured rate of
    // weights per second, or else as memory traffic: codes read, a full weight written and read
    // back by the GEMM. A recomputed forward dequantises once more, unless it keeps the weights
    // for its backward.
    double active_layers = 0;
    for (int64_t l = 0; l < w.moe_layers(); ++l)
      active_layers += bank_dequantised ? 1.0 : w.active_share(l);
    const double seconds_per_layer =
        cluster.dequant_gweights_per_s > 0
            ? layer_expert_weights / (cluster.dequant_gweights_per_s * 1e9 / per_device)
            : (double(p.expert_bytes) / double(w.moe_layers()) + 2.0 * ab * layer_expert_weights) /
                  mem_rate;
    const double passes = 2 + (keeps_recomputed ? 0.0 : again);
    t.experts += passes * active_layers * seconds_per_layer * micro_batches;
  }
  // All-to-all: four exchanges per MoE layer and micro-batch (dispatch and combine, forward and
  // backward), each rank sending tokens * k rows of H to the other EP ranks' experts; the
  // critical rank receives `imbalance` times the mean. Ranks of an EP group are consecutive, so
  // the group stays inside a node when EP <= devices per node.
  if (ep > 1) {
    const double row = ab * double(H);
    const double sent = double(T) * double(k) * row * double(ep - 1) / double(ep);
    t.all_to_all_bytes_per_layer = sent;
    const int dpn = cluster.devices_per_node;
    const double off_node = ep > dpn ? double(ep - dpn) / double(ep - 1) : 0.0;
    const double latency_us =
        off_node > 0 ? cluster.inter_node_latency_us : cluster.intra_node_latency_us;
    moe_index = 0;
    double seconds = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      if (!c.is_moe_layer(l)) continue;
      const double volume = sent * std::max(1.0, w.imbalance(moe_index++));
      const double intra = volume * (1 - off_node) / (cluster.intra_node_gbs * 1e9);
      const double inter = volume * off_node / (cluster.inter_node_gbs * 1e9);
      seconds += (4 + 2 * again) * (std::max(intra, inter) + latency_us * 1e-6);
    }
    t.all_to_all = seconds * micro_batches;
  }
  // Gradients once per step: replicated ones over the world, experts' over their DP group.
  auto all_reduce = [&](double bytes, int size, int stride) {
    const bool inter = spans_nodes(size, stride, cluster.devices_per_node);
    return ring_all_reduce_s(bytes, size, inter ? cluster.inter_node_gbs : cluster.intra_node_gbs,
                             inter ? cluster.inter_node_latency_us : cluster.intra_node_latency_us);
  };
  t.grad_allreduce = all_reduce(double(p.trainable_replicated) * wb, world, 1) +
                     all_reduce(double(p.trainable_experts) * wb, plan.dp, ep);
  // Measured per parameter when the cluster says (bench rates); else AdamW's least traffic:
  // weight, gradient and both moments read, weight and moments written.
  t.optimizer = cluster.optimizer_ns_per_param > 0
                    ? trainable * cluster.optimizer_ns_per_param * 1e-9 * per_device
                    : trainable * (3 * wb + 16) / mem_rate;
  plan.capacity_bytes = cluster.memory_gb * 1e9 / per_device;
  return plan;
}

}  // namespace switchyard
