// The model `switchyard train` starts from: a Hugging Face checkpoint (fine-tuning) or a
// config.json with fresh weights (pretraining), and the original gates router warm start needs.
#pragma once

#include <string>
#include <vector>

#include "launch/hf_model.h"

namespace switchyard {

/// model.checkpoint (a Hugging Face folder, a Switchyard checkpoint or a run folder) loaded as
/// the run config asks, or model.init_config built from scratch with
/// transformers' initialisation drawn from train.seed (the same weights at every EP size).
LoadedModel load_training_model(const RunConfig& config, const std::string& dtype);

/// Each MoE layer's linear gate [E, H] as the checkpoint in `dir` stores it, in layer order:
/// the teachers of router distillation. Throws Error naming a missing gate tensor.
std::vector<torch::Tensor> checkpoint_gates(const Qwen2MoeForCausalLMImpl& model,
                                            const std::string& dir);

}  // namespace switchyard
