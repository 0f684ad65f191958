// The model architectures the command line can build (Qwen2-MoE, BERT-MoE), one registry entry
// per config::ModelArch: how to build, load Hugging Face weights, run and export each.
#pragma once

#include <functional>
#include <string>

#include "configs/run_config.h"
#include "launch/hf_model.h"
#include "models/safetensors.h"
#include "models/task_model.h"

namespace switchyard {

/// What `eval`, `convert` and load_model need of an architecture. Each entry lives in its own
/// file (launch/arch_*.cpp); model_architecture() picks one by the config's model.arch.
struct ModelArchitecture {
  std::string name;  ///< "qwen2_moe", "bert_moe"
  /// Builds m's model with fresh weights from config.json text (`where` names it in errors),
  /// using m.config (router, quant, MoE layout) and m.groups; records the effective quant in
  /// m.config and the text in m.config_json.
  std::function<void(LoadedModel& m, const std::string& config_json, const std::string& where)>
      build;
  /// Copies a Hugging Face checkpoint's weights into the built model (each rank its experts).
  std::function<void(LoadedModel& m, const SafetensorsCheckpoint& ckpt)> load_hf_weights;
  /// The float dtype the checkpoint's config.json declares.
  std::function<torch::Dtype(const LoadedModel& m)> checkpoint_dtype;
  /// config.json text for a complete Switchyard checkpoint whose floats are `dtype`.
  std::function<std::string(const LoadedModel& m, torch::Dtype dtype)> checkpoint_config_json;
  /// Writes the hub layout (collective); throws Error where the model has no HF equivalent.
  std::function<void(const LoadedModel& m, const std::string& dir, torch::Dtype dtype)> export_hf;
  /// What `eval --dump-logits` writes: [B, S, V] for causal LMs, [B, labels] for classifiers.
  std::function<torch::Tensor(LoadedModel& m, const torch::Tensor& input_ids,
                              const torch::Tensor& attention_mask)>
      logits;
  std::function<int64_t(const LoadedModel& m)> vocab_size;
  /// The model as training and evaluation drive it (its task, MoE blocks and loss).
  std::function<TaskModel(const LoadedModel& m)> task_model;
  /// Whether train.distill_steps can read this architecture's original gates (router warm start).
  bool has_gates_to_distil = false;
  /// Whether a run's config.json (its classifier's labels) may differ from its Hugging Face
  /// base's, so that loading the run builds from the run's config (load_hf_model).
  bool heads_follow_run = false;
};

/// The entry for `arch`; throws ConfigError on model.arch for one without an entry.
///   usage: const auto& a = model_architecture(config.model().arch());
const ModelArchitecture& model_architecture(config::ModelArch arch);

ModelArchitecture qwen2_moe_architecture();  // launch/arch_qwen2_moe.cpp
ModelArchitecture bert_moe_architecture();   // launch/arch_bert_moe.cpp

}  // namespace switchyard
