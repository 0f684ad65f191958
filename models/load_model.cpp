// See load_model.h.
#include "models/load_model.h"

#include <filesystem>
#include <optional>

#include "common/autocast.h"
#include "common/build_info.h"
#include "common/errors.h"
#include "models/expert_bank.h"
#include "models/model_checkpoint.h"
#include "models/switchyard_checkpoint.h"
#include "parallel/collective_watchdog.h"
#include "parallel/compute_device.h"
#include "routers/router_registry.h"

namespace switchyard {

namespace fs = std::filesystem;

namespace {

// The manifest's model and router config under the command line's explicitly set fields.
RunConfig effective_config(const RunConfig& config, const config::CheckpointManifest& manifest,
                           const std::string& dir) {
  const RunConfig& saved = manifest.config();
  if (config.model().has_arch() && config.model().arch() != saved.model().arch())
    throw ConfigError(detail::concat("model.arch = ", config::ModelArch_Name(config.model().arch()),
                                     ", but checkpoint ", dir, " holds a ",
                                     config::ModelArch_Name(saved.model().arch()), " model"),
                      "model.arch");
  RunConfig out = config;
  config::ModelConfig model = saved.model();
  model.MergeFrom(config.model());
  *out.mutable_model() = model;
  config::RouterConfig router = saved.router();
  router.MergeFrom(config.router());
  *out.mutable_router() = router;
  // A classifier's label field and row length travel with it to `eval`.
  config::DataConfig data = saved.data();
  data.MergeFrom(config.data());
  *out.mutable_data() = data;
  return out;
}

// The EP and DP groups over the world of the device config.parallel.device names.
// The collective watchdog holds every collective from here on to parallel.timeout_s.
ProcessGroups device_groups(const RunConfig& config) {
  const CommunicatorPtr& world = compute_world(config.parallel().device()).world;
  start_collective_watchdog(*world, config.parallel(), /*log_dir=*/"");
  return make_process_groups(world, config.parallel().expert_parallel());
}

// A model about to be loaded is built as it will compute: floats in the run's dtype from the
// start, and expert banks not initialised when the loader sets every slot. Built in float32 and
// cast after the load, the full-size A2.7B int4 model held its 1.9 G non-expert weights at 4 bytes
// while the checkpoint's pages were resident: 23 GB at EP 1 where 19 GB suffice. Tensors that no
// checkpoint holds (a router replacing the gate) are drawn in the run's dtype, as transformers'
// from_pretrained(torch_dtype=...) draws them.
FreshWeights fresh_for_loading(const RunConfig& config, const std::string& config_json,
                               const std::string& where, const std::string& dtype,
                               bool loader_sets_experts) {
  const ModelArchitecture& arch = model_architecture(config.model().arch());
  FreshWeights fresh;
  if (!arch.builds_for_loading()) return fresh;
  fresh.dtype = parse_dtype(dtype, arch.declared_dtype(config_json, where));
  fresh.loader_sets_experts = loader_sets_experts;
  return fresh;
}

}  // namespace

void place_on_compute_device(LoadedModel& m, torch::Dtype dtype) {
  m.module().to(dtype);
  m.module().to(compute_world(m.config.parallel().device()).device);
}

bool is_hf_folder(const std::string& dir) {
  return fs::exists(fs::path(dir) / "config.json") && !is_switchyard_checkpoint(dir);
}

config::ModelArch model_arch_at(const std::string& path, const RunConfig& config) {
  const std::string dir = resolve_model_path(path);
  if (!is_switchyard_checkpoint(dir)) return config.model().arch();
  return read_checkpoint_manifest(dir).config().model().arch();
}

LoadedModel build_model(const std::string& config_json, const std::string& where,
                        const RunConfig& config, const FreshWeights& fresh) {
  LoadedModel m;
  m.config = config;
  m.arch = config.model().arch();
  m.groups = device_groups(config);
  DefaultDtypeScope dtype(fresh.dtype);
  std::optional<SkipExpertInit> skip_init;
  if (fresh.loader_sets_experts) skip_init.emplace();
  m.model = m.architecture().build(config_json, where, m.config, m.groups);
  return m;
}

torch::Dtype parse_dtype(const std::string& name, torch::Dtype checkpoint_dtype) {
  if (name == "checkpoint") return checkpoint_dtype;
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  throw ConfigError("--dtype " + name + ": expected checkpoint, float32, bfloat16 or float16");
}

std::string resolve_model_path(const std::string& path) {
  if (!fs::is_directory(path))
    throw ConfigError("--model " + path +
                      ": not a folder (expected a Hugging Face checkpoint, a Switchyard "
                      "checkpoint or a run folder)");
  if (is_switchyard_checkpoint(path) || fs::exists(fs::path(path) / "config.json")) return path;
  if (auto latest = latest_checkpoint(path)) return *latest;
  if (fs::exists(fs::path(path) / "checkpoints"))
    throw ConfigError("--model " + path + ": a run folder without a complete checkpoint");
  throw ConfigError("--model " + path +
                    ": no config.json, manifest.pb or checkpoints/ (not a Hugging Face "
                    "checkpoint, a Switchyard checkpoint or a run folder)");
}

LoadedModel load_hf_model(const std::string& dir, const RunConfig& config, const std::string& dtype,
                          const std::string& config_json) {
  if (!fs::is_directory(dir) || !fs::exists(fs::path(dir) / "config.json"))
    throw ConfigError("--model " + dir + ": not a Hugging Face checkpoint folder (no config.json)");
  const std::string file = (fs::path(dir) / "config.json").string();
  const std::string json = config_json.empty() ? read_text_file(file) : config_json;
  const std::string where = config_json.empty() ? file : file + " (relabelled by its run)";
  LoadedModel m =
      build_model(json, where, config,
                  fresh_for_loading(config, json, where, dtype, /*loader_sets_experts=*/true));
  m.model->load_hf_weights(SafetensorsCheckpoint(dir));
  place_on_compute_device(m, parse_dtype(dtype, m.model->checkpoint_dtype()));
  return m;
}

LoadedModel load_model(const std::string& path, const RunConfig& config, const std::string& dtype) {
  const std::string dir = resolve_model_path(path);
  if (!is_switchyard_checkpoint(dir)) return load_hf_model(dir, config, dtype);
  const config::CheckpointManifest manifest = read_checkpoint_manifest(dir);
  const RunConfig effective = effective_config(config, manifest, dir);
  const OverlayOptions overlay = OverlayOptions()
                                     .complete(manifest.complete())
                                     .replace_routers(router_kind(effective.router()) !=
                                                      router_kind(manifest.config().router()));
  const std::string base = manifest.config().model().checkpoint();
  if (!manifest.complete() &&
      !base.empty()) {  // a training checkpoint: its base, then the saved parameters
    if (fs::absolute(resolve_model_path(base)) == fs::absolute(dir))
      throw Error("checkpoint " + dir + ": names itself as its base");
    // A run whose classifier got new labels on a Hugging Face base is built from its own
    // config.json (its labels) with the base's weights under it.
    const bool relabelled = model_architecture(effective.model().arch()).heads_follow_run() &&
                            !manifest.model_config_json().empty() &&
                            !is_switchyard_checkpoint(resolve_model_path(base));
    LoadedModel m = relabelled ? load_hf_model(resolve_model_path(base), effective, dtype,
                                               manifest.model_config_json())
                               : load_model(base, effective, dtype);
    const CheckpointTensors tensors(dir, manifest);
    check_model_tensor_count(tensors, manifest);
    overlay_model_state(m.module(), tensors, overlay);  // on its device
    return m;
  }
  // A complete checkpoint, or a training checkpoint of a model trained from scratch (every
  // parameter trained, so saved): built from the config.json the manifest keeps.
  if (manifest.model_config_json().empty())
    throw Error("checkpoint " + dir + ": a training checkpoint without model.checkpoint (base)");
  const std::string where = dir + "/" + kCheckpointManifest;
  // Only a complete checkpoint is checked to hold every tensor (overlay_model_state).
  LoadedModel m = build_model(manifest.model_config_json(), where, effective,
                              fresh_for_loading(effective, manifest.model_config_json(), where,
                                                dtype, manifest.complete()));
  const CheckpointTensors tensors(dir, manifest);
  check_model_tensor_count(tensors, manifest);
  overlay_model_state(m.module(), tensors, overlay);
  place_on_compute_device(m, parse_dtype(dtype, m.model->checkpoint_dtype()));
  return m;
}

void save_switchyard_checkpoint(const LoadedModel& m, const std::string& dir, torch::Dtype dtype,
                                const std::string& source) {
  torch::NoGradGuard no_grad;
  if (fs::exists(dir)) throw Error("convert: " + dir + " already exists; not overwriting it");
  m.module().to(dtype);
  config::CheckpointManifest manifest;
  *manifest.mutable_config() = m.config;
  manifest.mutable_config()->mutable_model()->set_checkpoint(source);
  manifest.set_switchyard_version(SWITCHYARD_VERSION);
  manifest.set_torch_version(SWITCHYARD_TORCH_VERSION);
  manifest.set_world_size(m.groups.world->size());
  manifest.set_expert_parallel(m.groups.ep_size());
  manifest.set_complete(true);
  manifest.set_model_config_json(m.model->config_json(dtype));
  write_checkpoint_folder(dir, model_state_shard(m.module(), m.groups), m.groups, manifest);
}

}  // namespace switchyard
