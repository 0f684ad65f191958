// Building a model as the run config asks (architecture, router replacement, expert
// quantization, EP size) from a Hugging Face folder, a Switchyard checkpoint or a run folder:
// shared by `eval`, `convert`, `inspect` and `train`.
#pragma once

#include <cstddef>
#include <string>
#include <tuple>

#include "configs/run_config.h"
#include "models/bert_moe.h"
#include "models/qwen2_moe.h"

namespace switchyard {

/// A built and loaded model. `model` is set for QWEN2_MOE, `bert` for BERT_MOE.
struct LoadedModel {
  Qwen2MoeForCausalLM model{nullptr};
  ProcessGroups groups;
  config::ModelArch arch = config::QWEN2_MOE;
  BertMoeForSequenceClassification bert{nullptr};
  /// The run config in effect: for a Switchyard checkpoint, its manifest's model and router
  /// config with the command line's explicitly set fields on top; model.quant is the quant the
  /// experts really hold (GPTQ checkpoints: int4 with zeros).
  RunConfig config;
  std::string config_json;  ///< the architecture's config.json text as read

  /// Whichever model is set.
  torch::nn::Module& module() const;

  // `auto [model, groups] = load_hf_model(...)` predates the other members; the tuple protocol
  // below keeps such bindings (Qwen2-MoE callers) compiling.
  template <size_t I>
  auto& get() & {
    if constexpr (I == 0)
      return model;
    else
      return groups;
  }
  template <size_t I>
  const auto& get() const& {
    if constexpr (I == 0)
      return model;
    else
      return groups;
  }
  template <size_t I>
  auto&& get() && {
    if constexpr (I == 0)
      return std::move(model);
    else
      return std::move(groups);
  }
};

/// Builds the model at `path`, each rank reading only its own experts, floats in `dtype`
/// ("checkpoint", "float32", "bfloat16" or "float16"). `path` is
///   - a Hugging Face folder (config.json + safetensors): architecture from config.model.arch,
///     router and quant from `config`;
///   - a Switchyard checkpoint folder (manifest.pb): a complete one (`convert --format
///     switchyard`) is built from the config.json its manifest holds; a training checkpoint is
///     its base (the manifest's model.checkpoint, loaded by this same function) with the saved
///     parameters on top. Architecture, router and quant come from the manifest; fields that
///     `config` sets explicitly (--config/--set) override them;
///   - a run folder (RUN_DIR/checkpoints/latest): its newest checkpoint.
/// Any EP size (config.parallel); on the device config.parallel.device names, the groups over
/// that device's world (launch/compute_device.h). Collective over the world. Throws ConfigError
/// for a path that is none of these or a dtype it does not know, Error for damaged files or a
/// checkpoint whose architecture or shapes do not match.
///   usage: LoadedModel m = load_model(dir, config, "float32");
LoadedModel load_model(const std::string& path, const RunConfig& config, const std::string& dtype);

/// load_model for a Hugging Face folder only. A non-empty `config_json` replaces DIR's
/// config.json: a classifier given other labels than its checkpoint's (a new head, see
/// train_model.h) is built from its run's config and keeps its fresh head.
LoadedModel load_hf_model(const std::string& dir, const RunConfig& config,
                          const std::string& dtype, const std::string& config_json = "");

/// Where load_model reads `path` from: the folder itself, or a run folder's newest checkpoint.
std::string resolve_model_path(const std::string& path);

/// Writes a complete Switchyard checkpoint of `m` to `dir` (must not exist): every tensor under
/// its module path, routed experts per global index, quantized experts as codes, floats in
/// `dtype`, the config.json text in the manifest. Collective over the world.
void save_switchyard_checkpoint(const LoadedModel& m, const std::string& dir, torch::Dtype dtype,
                                const std::string& source);

/// Moves `m` to the device m.config.parallel.device names (launch/compute_device.h); its groups
/// are already that device's world's. load_model and load_hf_model end with it.
void place_on_compute_device(LoadedModel& m);

/// The compute dtype named by `name`, where "checkpoint" is the checkpoint's own.
torch::Dtype parse_dtype(const std::string& name, torch::Dtype checkpoint_dtype);

}  // namespace switchyard

template <>
struct std::tuple_size<switchyard::LoadedModel> : std::integral_constant<size_t, 2> {};
template <>
struct std::tuple_element<0, switchyard::LoadedModel> {
  using type = switchyard::Qwen2MoeForCausalLM;
};
template <>
struct std::tuple_element<1, switchyard::LoadedModel> {
  using type = switchyard::ProcessGroups;
};
