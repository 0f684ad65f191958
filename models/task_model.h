// A model as training and evaluation see it, whatever its task: its module, its MoE blocks and
// one forward of a batch that returns the task's loss. Qwen2-MoE is a causal LM (every position
// predicts the next token); BERT-MoE a sequence classifier (one label per row).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/bert_moe.h"
#include "models/moe_block.h"
#include "models/qwen2_moe.h"

namespace switchyard {

enum class Task { kCausalLm, kSequenceClassification };

/// One batch of either task. Causal LM: input_ids [b, S], attention_mask [b, S] (1 on real
/// tokens), targets [b, S] the next-token ids (-1 where there is none). Classification:
/// input_ids and attention_mask [b, L], targets [b] label ids.
struct TaskBatch {
  torch::Tensor input_ids, attention_mask, targets;
  /// Targets to predict (those >= 0), counted while they are still on the host so that the
  /// forward needs no read from a GPU; -1: not counted yet (to() counts host targets).
  int64_t num_targets = -1;
  /// Every position is a real token (the mask all ones, seen while it was still on the host):
  /// a causal LM then attends with the causal flag alone, which flash attention kernels need
  /// (they take no mask). false: not known; the mask is applied.
  bool unpadded = false;

  /// The same batch on `device` (itself where it already is there); counts the targets and
  /// checks for padding where they are still on the host.
  TaskBatch to(torch::Device device) const;
};

/// What one forward gives back.
struct TaskOutput {
  torch::Tensor loss_sum;      ///< fp32 scalar: cross-entropy summed over the batch's targets
  int64_t num_targets = 0;     ///< predicted tokens (causal LM) or rows (classification)
  torch::Tensor predictions;   ///< classification: arg-max label per row [b]; else undefined
  torch::Tensor router_loss;   ///< the MoE blocks' aux and z losses, already weighted
  std::vector<MoeOutput> moe;  ///< one per MoE layer, in layer order
};

///   usage: TaskModel task = TaskModel::causal_lm(model);
///          TaskOutput out = task.forward({ids, mask, targets});
///          (out.loss_sum / out.num_targets + out.router_loss).backward();
class TaskModel {
 public:
  static TaskModel causal_lm(Qwen2MoeForCausalLM model);
  static TaskModel sequence_classification(BertMoeForSequenceClassification model);

  Task task() const { return task_; }
  /// "causal_lm" or "classification", as reports and metrics name the task.
  std::string task_name() const;
  torch::nn::Module& module() const { return *module_; }
  /// The MoE blocks in layer order, and the index of the layer each one sits in.
  const std::vector<MoeBlock>& moe_blocks() const { return blocks_; }
  const std::vector<int64_t>& moe_layers() const { return layers_; }
  /// Experts per MoE layer (global) and experts per token; 0 without MoE layers.
  int64_t num_experts() const;
  int64_t top_k() const;
  /// Classifier outputs; 0 for causal LMs.
  int64_t num_labels() const { return num_labels_; }
  torch::Device device() const;
  /// Collective over the EP group (MoE layers). The batch may be on any device; it is copied
  /// to the model's. loss_trains false: the task loss will not be back-propagated (it is only
  /// logged, as while distilling routers), so a causal LM's head takes no gradient for it.
  TaskOutput forward(const TaskBatch& batch, bool loss_trains = true) const;

 private:
  Task task_ = Task::kCausalLm;
  std::shared_ptr<torch::nn::Module> module_;
  /// A parameter of the module: moving the module (set_data) moves it too, so device() reads
  /// it without listing every parameter on each forward.
  torch::Tensor probe_;
  std::vector<MoeBlock> blocks_;
  std::vector<int64_t> layers_;
  int64_t num_labels_ = 0;
  std::function<TaskOutput(const TaskBatch&, bool loss_trains)> forward_;
};

/// A causal-LM batch from packed token blocks [b, S + 1]: inputs [:, :-1], targets [:, 1:],
/// every position real.
TaskBatch causal_lm_batch(const torch::Tensor& blocks);

}  // namespace switchyard
