#include "trainer/trainer.h"

#include <cmath>
#include <set>
#include <sstream>

#include "common/autocast.h"
#include "common/errors.h"
#include "common/host_reads.h"
#include "common/phase_clock.h"
#include "trainer/gradient_checks.h"
#include "trainer/lr_schedule.h"

namespace switchyard {

bool uses_bf16_autocast(const config::TrainConfig& train, torch::Device device) {
  switch (train.precision()) {
    case config::PRECISION_FP32:
      return false;
    case config::PRECISION_BF16:
      return true;
    default:  // PRECISION_AUTO
      return device.is_cuda();
  }
}

Trainer::Trainer(TaskModel model, ProcessGroups groups, config::TrainConfig train)
    : model_(std::move(model)),
      groups_(std::move(groups)),
      train_(std::move(train)),
      autocast_(uses_bf16_autocast(train_, model_.device())) {
  std::set<const void*> routers;
  for (auto moe : model_.moe_blocks()) {  // a copy of the holder: non-const access
    for (const auto& p : moe->router->parameters()) routers.insert(p.unsafeGetTensorImpl());
    for (const auto& p : moe->expert_parameters())
      expert_placement_[p.unsafeGetTensorImpl()] = moe->dispatcher().placement();
    // The load-balancing loss balances the global batch, whatever the number of ranks.
    moe->router->set_balance_group(groups_.world);
  }

  NamedTensors trainable;
  for (auto& item : model_.module().named_parameters()) {
    auto& p = item.value();
    const bool is_router = routers.count(p.unsafeGetTensorImpl()) > 0;
    // Integer codes and the empty placeholders of quantized experts never train.
    const bool can_train = p.is_floating_point() && p.numel() > 0;
    p.set_requires_grad(can_train && (is_router || !train_.routers_only()));
    if (!p.requires_grad()) continue;
    trainable.emplace_back(item.key(), p);
    (is_expert_sharded(p) ? expert_sharded_ : replicated_).push_back(p);
  }
  std::set<const void*> biases;
  for (auto moe : model_.moe_blocks())
    if (moe->router->expert_bias().defined())
      biases.insert(moe->router->expert_bias().unsafeGetTensorImpl());
  for (const auto& item : model_.module().named_buffers())
    if (biases.count(item.value().unsafeGetTensorImpl()))
      trained_buffers_.emplace_back(item.key(), item.value());
  SY_CHECK(!trainable.empty(), "train: no trainable parameters (routers_only with a Hash router?)");
  optimizer_ = std::make_unique<AdamW>(trainable, AdamWOptions()
                                                      .beta1(train_.adam_beta1())
                                                      .beta2(train_.adam_beta2())
                                                      .eps(train_.adam_eps())
                                                      .weight_decay(train_.weight_decay()));
  build_gradient_sync();
  build_rate_table();
}

void Trainer::build_gradient_sync() {
  sync_ = std::make_unique<GradientSync>(groups_, replicated_, expert_sharded_);
  // A replicated expert's copies take the gradient of all its tokens, so they stay equal.
  for (const auto& p : expert_sharded_) sync_->add_replicated_experts(p, expert_placement(p));
}

std::vector<LayerPlacement> Trainer::expert_placements() const {
  std::vector<LayerPlacement> out;
  for (const auto& moe : model_.moe_blocks()) out.push_back(moe->dispatcher().placement());
  return out;
}

void Trainer::set_expert_placements(const std::vector<LayerPlacement>& placements) {
  auto blocks = model_.moe_blocks();
  SY_CHECK(placements.size() == blocks.size(), "set_expert_placements: ", placements.size(),
           " placements for ", blocks.size(), " MoE layers");
  for (size_t l = 0; l < blocks.size(); ++l) {
    auto moe = blocks[l];  // a copy of the holder: non-const access
    const LayerPlacement& to = placements[l];
    // Every rank sees the same placements, so every rank skips the same layers.
    if (to.slots == moe->dispatcher().placement().slots) continue;
    std::vector<torch::Tensor> moments;
    for (const auto& p : moe->expert_parameters())
      for (const auto& m : optimizer_->moments(p)) moments.push_back(m);
    moe->move_experts(to, moments);
    for (const auto& p : moe->expert_parameters()) expert_placement_[p.unsafeGetTensorImpl()] = to;
  }
  build_gradient_sync();
}

void Trainer::set_distillation_teachers(std::vector<torch::Tensor> gates) {
  const int64_t moe_layers = int64_t(model_.moe_blocks().size());
  SY_CHECK(int64_t(gates.size()) == moe_layers, "distillation: ", gates.size(),
           " teacher gates for ", moe_layers, " MoE layers");
  SY_CHECK(
      train_.distill_steps() < train_.steps(), "train.distill_steps = ", train_.distill_steps(),
      ": must be below train.steps = ", train_.steps(), " (the rest fine-tunes on the task loss)");
  teachers_.clear();
  for (auto& gate : gates) teachers_.push_back(gate.to(model_.device()));  // read every step
  build_rate_table();  // distillation has its own schedule
}

bool Trainer::distilling() const {
  return projected_steps() < distill_steps();
}

void Trainer::prepare_routing() {
  const bool distil = distilling();
  size_t i = 0;
  for (auto moe : model_.moe_blocks())  // a copy of the holder: non-const access
    moe->set_distillation_teacher(distil ? teachers_[i++] : torch::Tensor());
}

double Trainer::learning_rate(int64_t step) const {
  const int64_t distill = distill_steps();
  if (distill == 0) return learning_rate_at(train_, step);
  config::TrainConfig phase = train_;
  phase.set_steps(int32_t(step < distill ? distill : train_.steps() - distill));
  return learning_rate_at(phase, step < distill ? step : step - distill);
}

void Trainer::build_rate_table() {
  std::vector<double> rates;
  for (int64_t step = 0; step <= std::max<int64_t>(0, train_.steps()); ++step)
    rates.push_back(learning_rate(step));
  rates_ = torch::tensor(rates, torch::kDouble).to(model_.device());
}

torch::Tensor Trainer::gradient_norm_squared() {
  // Replicated gradients are equal on every rank after the sync; expert gradients differ
  // across the EP group, so their squares are summed over it. Everything stays on the model's
  // device (bare NCCL groups need it there; a GPU need not wait).
  const auto device = model_.device();
  auto square_sum = [&](const std::vector<torch::Tensor>& ps) {
    std::vector<torch::Tensor> parts;
    for (const auto& p : ps) {
      if (!p.grad().defined()) continue;
      auto g = p.grad();
      // A replicated expert counts once: only its first copy's rows (LayerPlacement::owned).
      if (is_expert_sharded(p) && expert_placement(p).replicated()) {
        std::vector<int64_t> rows;
        const auto owned = expert_placement(p).owned(groups_.ep_rank());
        for (size_t s = 0; s < owned.size(); ++s)
          if (owned[s] >= 0) rows.push_back(int64_t(s));
        g = g.index_select(0, torch::tensor(rows, torch::kLong).to(g.device()));
      }
      parts.push_back(squared_sum_in_double(g).to(device));
    }
    return parts.empty() ? torch::zeros({}, torch::dtype(torch::kDouble).device(device))
                         : torch::stack(parts).sum();
  };
  auto experts = square_sum(expert_sharded_);
  if (groups_.ep_size() > 1 && !expert_sharded_.empty()) groups_.ep->all_reduce(experts);
  return square_sum(replicated_) + experts;
}

void Trainer::update_expert_biases(const std::vector<torch::Tensor>& selections,
                                   const torch::Tensor& apply) {
  std::vector<torch::Tensor> parts;
  for (const auto& s : selections)
    if (s.defined()) parts.push_back(s);
  if (parts.empty()) return;
  // Counts are integers: their sum over the world is exact, so every rank (and every EP size)
  // moves the biases alike.
  auto global = torch::stack(parts);
  if (groups_.world->size() > 1) groups_.world->all_reduce(global);
  // A skipped step's loads are all zero: mean - load is 0 everywhere and no bias moves.
  global = global * apply.to(global.scalar_type());
  size_t i = 0, l = 0;
  for (auto moe : model_.moe_blocks()) {  // a copy of the holder: non-const access
    if (selections[l++].defined()) moe->router->update_expert_bias(global[int64_t(i++)]);
  }
}

void Trainer::clip_gradients(const torch::Tensor& norm) {
  if (train_.grad_clip() <= 0) return;
  torch::NoGradGuard no_grad;
  // One pass over the gradients either way: a GPU must not wait for the norm to skip it.
  const auto scale = clipping_scale(norm, train_.grad_clip());
  for (auto& [name, p] : optimizer_->params())
    if (p.grad().defined()) p.grad().mul_(scale);
}

namespace {

// Per-expert choices [E] of a routing, counted on its device (scatter-add: bincount reads its
// input's maximum back from a GPU).
torch::Tensor choices_per_expert(const torch::Tensor& topk_ids, int64_t num_experts) {
  auto ids = topk_ids.reshape({-1}).to(torch::kLong);
  return torch::zeros({num_experts}, ids.options()).scatter_add_(0, ids, torch::ones_like(ids));
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

}  // namespace

StepMetrics Trainer::step(const std::vector<TaskBatch>& micro_batches) {
  SY_CHECK(pending_.empty(), "train: step() with ", pending_.size(),
           " launched steps unresolved (resolve() them first)");
  launch(micro_batches);
  return resolve().front();
}

// A pending step's numbers on the device, one double each, in this order: task, router and
// distillation losses, top-k agreement, rows, correct rows (all summed over the world), every
// rank's verdict (1: non-finite loss, 2: non-finite gradients), the gradient norm's square,
// this rank's tokens, the step's verdict (1: applied), then per MoE layer the aux losses, the z
// losses and the routing entropies.
namespace {
constexpr int64_t kReducedScalars = 6;
}

void Trainer::launch(const std::vector<TaskBatch>& micro_batches) {
  SY_CHECK(!micro_batches.empty(), "train: a step needs at least one micro-batch");
  model_.module().train();
  StepMetrics m;
  const int64_t reads_before = host_reads();
  m.distilling = distilling();
  prepare_routing();
  const double n = double(micro_batches.size());
  const bool classifies = model_.task() == Task::kSequenceClassification;
  const auto device = model_.device();
  // Losses, counts and per-layer numbers are summed where they are computed, on the device, and
  // read to the host by resolve(): a GPU never waits inside the step or between steps. The
  // expert counts are already on the host (each dispatch reads its counts once).
  auto zero = [&] { return torch::zeros({}, torch::dtype(torch::kDouble).device(device)); };
  torch::Tensor task_sum = zero(), router_sum = zero(), distill_sum = zero(), tokens = zero(),
                correct = zero(), agreement_sum = zero();
  std::vector<torch::Tensor> aux, z, entropy;
  std::vector<RoutingStats> layer_stats;  ///< counts per layer, summed over micro-batches
  int64_t rows = 0;
  std::vector<torch::Tensor> selections;  ///< per layer with an expert bias: choices per expert
  for (const auto& micro_batch : micro_batches) {
    const TaskBatch batch = micro_batch.to(device);
    TaskOutput out;
    {
      AutocastScope amp(device, autocast_);  // forward only: backward replays its casts
      out = model_.forward(batch, /*loss_trains=*/!m.distilling);
    }
    SY_CHECK(out.num_targets > 0, "train: a micro-batch without targets");
    auto task = out.loss_sum / double(out.num_targets);
    torch::Tensor loss = task + out.router_loss;
    if (m.distilling) {
      loss = torch::zeros({}, task.options());
      for (const auto& moe : out.moe) {
        loss = loss + moe.distill_loss;
        distill_sum = distill_sum +
                      moe.distill_loss.detach().to(torch::kDouble) / (n * double(out.moe.size()));
        if (moe.topk_agreement.defined())  // undefined on a rank without tokens
          agreement_sum = agreement_sum + moe.topk_agreement / (n * double(out.moe.size()));
      }
      loss = loss / double(out.moe.size());
    }
    (loss / n).backward();
    enter_phase(StepPhase::kOther);
    task_sum = task_sum + task.detach().to(torch::kDouble) / n;
    router_sum = router_sum + out.router_loss.detach().to(torch::kDouble) / n;
    tokens = tokens + batch.attention_mask.sum().to(torch::kDouble);
    if (classifies) {
      rows += out.num_targets;
      correct = correct + out.predictions.eq(batch.targets).sum().to(torch::kDouble);
    }
    if (m.tokens_per_local_expert.empty()) {
      m.tokens_per_local_expert.resize(out.moe.size());
      layer_stats.resize(out.moe.size());
      aux.assign(out.moe.size(), zero());
      z.assign(out.moe.size(), zero());
      entropy.assign(out.moe.size(), zero());
      selections.resize(out.moe.size());
    }
    for (size_t l = 0; l < out.moe.size(); ++l) {
      const auto& moe = out.moe[l];
      const int64_t E = int64_t(moe.routed_per_expert.size());
      if (model_.moe_blocks()[l]->router->expert_bias().defined()) {
        auto chosen = choices_per_expert(moe.routing.topk_ids, E);
        selections[l] = selections[l].defined() ? selections[l] + chosen : chosen;
      }
      aux[l] = aux[l] + moe.routing.aux_loss.detach().to(torch::kDouble) / n;
      z[l] = z[l] + moe.routing.z_loss.detach().to(torch::kDouble) / n;
      entropy[l] = entropy[l] + per_token_routing_entropy(moe.routing).sum();
      // Kept assignments per expert: what the dispatch sent, already on the host.
      RoutingStats& s = layer_stats[l];
      if (s.expert_tokens.empty()) s.expert_tokens.assign(size_t(E), 0);
      int64_t kept = 0;
      for (int64_t e = 0; e < E; ++e) {
        s.expert_tokens[size_t(e)] += moe.routed_per_expert[size_t(e)];
        kept += moe.routed_per_expert[size_t(e)];
      }
      s.num_tokens += moe.routing.topk_ids.size(0);
      s.num_assignments += moe.routing.topk_ids.numel();
      s.num_dropped += moe.routing.topk_ids.numel() - kept;
      auto& received = m.tokens_per_local_expert[l];
      received.resize(moe.tokens_per_local_expert.size());
      for (size_t e = 0; e < received.size(); ++e) received[e] += moe.tokens_per_local_expert[e];
    }
  }

  // This rank's own verdict, taken before the sync mixes gradients: 1 for a non-finite loss,
  // 2 for non-finite gradients. It travels with the losses, one slot per rank, and every rank
  // gets the world's sums. On the model's device, so that groups of a bare NCCL communicator work.
  const int world = groups_.world->size(), me = groups_.world->rank();
  enter_phase(StepPhase::kOptimizer);  // the verdict reads every gradient, as clipping does
  const auto loss_bad = torch::isfinite(task_sum + router_sum + distill_sum).logical_not();
  const auto grads_bad = local_gradients_finite(replicated_, expert_sharded_, device).logical_not();
  auto verdicts = torch::zeros({world}, torch::dtype(torch::kDouble).device(device));
  verdicts.index_put_({me}, loss_bad.to(torch::kDouble) + 2 * grads_bad.to(torch::kDouble));
  auto on_device = [&](double x) {
    return torch::full({}, x, torch::dtype(torch::kDouble).device(device));
  };
  auto reduced = torch::cat({torch::stack({task_sum, router_sum, distill_sum, agreement_sum,
                                           on_device(double(rows)), correct}),
                             verdicts});
  enter_phase(StepPhase::kGradientSync);
  groups_.world->all_reduce(reduced);
  sync_->synchronize();
  enter_phase(StepPhase::kOptimizer);
  // Every rank reaches the same verdict from the same reduced numbers and the same norm: all
  // update, or none does (parameters, moments, the schedule's count and the expert biases).
  const auto norm_squared = gradient_norm_squared();
  const auto apply = reduced.narrow(0, kReducedScalars, world)
                         .sum()
                         .eq(0)
                         .logical_and(torch::isfinite(norm_squared));
  clip_gradients(norm_squared.sqrt());
  const auto at = optimizer_->device_steps().clamp_max(rates_.size(0) - 1).reshape({1});
  optimizer_->step(rates_.index_select(0, at.to(rates_.device())).reshape({}), apply);
  optimizer_->zero_grad();
  enter_phase(StepPhase::kOther);
  // While distilling, the teachers chose the experts: their loads say nothing about the routers.
  if (!m.distilling) update_expert_biases(selections, apply);
  const int64_t L = int64_t(aux.size());
  std::vector<torch::Tensor> numbers{reduced, norm_squared.reshape({1}), tokens.reshape({1}),
                                     apply.to(torch::kDouble).reshape({1})};
  if (L > 0)
    numbers.insert(numbers.end(), {torch::stack(aux), torch::stack(z), torch::stack(entropy)});
  m.layer_stats = std::move(layer_stats);
  m.host_reads = host_reads() - reads_before;
  pending_.push_back({std::move(m), L, torch::cat(numbers)});
}

std::vector<StepMetrics> Trainer::resolve() {
  if (pending_.empty()) return {};
  const int64_t reads_before = host_reads();
  std::vector<torch::Tensor> numbers;
  for (const auto& p : pending_) numbers.push_back(p.numbers);
  // The one read for every pending step.
  const std::vector<double> host = read_values_to_host(torch::cat(numbers));
  const int world = groups_.world->size();
  const bool classifies = model_.task() == Task::kSequenceClassification;
  std::vector<StepMetrics> out;
  const double* v = host.data();
  for (auto& p : pending_) {
    StepMetrics m = std::move(p.host);
    const int64_t L = p.layers;
    const double* layer = v + kReducedScalars + world + 3;
    std::vector<RoutingStats> counted;  // launch() left the dispatches' counts here
    counted.swap(m.layer_stats);
    for (int64_t l = 0; l < L; ++l) {
      m.layer_aux_loss.push_back(layer[l]);
      m.layer_z_loss.push_back(layer[L + l]);
      RoutingStats& s = counted[size_t(l)];
      s.token_entropy = s.num_tokens > 0 ? layer[2 * L + l] / double(s.num_tokens) : 0.0;
      s.recompute_load_metrics();
      m.layer_stats.push_back(s);
    }
    if (classifies) m.accuracy = v[5] / v[4];
    m.task_loss = v[0] / world;
    m.router_loss = v[1] / world;
    m.distill_kl = v[2] / world;
    m.topk_agreement = v[3] / world;
    m.loss = m.distilling ? m.distill_kl : m.task_loss + m.router_loss;
    m.grad_norm = std::sqrt(v[kReducedScalars + world]);
    m.tokens = int64_t(v[kReducedScalars + world + 1]);
    const bool applied = v[kReducedScalars + world + 2] != 0;
    m.lr = learning_rate(optimizer_->steps());
    if (applied) {
      optimizer_->count_applied(1);
      m.step = optimizer_->steps();
    } else {
      m.skipped = true;
      m.step = optimizer_->steps() + 1;
      std::vector<int> bad_loss, bad_grads;
      for (int r = 0; r < world; ++r) {
        const int verdict = int(v[kReducedScalars + r]);
        if (verdict & 1) bad_loss.push_back(r);
        if (verdict & 2) bad_grads.push_back(r);
      }
      std::ostringstream why;
      if (!bad_loss.empty())
        why << "non-finite loss (" << m.loss << ") on rank(s) " << ranks_text(bad_loss);
      else if (!bad_grads.empty())
        why << "non-finite gradients on rank(s) " << ranks_text(bad_grads);
      else
        why << "non-finite gradient norm (" << m.grad_norm << ")";
      m.skip_reason = why.str();
      m.skip_rank = !bad_loss.empty()    ? bad_loss.front()
                    : !bad_grads.empty() ? bad_grads.front()
                                         : -1;
    }
    out.push_back(std::move(m));
    v += p.numbers.numel();
  }
  pending_.clear();
  out.back().host_reads += host_reads() - reads_before;
  return out;
}

}  // namespace switchyard
