// The eval loop and its reductions, for either task. Every per-rank quantity is accumulated locally
// in int64 or double and reduced once at the end, so a 4-rank run and a 1-rank run add the same
// numbers.
#include "eval/model_eval.h"

#include <chrono>
#include <cmath>
#include <set>

#include "common/autocast.h"
#include "common/errors.h"
#include "routers/router_registry.h"

namespace switchyard {
namespace {

int64_t numel_of(const std::vector<torch::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

/// The routing of the rows where `keep` is true (padding positions left out).
Routing select_tokens(const Routing& r, const torch::Tensor& keep) {
  auto idx = keep.nonzero().reshape({-1}).to(r.topk_ids.device());
  Routing s;
  s.scores = r.scores.index_select(0, idx);
  s.topk_ids = r.topk_ids.index_select(0, idx);
  s.dropped = r.dropped.index_select(0, idx);
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ParameterCounts count_parameters(const TaskModel& model, const ProcessGroups& groups) {
  ParameterCounts counts;
  int64_t local_experts = 0, shared = 0;
  for (const auto& moe : model.moe_blocks()) {
    counts.router += numel_of(moe->router->parameters());
    local_experts += moe->experts->num_logical_parameters();
    if (moe->shared_expert) shared += moe->shared_expert->num_logical_parameters();
  }
  // Expert banks are counted by their logical weights (quantized codes are buffers); a tied
  // LM head is the embedding's tensor and counts once.
  int64_t other = 0;
  std::set<const void*> seen;
  for (const auto& p : model.module().named_parameters()) {
    const std::string& name = p.key();
    if (name.find(".moe.experts.") != std::string::npos ||
        name.find(".moe.shared_expert.") != std::string::npos)
      continue;
    if (seen.insert(p.value().data_ptr()).second) other += p.value().numel();
  }
  auto experts = torch::tensor({local_experts}, torch::kLong);
  groups.ep->all_reduce(experts);
  counts.routed_experts = experts.item<int64_t>();
  counts.total = other + shared + counts.routed_experts;
  const int64_t E = std::max<int64_t>(1, model.num_experts());
  counts.active = counts.total - counts.routed_experts + counts.routed_experts * model.top_k() / E;
  return counts;
}

ClassificationScores classification_scores(const torch::Tensor& confusion) {
  auto c = confusion.to(torch::kDouble);
  const double total = c.sum().item<double>();
  ClassificationScores s;
  if (total == 0) return s;
  auto tp = c.diagonal();
  s.accuracy = tp.sum().item<double>() / total;
  auto support = c.sum(1), predicted = c.sum(0);
  auto present = support.gt(0).logical_or(predicted.gt(0));
  // F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted); 0 where a label has neither.
  auto f1 = (2 * tp / (support + predicted).clamp_min(1)).index({present});
  s.macro_f1 = f1.numel() ? f1.mean().item<double>() : 0.0;
  return s;
}

EvalReport evaluate_model(const TaskModel& model, const ProcessGroups& groups, const EvalSet& set,
                          const ModelEvalOptions& options) {
  SY_CHECK(options.batch_size > 0, "eval: batch size must be positive");
  const bool classifies = model.task() == Task::kSequenceClassification;
  if (set.classification() != classifies)
    throw ConfigError(set.source + ": " +
                      (classifies
                           ? "the model classifies sequences; expected a labelled JSONL set"
                           : "the model is a causal LM; expected a token file or token lines"));
  torch::NoGradGuard no_grad;
  model.module().eval();
  const std::vector<int64_t>& moe_layers = model.moe_layers();
  if (moe_layers.empty()) throw ConfigError("eval: the model has no MoE layers");
  const int64_t L = int64_t(moe_layers.size()), E = model.num_experts();
  const int W = groups.world->size(), rank = groups.world->rank();
  const int64_t N = set.rows(), B = options.batch_size;
  const int64_t steps = (N + W * B - 1) / (W * B);
  const auto device = model.device();
  auto batch_of = [&](int64_t first, int64_t n) {
    // Built on the host and then moved: to() counts the targets there, not on the device.
    return TaskBatch{set.input_ids.narrow(0, first, n), set.attention_mask.narrow(0, first, n),
                     set.targets.narrow(0, first, n)}
        .to(device);
  };

  // One untimed forward first (collective, so every rank makes it): the first call pays one-off
  // costs (allocator, thread pool, kernel choice) that would otherwise land on layer 0's router.
  const int64_t warm = std::min(B, N);
  AutocastScope amp(device, options.bf16_autocast);
  if (options.time_moe) model.forward(batch_of(0, warm));
  for (auto moe : model.moe_blocks()) moe->set_timing(options.time_moe);

  // Local accumulators: counts [L, E]; per layer {tokens, assignments, dropped}; per layer
  // {entropy·tokens, router_s, moe_s}; and this rank's totals.
  auto load = torch::zeros({L, E}, torch::kLong);
  auto layer_counts = torch::zeros({L, 3}, torch::kLong);
  auto layer_sums = torch::zeros({L, 3}, torch::kDouble);
  int64_t tokens = 0, predicted = 0;
  double nll = 0, forward_s = 0, moe_s = 0, experts_s = 0;
  const int64_t C = std::max<int64_t>(1, model.num_labels());
  auto confusion = torch::zeros({C, C}, torch::kLong);  // classification: [true, predicted]

  for (int64_t step = 0; step < steps; ++step) {
    const int64_t begin = (step * W + rank) * B;
    const bool real = begin < N;
    const int64_t first = real ? begin : 0, n = real ? std::min(B, N - begin) : 1;
    const TaskBatch batch = batch_of(first, n);
    const auto& mask = batch.attention_mask;
    const auto start = std::chrono::steady_clock::now();
    TaskOutput out = model.forward(batch);
    const double loss_sum = out.loss_sum.item<double>();
    forward_s += seconds_since(start);
    for (const auto& m : out.moe) {
      moe_s += m.timing.total_s;
      experts_s += m.timing.experts_s;
    }
    if (!real) continue;
    nll += loss_sum;
    predicted += out.num_targets;
    if (classifies)
      confusion.index_put_({batch.targets.cpu(), out.predictions.cpu()},
                           torch::ones({n}, torch::kLong),
                           /*accumulate=*/true);
    tokens += mask.sum().item<int64_t>();
    auto keep = mask.reshape({-1}).to(torch::kBool);
    for (int64_t l = 0; l < L; ++l) {
      const MoeOutput& m = out.moe[size_t(l)];
      RoutingStats s = RoutingStats::from_routing(select_tokens(m.routing, keep), E);
      load[l].add_(torch::tensor(s.expert_tokens, torch::kLong));
      layer_counts[l].add_(torch::tensor({s.num_tokens, s.num_assignments, s.num_dropped}));
      layer_sums[l].add_(torch::tensor(
          {s.token_entropy * double(s.num_tokens), m.timing.router_s, m.timing.total_s},
          torch::kDouble));
    }
  }

  // Tokens received by this rank: what its EP group routed to the experts its slots hold, over
  // all layers (a replicated expert's tokens counted as an even share of its copies).
  auto group_load = load.clone();
  groups.ep->all_reduce(group_load);
  int64_t received = 0;
  for (int64_t l = 0; l < L; ++l) {
    const LayerPlacement& placement = model.moe_blocks()[size_t(l)]->dispatcher().placement();
    const auto copies = placement.copies(E);
    for (int64_t e : placement.slots[size_t(groups.ep_rank())])
      received += group_load[l][e].item<int64_t>() / copies[size_t(e)];
  }

  auto scalars = torch::tensor({tokens, predicted}, torch::kLong);
  auto nll_sum = torch::tensor({nll}, torch::kDouble);
  groups.world->all_reduce(load);
  groups.world->all_reduce(layer_counts);
  groups.world->all_reduce(layer_sums);
  groups.world->all_reduce(scalars);
  groups.world->all_reduce(nll_sum);
  groups.world->all_reduce(confusion);
  auto rank_ints = groups.world->all_gather(
      torch::tensor({int64_t(rank), int64_t(groups.ep_rank()), received}, torch::kLong)
          .view({1, 3}));
  auto rank_times = groups.world->all_gather(
      torch::tensor({forward_s, moe_s, experts_s}, torch::kDouble).view({1, 3}));

  EvalReport r;
  const auto& router = model.moe_blocks().front()->options().router();
  r.task = model.task_name();
  r.router = router_entry(router_kind(router)).name;
  r.router_config = router.ShortDebugString();
  r.num_experts = E;
  r.top_k = model.top_k();
  r.world_size = W;
  r.expert_parallel = groups.ep_size();
  r.sequences = N;
  r.data = set.source;
  r.data_format = set.format;
  r.tokens = scalars[0].item<int64_t>();
  r.predicted = scalars[1].item<int64_t>();
  r.mean_nll = nll_sum.item<double>() / double(r.predicted);
  r.perplexity = std::exp(r.mean_nll);
  if (classifies) {
    const ClassificationScores scores = classification_scores(confusion);
    r.accuracy = scores.accuracy;
    r.macro_f1 = scores.macro_f1;
    r.label_names = set.label_names;
  }
  r.parameters = count_parameters(model, groups);
  for (int64_t l = 0; l < L; ++l) {
    LayerReport lr;
    lr.layer = moe_layers[size_t(l)];
    auto row = load[l].contiguous();
    lr.routing.expert_tokens.assign(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + E);
    lr.routing.num_tokens = layer_counts[l][0].item<int64_t>();
    lr.routing.num_assignments = layer_counts[l][1].item<int64_t>();
    lr.routing.num_dropped = layer_counts[l][2].item<int64_t>();
    lr.routing.token_entropy = lr.routing.num_tokens
                                   ? layer_sums[l][0].item<double>() / double(lr.routing.num_tokens)
                                   : 0.0;
    lr.routing.recompute_load_metrics();
    lr.router_s = layer_sums[l][1].item<double>() / W;
    lr.moe_s = layer_sums[l][2].item<double>() / W;
    const torch::Tensor& bias = model.moe_blocks()[size_t(l)]->router->expert_bias();
    if (bias.defined()) {
      auto b = bias.to(torch::kCPU, torch::kDouble).contiguous();
      lr.expert_bias.assign(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
    }
    lr.placement = model.moe_blocks()[size_t(l)]->dispatcher().placement().slots;
    r.layers.push_back(std::move(lr));
  }
  for (int k = 0; k < W; ++k) {
    RankReport rr;
    rr.rank = int(rank_ints[k][0].item<int64_t>());
    rr.ep_rank = int(rank_ints[k][1].item<int64_t>());
    rr.tokens_received = rank_ints[k][2].item<int64_t>();
    rr.forward_s = rank_times[k][0].item<double>();
    rr.moe_s = rank_times[k][1].item<double>();
    rr.experts_s = rank_times[k][2].item<double>();
    r.ranks.push_back(rr);
  }
  for (auto moe : model.moe_blocks()) moe->set_timing(false);
  return r;
}

}  // namespace switchyard
