// Building a model as the run config asks (architecture, router replacement, expert
// quantization, EP size) from a Hugging Face folder, a Switchyard checkpoint or a run folder:
// what `eval`, `convert`, `inspect` and training start from.
#pragma once

#include <memory>
#include <string>

#include "configs/run_config.h"
#include "models/model_architecture.h"

namespace switchyard {

/// A built and loaded model of any architecture.
struct LoadedModel {
  std::shared_ptr<ArchitectureModel> model;
  config::ModelArch arch = config::QWEN2_MOE;
  ProcessGroups groups;
  /// The run config in effect: for a Switchyard checkpoint, its manifest's model and router
  /// config with the command line's explicitly set fields on top; model.quant is the quant the
  /// experts really hold (GPTQ checkpoints: int4 with zeros).
  RunConfig config;

  const ModelArchitecture& architecture() const { return model_architecture(arch); }
  torch::nn::Module& module() const { return model->module(); }
  TaskModel task_model() const { return model->task_model(); }
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
/// that device's world (parallel/compute_device.h). Collective over the world. Throws
/// ConfigError for a path that is none of these or a dtype it does not know, Error for damaged
/// files or a checkpoint whose architecture or shapes do not match.
///   usage: LoadedModel m = load_model(dir, config, "float32");
LoadedModel load_model(const std::string& path, const RunConfig& config, const std::string& dtype);

/// load_model for a Hugging Face folder only. A non-empty `config_json` replaces DIR's
/// config.json: a classifier given other labels than its checkpoint's (a new head) is built
/// from its run's config and keeps its fresh head.
LoadedModel load_hf_model(const std::string& dir, const RunConfig& config, const std::string& dtype,
                          const std::string& config_json = "");

/// How build_model creates a model's weights.
struct FreshWeights {
  /// The dtype floats are created in (LibTorch's default while building).
  torch::Dtype dtype = torch::kFloat;
  /// Expert banks skip their random initialisation: a loader sets every slot next.
  bool loader_sets_experts = false;
};

/// A model of `config.model.arch` built from config.json text (`where` names it in errors)
/// with fresh weights (expert banks initialised unless `fresh` says otherwise, the rest as
/// LibTorch's modules initialise them), in `fresh.dtype` on the CPU.
LoadedModel build_model(const std::string& config_json, const std::string& where,
                        const RunConfig& config, const FreshWeights& fresh = {});

/// Where load_model reads `path` from: the folder itself, or a run folder's newest checkpoint.
std::string resolve_model_path(const std::string& path);

/// Whether `dir` is a Hugging Face folder (config.json, no manifest.pb).
bool is_hf_folder(const std::string& dir);

/// The architecture load_model builds for `path` under `config`: a Switchyard checkpoint's
/// manifest says (unless config sets model.arch), a Hugging Face folder takes config.model.arch.
/// Reads the manifest only.
config::ModelArch model_arch_at(const std::string& path, const RunConfig& config);

/// Writes a complete Switchyard checkpoint of `m` to `dir` (must not exist): every tensor under
/// its module path, routed experts per global index, quantized experts as codes, floats in
/// `dtype`, the config.json text in the manifest. Collective over the world.
void save_switchyard_checkpoint(const LoadedModel& m, const std::string& dir, torch::Dtype dtype,
                                const std::string& source);

/// Moves `m` to `dtype` and to the device m.config.parallel.device names
/// (parallel/compute_device.h); its groups are already that device's world's.
void place_on_compute_device(LoadedModel& m, torch::Dtype dtype);

/// The compute dtype named by `name`, where "checkpoint" is the checkpoint's own.
torch::Dtype parse_dtype(const std::string& name, torch::Dtype checkpoint_dtype);

}  // namespace switchyard
