// Building a Qwen2-MoE from a Hugging Face checkpoint folder as the run config asks (router
// replacement, expert quantization, EP size): shared by `eval` and `convert`.
#pragma once

#include <string>

#include "configs/run_config.h"
#include "models/qwen2_moe.h"

namespace switchyard {

struct LoadedModel {
  Qwen2MoeForCausalLM model{nullptr};
  ProcessGroups groups;
};

/// Reads DIR/config.json and the weights (each rank only its experts), converts to `dtype`
/// ("checkpoint", "float32", "bfloat16" or "float16"). Throws ConfigError for a folder that is
/// not a checkpoint or a dtype name it does not know.
LoadedModel load_hf_model(const std::string& dir, const RunConfig& config,
                          const std::string& dtype);

/// The compute dtype named by `name`, where "checkpoint" is the checkpoint's own.
torch::Dtype parse_dtype(const std::string& name, torch::Dtype checkpoint_dtype);

}  // namespace switchyard
