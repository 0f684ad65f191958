// The model architectures Switchyard builds (Qwen2-MoE causal LM, BERT-MoE classifier) behind one
// interface: what loading, training, evaluation and export ask of an architecture, and of one
// model built from it. One file per architecture (models/<name>_architecture.cpp), one registry
// line each in models/model_architecture.cpp.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "models/safetensors.h"
#include "models/task_model.h"
#include "parallel/process_groups.h"

namespace switchyard {

/// What a caller may ask of an architecture that not every architecture offers.
enum class ArchFeature {
  kRouterDistillation,  ///< train.distill_steps: the original gates as teachers
  kHfExport,            ///< convert --format hf, train --export-hf
};

/// One model built from an architecture, fresh or loaded.
///   usage: std::unique_ptr<ArchitectureModel> m = arch.build(json, file, config, groups);
///          m->load_hf_weights(SafetensorsCheckpoint(dir));
///          TaskOutput out = m->task_model().forward(batch);
class ArchitectureModel {
 public:
  virtual ~ArchitectureModel() = default;

  virtual torch::nn::Module& module() const = 0;
  /// The model as training and evaluation drive it (its task, MoE blocks and loss).
  virtual TaskModel task_model() const = 0;
  /// Copies a Hugging Face checkpoint's weights into the built model (each rank its experts).
  virtual void load_hf_weights(const SafetensorsCheckpoint& ckpt) = 0;
  /// The float dtype the model's config.json declares.
  virtual torch::Dtype checkpoint_dtype() const = 0;
  /// config.json text for a checkpoint of this model whose floats are `dtype`.
  virtual std::string config_json(torch::Dtype dtype) const = 0;
  /// Writes the hub layout (collective). Only called where the architecture does not refuse
  /// ArchFeature::kHfExport.
  virtual void export_hf(const std::string& dir, torch::Dtype dtype) const = 0;
  /// What `eval --dump-logits` writes: [B, S, V] for causal LMs, [B, labels] for classifiers.
  virtual torch::Tensor logits(const torch::Tensor& input_ids,
                               const torch::Tensor& attention_mask) = 0;
  virtual int64_t vocab_size() const = 0;
  /// A classifier's output labels in id order (config.json id2label; may be empty when the
  /// config names none); empty for tasks without labels.
  virtual std::vector<std::string> labels() const { return {}; }
  /// Each MoE layer's original gate [E, H] as the checkpoint in `dir` stores it, in layer order:
  /// router distillation's teachers. Only called where kRouterDistillation is not refused.
  virtual std::vector<torch::Tensor> original_gates(const std::string& dir) const;
};

/// An architecture: a registry entry per config::ModelArch.
class ModelArchitecture {
 public:
  virtual ~ModelArchitecture() = default;

  /// "qwen2_moe", "bert_moe"
  virtual std::string name() const = 0;
  /// The task its models train for: it decides which data a run reads (trainer/training_data.h).
  virtual Task task() const = 0;
  /// Builds a model with fresh weights from config.json text (`where` names it in errors) as
  /// `config` asks (router, expert quantization, MoE layout), experts sharded over `groups`.
  /// Records in config.model.quant the quantization the experts really hold (a GPTQ
  /// checkpoint's). Throws ConfigError for a config field the architecture cannot honour.
  virtual std::unique_ptr<ArchitectureModel> build(const std::string& config_json,
                                                   const std::string& where, RunConfig& config,
                                                   const ProcessGroups& groups) const = 0;
  /// The float dtype config.json text `json` declares (torch_dtype), without building a model.
  virtual torch::Dtype declared_dtype(const std::string& json, const std::string& where) const = 0;
  /// Whether load_model may build this architecture's models for loading: in the run's dtype,
  /// with expert banks left to the loader (models/load_model.cpp). False where weights that no
  /// checkpoint holds are drawn from one stream that the banks' initialisation draws from too.
  virtual bool builds_for_loading() const { return true; }
  /// Why `feature` is refused (one line, without the option's name), or nothing where the
  /// architecture offers it.
  virtual std::optional<std::string> refusal(ArchFeature feature) const;
  /// config.json text whose model outputs are the data's labels `data_labels` (classifiers:
  /// id2label, label2id, num_labels); `json` unchanged for tasks without labels. Throws
  /// ConfigError naming `where` when a classifier is given no labels.
  virtual std::string with_data_labels(const std::string& json,
                                       const std::vector<std::string>& data_labels,
                                       const std::string& where) const;
  /// Whether a Hugging Face checkpoint with config.json `json` names every label of
  /// `data_labels` (so it fine-tunes as it is); when not, the run trains it with a new head
  /// built from with_data_labels(). True for tasks without labels.
  virtual bool covers_data_labels(const std::string& json,
                                  const std::vector<std::string>& data_labels,
                                  const std::string& where) const;
  /// Whether a run's config.json may differ from its Hugging Face base's (a new head), so that
  /// loading the run builds from the run's config on the base's weights.
  virtual bool heads_follow_run() const { return false; }

  /// Throws ConfigError `option: <refusal>` when `feature` is refused.
  void require(ArchFeature feature, const std::string& option) const;
};

/// The entry for `arch`; throws ConfigError on model.arch for one without an entry.
///   usage: const ModelArchitecture& a = model_architecture(config.model().arch());
const ModelArchitecture& model_architecture(config::ModelArch arch);

std::unique_ptr<ModelArchitecture> qwen2_moe_architecture();  // models/qwen2_moe_architecture.cpp
std::unique_ptr<ModelArchitecture> bert_moe_architecture();   // models/bert_moe_architecture.cpp

}  // namespace switchyard
