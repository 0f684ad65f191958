// See task_model.h. The losses are sums so that batches of different sizes (the last rows of
// an evaluation set, uneven shards) add up exactly; the trainer divides by num_targets.
#include "models/task_model.h"

#include "common/errors.h"
#include "common/host_reads.h"
#include "models/lm_loss.h"

namespace switchyard {

namespace {

torch::Tensor first_parameter(const torch::nn::Module& m) {
  const auto params = m.parameters();
  return params.empty() ? torch::Tensor() : params.front();
}

}  // namespace

TaskBatch causal_lm_batch(const torch::Tensor& blocks) {
  SY_CHECK(blocks.dim() == 2 && blocks.size(1) >= 2, "train: token block ", blocks.sizes(),
           " is not [batch, seq_len + 1]");
  auto inputs = blocks.narrow(1, 0, blocks.size(1) - 1);
  return {inputs, torch::ones_like(inputs), blocks.narrow(1, 1, blocks.size(1) - 1),
          inputs.numel()};  // every position predicts the next token
}

TaskBatch TaskBatch::to(torch::Device device) const {
  TaskBatch out = *this;
  // On the host: no device wait.
  if (out.num_targets < 0 && targets.defined() && targets.is_cpu())
    out.num_targets = targets.ge(0).sum().item<int64_t>();
  if (!out.unpadded && attention_mask.defined() && attention_mask.is_cpu())
    out.unpadded = attention_mask.all().item<bool>();
  if (input_ids.device() == device) return out;
  // Queued from pinned memory: a micro-batch's tensors reach the GPU while the previous
  // micro-batch's backward still runs there, instead of waiting for it.
  auto move = [&](const torch::Tensor& t) {
    return t.defined() ? to_device_without_sync(t, device) : t;
  };
  out.input_ids = move(input_ids);
  out.attention_mask = move(attention_mask);
  out.targets = move(targets);
  return out;
}

TaskOutput TaskModel::forward(const TaskBatch& batch, bool loss_trains) const {
  return forward_(batch.to(device()), loss_trains);
}

TaskModel TaskModel::causal_lm(Qwen2MoeForCausalLM model) {
  TaskModel t;
  t.task_ = Task::kCausalLm;
  t.module_ = model.ptr();
  t.probe_ = first_parameter(*t.module_);
  const auto& layers = model->layers();
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i]->moe) t.blocks_.push_back(layers[i]->moe), t.layers_.push_back(int64_t(i));
  t.forward_ = [model](const TaskBatch& b, bool loss_trains) mutable {
    // Without padding, no mask: the causal flag alone lets SDPA take flash attention on a GPU.
    CausalLmOutput out =
        model->forward_hidden_states(b.input_ids, b.unpadded ? torch::Tensor() : b.attention_mask);
    // The count came from the host for training blocks, so a training step reads nothing back
    // here; the loss (models/lm_loss.h) skips rows without a target itself, and applies the
    // LM head a chunk of rows at a time where the head is frozen.
    const int64_t predicted =
        b.num_targets >= 0 ? b.num_targets : read_counts_to_host(b.targets.ge(0).sum())[0];
    const int64_t width = out.hidden_states.size(-1);
    auto hidden = out.hidden_states.reshape({-1, width});
    // A loss that is only logged needs no gradient: the fused head would take one in forward.
    if (!loss_trains) hidden = hidden.detach();
    TaskOutput r;
    r.loss_sum = linear_cross_entropy_sum(hidden, model->lm_head->weight, b.targets.reshape({-1}));
    r.num_targets = predicted;
    r.router_loss = out.router_loss;
    r.moe = std::move(out.moe);
    return r;
  };
  return t;
}

TaskModel TaskModel::sequence_classification(BertMoeForSequenceClassification model) {
  TaskModel t;
  t.task_ = Task::kSequenceClassification;
  t.module_ = model.ptr();
  t.probe_ = first_parameter(*t.module_);
  t.num_labels_ = model->options().model().num_labels;
  const auto& layers = model->bert->layers();
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i]->moe) t.blocks_.push_back(layers[i]->moe), t.layers_.push_back(int64_t(i));
  t.forward_ = [model](const TaskBatch& b, bool /*loss_trains: a small head*/) mutable {
    BertMoeOutput out = model->forward(b.input_ids, b.attention_mask);
    auto logits = out.logits.to(torch::kFloat);
    TaskOutput r;
    r.loss_sum = torch::nn::functional::cross_entropy(
        logits, b.targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    r.num_targets = b.targets.size(0);
    r.predictions = logits.argmax(-1);
    r.router_loss = out.router_loss;
    r.moe = std::move(out.moe);
    return r;
  };
  return t;
}

std::string TaskModel::task_name() const {
  return task_ == Task::kCausalLm ? "causal_lm" : "classification";
}

int64_t TaskModel::num_experts() const {
  return blocks_.empty() ? 0 : blocks_.front()->options().num_experts();
}

int64_t TaskModel::top_k() const {
  return blocks_.empty() ? 0 : blocks_.front()->options().router().top_k();
}

torch::Device TaskModel::device() const {
  return probe_.defined() ? probe_.device() : torch::Device(torch::kCPU);
}

}  // namespace switchyard
