// The model `switchyard train` starts from: a checkpoint (fine-tuning) or a config.json with
// fresh weights (training from scratch), and the original gates router warm start needs.
#pragma once

#include <string>
#include <vector>

#include "launch/hf_model.h"

namespace switchyard {

/// Whether the data's labels must be known before the model is built (so the data is read
/// first): a model built from scratch (model.init_config), or a BERT-MoE fine-tuned from a
/// Hugging Face folder, whose head may have to be new.
bool model_needs_data_labels(const RunConfig& config);

/// model.checkpoint (a Hugging Face folder, a Switchyard checkpoint or a run folder) loaded as
/// the run config asks, or model.init_config built from scratch with transformers'
/// initialisation drawn from train.seed (the same weights at every EP size). A classifier built
/// from scratch gets `data_labels` as its id2label (TrainingData::data_labels); so does one
/// upcycled from a Hugging Face BERT whose id2label lacks one of them, with a new head seeded by
/// model.init_seed (its checkpoint's head is left out).
LoadedModel load_training_model(const RunConfig& config, const std::string& dtype,
                                const std::vector<std::string>& data_labels);

/// Each MoE layer's linear gate [E, H] as the checkpoint in `dir` stores it, in layer order:
/// the teachers of router distillation. Throws Error naming a missing gate tensor.
std::vector<torch::Tensor> checkpoint_gates(const Qwen2MoeForCausalLMImpl& model,
                                            const std::string& dir);

}  // namespace switchyard
