// The MoE block: router -> dispatcher -> local expert bank -> combine, plus Qwen1.5-MoE's
// sigmoid-gated shared expert. The residual connection belongs to the caller.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "configs/switchyard.pb.h"
#include "models/expert_bank.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/process_groups.h"
#include "routers/router.h"

namespace switchyard {

struct MoeBlockOptions {
  MoeBlockOptions(int64_t hidden_size, int64_t num_experts, int64_t expert_intermediate_size)
      : hidden_size_(hidden_size),
        num_experts_(num_experts),
        expert_intermediate_size_(expert_intermediate_size) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, num_experts);  ///< global; EP must divide it
  TORCH_ARG(int64_t, expert_intermediate_size);
  TORCH_ARG(int64_t, shared_expert_intermediate_size) = 0;  ///< 0: no shared expert
  TORCH_ARG(ExpertKind, expert_kind) = ExpertKind::kSwiGlu;
  TORCH_ARG(GroupedGemm, gemm) = GroupedGemm::kAuto;
  TORCH_ARG(config::RouterConfig, router);
  TORCH_ARG(QuantOptions, expert_quant);  ///< routed experts built quantized
  TORCH_ARG(bool, quantize_shared_expert) = false;
  /// Which experts each EP rank's slots hold (parallel/placement.h); empty: the contiguous split.
  TORCH_ARG(LayerPlacement, placement);
};

/// Wall-clock seconds of one forward's pieces, filled only after MoeBlockImpl::set_timing(true):
/// it waits for the device around each piece, so training leaves it off (`switchyard eval`).
struct MoeTiming {
  double router_s = 0;   ///< router->route (logits and gating)
  double experts_s = 0;  ///< this rank's routed experts on the rows they received
  double total_s = 0;    ///< the whole block, router, exchanges and shared expert included
};

/// What one forward produces besides the hidden states: the routing (for the aux losses and
/// statistics) and where the tokens went.
struct MoeOutput {
  torch::Tensor hidden;                          ///< same shape as the input
  Routing routing;                               ///< over this rank's tokens
  std::vector<int64_t> routed_per_expert;        ///< [E] assignments this rank sent out
  std::vector<int64_t> tokens_per_local_expert;  ///< rows this rank's experts received
  int64_t num_dropped = 0;                       ///< assignments dropped by capacity here
  /// While distilling (MoeBlockImpl::set_distillation_teacher): KL(teacher || router) of the
  /// routing distributions, mean over this rank's tokens, differentiable in the router; and the
  /// fraction of the teacher's top-k experts the router also picks (a 0-dim double on the
  /// device, so that no layer reads to the host). Undefined otherwise.
  torch::Tensor distill_loss;
  torch::Tensor topk_agreement;
  MoeTiming timing;  ///< zeros unless set_timing(true)
};

/// Each rank holds the full router and shared expert (replicated) and its placement's routed
/// expert slots (E / EP contiguous experts by default).
///   usage: MoeBlock moe(MoeBlockOptions(2048, 60, 1408).shared_expert_intermediate_size(5632)
///                           .router(cfg.router()), groups);
///          MoeOutput out = moe->forward(hidden, token_ids);
///          hidden = hidden + out.hidden;
class MoeBlockImpl : public torch::nn::Module {
 public:
  MoeBlockImpl(MoeBlockOptions options, ProcessGroups groups);

  /// hidden [..., H] (any leading shape); token_ids with the same leading shape, needed by the
  /// Hash router only. Collective over the EP group in forward and backward.
  MoeOutput forward(const torch::Tensor& hidden, const torch::Tensor& token_ids = {});

  /// Parameters that are sharded over EP (the routed experts); all others are replicated.
  std::vector<torch::Tensor> expert_parameters() const { return experts->parameters(); }
  std::vector<torch::Tensor> replicated_parameters() const;

  /// Router warm start by distillation: while `gate_weight` [E, H] (the checkpoint's original
  /// linear gate) is set, tokens are routed by it, so every layer sees the original model's
  /// activations, and the router's own logits only feed MoeOutput::distill_loss. An undefined
  /// tensor ends distillation.
  void set_distillation_teacher(const torch::Tensor& gate_weight);
  bool distilling() const { return teacher_.defined(); }
  /// Times the router, the local experts and the whole block in every forward (MoeOutput::timing).
  void set_timing(bool on) { timing_ = on; }

  const MoeBlockOptions& options() const { return options_; }
  const AllToAllDispatcher& dispatcher() const { return dispatcher_; }
  /// Live re-placement: moves this rank's routed expert slots to `placement` (the same number
  /// of slots per rank). Every expert tensor's rows — weights, quantized codes and scales — and
  /// those of `riders` (tensors shaped like expert parameters: their AdamW moments) travel to
  /// the ranks that hold them now (parallel/expert_migration.h), in place, and the dispatcher
  /// routes by the new placement. Collective over the EP group.
  void move_experts(const LayerPlacement& placement, std::vector<torch::Tensor> riders = {});

  RouterPtr router;
  ExpertBank experts{nullptr};
  ExpertBank shared_expert{nullptr};
  torch::nn::Linear shared_expert_gate{nullptr};

 private:
  MoeBlockOptions options_;
  ProcessGroups groups_;
  AllToAllDispatcher dispatcher_;
  torch::Tensor teacher_;  ///< [E, H] fp32 original gate while distilling
  bool timing_ = false;
};
TORCH_MODULE(MoeBlock);

}  // namespace switchyard
