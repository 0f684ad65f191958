// Route, dispatch, compute, combine; the shared expert runs on every token beside them.
#include "models/moe_block.h"

#include <chrono>

#include "common/errors.h"
#include "common/phase_clock.h"
#include "models/cpu_linear.h"
#include "parallel/expert_migration.h"
#include "routers/router_registry.h"

namespace switchyard {

MoeBlockImpl::MoeBlockImpl(MoeBlockOptions options, ProcessGroups groups)
    : options_(std::move(options)),
      groups_(std::move(groups)),
      dispatcher_(options_.num_experts(), groups_.ep, options_.placement()) {
  router = register_module("router",
                           make_router(RouterOptions(options_.hidden_size(), options_.num_experts(),
                                                     options_.router())));
  experts = register_module(
      "experts",
      ExpertBank(ExpertBankOptions(options_.hidden_size(), options_.expert_intermediate_size(),
                                   dispatcher_.num_local_experts())
                     .kind(options_.expert_kind())
                     .gemm(options_.gemm())
                     .quant(options_.expert_quant())));
  if (options_.shared_expert_intermediate_size() > 0) {
    shared_expert = register_module(
        "shared_expert",
        ExpertBank(
            ExpertBankOptions(options_.hidden_size(), options_.shared_expert_intermediate_size(), 1)
                .kind(options_.expert_kind())
                .quant(options_.quantize_shared_expert() ? options_.expert_quant()
                                                         : QuantOptions())));
    shared_expert_gate = register_module(
        "shared_expert_gate",
        torch::nn::Linear(torch::nn::LinearOptions(options_.hidden_size(), 1).bias(false)));
  }
}

std::vector<torch::Tensor> MoeBlockImpl::replicated_parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& child : named_children()) {
    if (child.key() == "experts") continue;
    for (const auto& p : child.value()->parameters()) out.push_back(p);
  }
  return out;
}

void MoeBlockImpl::move_experts(const LayerPlacement& placement,
                                std::vector<torch::Tensor> riders) {
  const AllToAllDispatcher moved(options_.num_experts(), groups_.ep, placement);
  SY_CHECK(moved.num_local_experts() == dispatcher_.num_local_experts(),
           "move_experts: ", moved.num_local_experts(), " slots per rank, the block holds ",
           dispatcher_.num_local_experts());
  const MigrationPlan plan = migration_plan(dispatcher_.placement(), placement, groups_.ep_rank());
  for (const auto& p : experts->parameters()) riders.push_back(p);
  for (const auto& b : experts->buffers()) riders.push_back(b);
  for (auto& t : riders) {
    if (t.numel() == 0) continue;  // quantized experts' empty placeholders
    migrate_expert_rows(t, plan, *groups_.ep);
  }
  dispatcher_ = moved;
  options_.placement(placement);
}

void MoeBlockImpl::set_distillation_teacher(const torch::Tensor& gate_weight) {
  if (!gate_weight.defined()) {
    teacher_ = torch::Tensor();
    return;
  }
  SY_CHECK(gate_weight.dim() == 2 && gate_weight.size(0) == options_.num_experts() &&
               gate_weight.size(1) == options_.hidden_size(),
           "distillation teacher gate ", gate_weight.sizes(), " is not [", options_.num_experts(),
           ", ", options_.hidden_size(), "]");
  teacher_ = gate_weight.detach().to(torch::kFloat).contiguous();
}

namespace {

// The router (student) against the original gate (teacher) on the same tokens.
void distillation_terms(const Routing& teacher, const Routing& student, MoeOutput& out) {
  const int64_t T = student.logits.size(0), k = teacher.topk_ids.size(1);
  if (T == 0) {  // stays in the graph, so a backward over every layer's loss still works
    out.distill_loss = student.logits.sum().to(torch::kFloat) * 0.0;
    return;
  }
  auto t_logp = torch::log_softmax(teacher.logits.to(torch::kFloat), -1);
  auto s_logp = torch::log_softmax(student.logits.to(torch::kFloat), -1);
  out.distill_loss = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean();
  // Top-k sets of both, compared as sets: [T, k, 1] == [T, 1, k'].
  const int64_t ks = student.topk_ids.size(1);
  auto same = teacher.topk_ids.unsqueeze(2).eq(student.topk_ids.unsqueeze(1)).any(2);
  out.topk_agreement = same.sum().to(torch::kDouble) / double(T * std::min(k, ks));
}

}  // namespace

MoeOutput MoeBlockImpl::forward(const torch::Tensor& hidden, const torch::Tensor& token_ids) {
  const int64_t H = options_.hidden_size();
  SY_CHECK(hidden.size(-1) == H, "MoeBlock: hidden size ", hidden.size(-1), ", expected ", H);
  // Phase boundaries (common/phase_clock.h) time a profiled training step, forward and
  // backward: each marks where one piece's tensor hands over to the next. Otherwise they return
  // their input.
  auto x = phase_boundary(hidden.reshape({-1, H}), StepPhase::kOther, StepPhase::kRouter);
  auto ids = token_ids.defined() ? token_ids.reshape({-1}) : token_ids;

  // Timing reads the clock once queued device work is done (CUDA runs asynchronously).
  using Clock = std::chrono::steady_clock;
  auto tick = [&] {
    if (timing_ && x.is_cuda()) torch::cuda::synchronize();
    return timing_ ? Clock::now() : Clock::time_point();
  };
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };

  MoeOutput out;
  const auto t0 = tick();
  out.routing = router->route(x, ids);
  if (teacher_.defined()) {
    Routing student = std::move(out.routing);
    torch::Tensor teacher_logits;
    {
      torch::NoGradGuard no_grad;
      // The teacher moves to the activations' device once, not in every forward (a copy to a
      // GPU from pageable memory waits for the device's queue).
      if (teacher_.device() != x.device()) teacher_ = teacher_.to(x.device());
      teacher_logits =
          torch::matmul(x.detach().to(torch::kFloat), teacher_.t()).to(x.scalar_type());
    }
    out.routing = gate(teacher_logits, router->gating());
    distillation_terms(out.routing, student, out);
  }
  const auto t1 = tick();
  out.routing.topk_weights =
      phase_boundary(out.routing.topk_weights, StepPhase::kRouter, StepPhase::kDispatch);
  auto [tokens, handle] = dispatcher_.dispatch(x, out.routing);
  const auto t2 = tick();
  auto expert_out =
      experts->forward(phase_boundary(tokens.hidden, StepPhase::kDispatch, StepPhase::kExperts),
                       tokens.tokens_per_expert);
  const auto t3 = tick();
  auto y = dispatcher_.combine(phase_boundary(expert_out, StepPhase::kExperts, StepPhase::kCombine),
                               handle);
  if (shared_expert) {
    y = phase_boundary(y, StepPhase::kCombine, StepPhase::kSharedExpert);
    auto shared = shared_expert->forward_one(0, x);
    y = y + torch::sigmoid(forward_linear(shared_expert_gate, x)) * shared;
  }
  if (timing_) out.timing = {seconds(t0, t1), seconds(t2, t3), seconds(t0, tick())};
  out.hidden = phase_boundary(y.reshape(hidden.sizes()),
                              shared_expert ? StepPhase::kSharedExpert : StepPhase::kCombine,
                              StepPhase::kOther);
  out.routed_per_expert = std::move(handle.routed_per_expert);
  out.tokens_per_local_expert = std::move(tokens.tokens_per_expert);
  out.num_dropped = handle.num_dropped;
  return out;
}

}  // namespace switchyard
