// One optimizer step of training an MoE model under expert parallelism, for its task (causal LM
// or sequence classification, models/task_model.h): micro-batch forward and backward with
// gradient accumulation, gradient sync (replicated parameters over
// the world, experts over their DP replicas), clipping by the global norm, AdamW at the
// schedule's rate. The loop around it (data, logs, checkpoints) is trainer/training_run.h's.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <set>
#include <vector>

#include "configs/switchyard.pb.h"
#include "models/task_model.h"
#include "parallel/gradient_sync.h"
#include "routers/routing_stats.h"
#include "trainer/adamw.h"

namespace switchyard {

/// What a step reports. Losses are means over every rank's tokens (identical on all ranks);
/// routing statistics are this rank's, summed over its micro-batches.
struct StepMetrics {
  int64_t step = 0;                                 ///< 1-based: the step just finished
  double loss = 0, task_loss = 0, router_loss = 0;  ///< task_loss: cross-entropy per target
  /// Classification: the fraction of this step's rows (all ranks) the classifier got right;
  /// negative for causal LMs.
  double accuracy = -1;
  double grad_norm = 0;  ///< before clipping, over every trainable parameter of the model
  double lr = 0;
  int64_t tokens = 0;  ///< real input tokens on this rank (the throughput's unit)
  /// Reads from the model's device to the host on this rank (common/host_reads.h) while the step
  /// ran, one per dispatch (its counts), plus, on the last step read by a Trainer::resolve(),
  /// that call's one read of every pending step's numbers.
  int64_t host_reads = 0;
  /// A profiled step (logging.phase_profile_interval): this rank's seconds per StepPhase
  /// (common/phase_clock.h), forward and backward together; empty for the other steps.
  std::vector<double> phase_seconds;
  /// Router warm start (Trainer::set_distillation_teachers): this step trained the routers to
  /// imitate the original gates; loss is then distill_kl. Both are world means over MoE layers.
  bool distilling = false;
  double distill_kl = 0, topk_agreement = 0;
  std::vector<RoutingStats> layer_stats;                      ///< per MoE layer
  std::vector<double> layer_aux_loss, layer_z_loss;           ///< per MoE layer, unweighted
  std::vector<std::vector<int64_t>> tokens_per_local_expert;  ///< per MoE layer: rows received
  /// The loss or the gradient norm was not finite on some rank: no rank updated anything
  /// (parameters, AdamW moments and the schedule stay as they were; `step` is the step that was
  /// tried). The same on every rank.
  bool skipped = false;
  int skip_rank = -1;       ///< the lowest rank whose own loss or gradients were not finite
  std::string skip_reason;  ///< "non-finite loss (nan) on rank(s) 1, 3"
};

/// Whether forward passes on `device` run under bf16 autocast (train.precision).
bool uses_bf16_autocast(const config::TrainConfig& train, torch::Device device);

///   usage: Trainer trainer(TaskModel::causal_lm(model), groups, config.train());
///          StepMetrics m = trainer.step({causal_lm_batch(block0), causal_lm_batch(block1)});
///   or, reading the host once for several steps:
///          trainer.launch(batches0); trainer.launch(batches1);
///          for (const StepMetrics& m : trainer.resolve()) ...
class Trainer {
 public:
  /// Freezes every parameter but the routers' when train.routers_only (quantized experts are
  /// frozen anyway) and builds the optimizer over what stays trainable. The routers' balancing
  /// loss counts experts over the world from now on (GatingOptions::balance_group).
  Trainer(TaskModel model, ProcessGroups groups, config::TrainConfig train);

  /// micro_batches: this rank's share of the global batch, on any device (copied to the
  /// model's). The task loss is each micro-batch's mean over its targets, averaged over
  /// micro-batches and ranks. Forward passes run under bf16 autocast where train.precision says
  /// so (bf16_autocast()). A non-finite loss or gradient norm on any rank skips the update on
  /// every rank (StepMetrics::skipped). Collective over the world. launch() then resolve().
  StepMetrics step(const std::vector<TaskBatch>& micro_batches);

  /// Runs a step without reading its numbers or its verdict: the non-finite guard, the clipping,
  /// the schedule's rate and AdamW's update are decided on the device (AdamW::step with
  /// `apply`), so a GPU keeps its queue full across steps. Until resolve(), the step is
  /// pending: optimizer().steps() does not count it and distilling() assumes it applied.
  /// Collective over the world.
  void launch(const std::vector<TaskBatch>& micro_batches);
  /// The pending steps' metrics in launch order, from one read to the host for all of them;
  /// optimizer().steps() then counts the applied ones. Not collective.
  std::vector<StepMetrics> resolve();
  /// Steps launched and not resolved yet.
  int64_t pending_steps() const { return int64_t(pending_.size()); }
  /// The steps applied once the pending ones are, if none of them is skipped.
  int64_t projected_steps() const { return optimizer_->steps() + pending_steps(); }

  /// Router warm start by distillation: `gates` holds each MoE layer's original linear gate
  /// [E, H] (layer order). For the first train.distill_steps steps every MoE block routes by its
  /// gate and the routers learn to imitate it (KL between the routing distributions), with
  /// their own warmup + cosine schedule; then they train on the language-model loss, the
  /// schedule starting again over the remaining steps.
  void set_distillation_teachers(std::vector<torch::Tensor> gates);
  /// Whether the next step distils (counting pending steps as applied: callers resolve at
  /// distill_steps(), so the phase never switches on a wrong count).
  bool distilling() const;
  /// Gives each MoE block its teacher gate when the next step distils and takes it away
  /// otherwise (step() does this itself; evaluation between steps calls it).
  void prepare_routing();
  /// Steps of the distillation phase (0 without teachers).
  int64_t distill_steps() const { return teachers_.empty() ? 0 : train_.distill_steps(); }

  /// Whether step() runs forward passes under bf16 autocast (validation should too).
  bool bf16_autocast() const { return autocast_; }
  AdamW& optimizer() { return *optimizer_; }
  const TaskModel& model() const { return model_; }
  /// Trainable parameters by name, the checkpoint's unit.
  const NamedTensors& trainable() const { return optimizer_->params(); }
  /// Buffers that training changes without the optimizer, by module path (the routers' expert
  /// biases, router.expert_bias); checkpoints save and restore them with the parameters.
  const NamedTensors& trained_buffers() const { return trained_buffers_; }
  /// Whether `param` is one of the routed experts' tensors, one row per expert slot of this
  /// EP rank ([slots, ...]).
  bool is_expert_sharded(const torch::Tensor& param) const {
    return expert_placement_.count(param.unsafeGetTensorImpl()) > 0;
  }
  /// Where the experts of an expert tensor's MoE layer live (is_expert_sharded tensors only).
  const LayerPlacement& expert_placement(const torch::Tensor& param) const {
    return expert_placement_.at(param.unsafeGetTensorImpl());
  }
  /// The placement of every MoE layer's experts, in layer order.
  std::vector<LayerPlacement> expert_placements() const;
  /// Live re-placement: moves every MoE layer whose placement differs to `placements` (one per
  /// layer, the slot counts in use): expert weights and their AdamW moments travel between EP
  /// ranks (MoeBlockImpl::move_experts), and the gradient sync, the gradient norm and
  /// checkpoints follow the new placement. Between steps; collective over the EP group.
  void set_expert_placements(const std::vector<LayerPlacement>& placements);

 private:
  /// The global gradient norm's square before clipping, on the model's device (no host read).
  torch::Tensor gradient_norm_squared();
  /// Scales the gradients to train.grad_clip where `norm` (0-dim, on the device) exceeds it.
  void clip_gradients(const torch::Tensor& norm);
  /// The rate of 0-based `step`, within its phase (distillation has its own schedule).
  double learning_rate(int64_t step) const;
  /// Every step's rate on the model's device, indexed by AdamW's device count (the last entry
  /// is the floor the schedule holds after train.steps).
  void build_rate_table();
  /// Aux-loss-free balancing: each MoE layer's expert choices of this step (`selections`, per
  /// layer [E] on the device; empty for layers without an expert bias), summed over the world,
  /// move its router's bias where `apply` (0-dim bool: the step's verdict). One all-reduce for
  /// all layers.
  void update_expert_biases(const std::vector<torch::Tensor>& selections,
                            const torch::Tensor& apply);

  /// A launched step: what is already on the host, and its numbers on the device in one
  /// vector (resolve() reads every pending step's at once).
  struct PendingStep {
    StepMetrics host;  ///< the dispatches' counts, rows, distilling, host_reads so far
    int64_t layers = 0;
    torch::Tensor numbers;  ///< see launch() for the layout
  };
  std::vector<PendingStep> pending_;
  torch::Tensor rates_;  ///< build_rate_table()

  TaskModel model_;
  ProcessGroups groups_;
  config::TrainConfig train_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<GradientSync> sync_;
  void build_gradient_sync();  ///< for the trainable tensors and the placements in use
  std::vector<torch::Tensor> replicated_, expert_sharded_;  ///< trainable ones
  /// every routed-expert tensor, trainable or not, with its layer's placement
  std::map<const void*, LayerPlacement> expert_placement_;
  std::vector<torch::Tensor> teachers_;  ///< per MoE layer, while a distillation phase exists
  NamedTensors trained_buffers_;
  bool autocast_ = false;
};

}  // namespace switchyard
