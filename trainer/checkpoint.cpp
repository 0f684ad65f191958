#include "trainer/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>

#include <ATen/Context.h>

#include "common/build_info.h"
#include "common/errors.h"
#include "models/switchyard_checkpoint.h"

namespace switchyard {

namespace fs = std::filesystem;

namespace {

std::string step_folder(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08ld", long(step));
  return buf;
}

// Parameters and their moments ("exp_avg.NAME", ...), replicated ones as they are and expert
// ones cut into global per-expert tensors.
CheckpointShard split_state(Trainer& trainer, const ProcessGroups& groups) {
  const auto moments = trainer.optimizer().state();
  std::map<std::string, torch::Tensor> moment_of(moments.begin(), moments.end());
  CheckpointShard s;
  for (const auto& [name, p] : trainer.trainable()) {
    const CheckpointTensorList entries = {
        {"param." + name, p.detach()},
        {"exp_avg." + name, moment_of.at("exp_avg." + name)},
        {"exp_avg_sq." + name, moment_of.at("exp_avg_sq." + name)}};
    if (!trainer.is_expert_sharded(p)) {
      s.replicated.insert(s.replicated.end(), entries.begin(), entries.end());
      continue;
    }
    const auto owned = trainer.expert_placement(p).owned(groups.ep_rank());
    for (const auto& [key, t] : entries) append_per_expert(s.experts, key, t, owned);
  }
  // Router expert biases: replicated, the same on every rank.
  for (const auto& [name, b] : trainer.trained_buffers())
    s.replicated.emplace_back("buffer." + name, b.detach());
  s.replicated.emplace_back("step", moment_of.at("step"));
  return s;
}

std::string generator_state(at::Generator generator) {
  torch::Tensor rng;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng = generator.get_state();
  }
  return std::string(static_cast<const char*>(rng.data_ptr()), rng.numel());
}

void set_generator_state(at::Generator generator, const std::string& state) {
  auto rng = torch::empty({int64_t(state.size())}, torch::kByte);
  std::memcpy(rng.data_ptr(), state.data(), state.size());
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(rng);
}

// The generator of the CUDA device the trainer computes on, if it computes on one.
std::optional<at::Generator> cuda_generator(Trainer& trainer) {
  const auto& params = trainer.trainable();
  if (params.empty() || !params.front().second.is_cuda()) return std::nullopt;
  return at::globalContext().defaultGenerator(params.front().second.device());
}

// All but the newest `keep` step folders (never `current`); keep = 0 keeps them all.
void remove_old_checkpoints(const fs::path& root, int keep, const std::string& current) {
  if (keep <= 0) return;
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && is_step_folder_name(name)) steps.push_back(name);
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i)
    if (steps[i] != current) fs::remove_all(root / steps[i]);
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, Trainer& trainer,
                            const ProcessGroups& groups, const RunConfig& config,
                            const CheckpointMeta& meta) {
  const DataPosition& data = meta.data;
  const int64_t step = trainer.optimizer().steps();
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / step_folder(step);
  config::CheckpointManifest m;
  if (groups.world->rank() == 0) {
    m.set_step(step);
    *m.mutable_config() = config;
    m.set_switchyard_version(SWITCHYARD_VERSION);
    m.set_torch_version(SWITCHYARD_TORCH_VERSION);
    m.set_world_size(groups.world->size());
    m.set_expert_parallel(groups.ep_size());
    m.set_data_epoch(data.epoch);
    m.set_data_batch(data.batch);
    m.set_complete(false);  // trainable parameters only: the base is config.model.checkpoint
    m.set_model_config_json(meta.model_config_json);
    *m.mutable_fingerprint() = meta.fingerprint;
    if (!meta.expert_placement_json.empty())
      m.set_expert_placement_json(meta.expert_placement_json);
    for (int64_t c : meta.rebalance_counts) m.add_rebalance_counts(c);
    m.set_cpu_rng_state(generator_state(at::detail::getDefaultCPUGenerator()));
    if (const auto cuda = cuda_generator(trainer)) m.set_cuda_rng_state(generator_state(*cuda));
  }
  const CheckpointShard shard = split_state(trainer, groups);
  // A checkpoint never holds a NaN or an infinity: every rank checks its share, and all refuse
  // together (before anything is written) when one finds any.
  std::string bad;
  for (const auto* list : {&shard.replicated, &shard.experts})
    for (const auto& [name, t] : *list)
      if (bad.empty() && t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
        bad = name;
  auto flags = torch::zeros({groups.world->size()}, torch::kLong);
  flags[groups.world->rank()] = bad.empty() ? 0 : 1;
  groups.world->all_reduce(flags);
  for (int r = 0; r < groups.world->size(); ++r)
    if (flags[r].item<int64_t>() != 0)
      throw Error(detail::concat("checkpoint at step ", step, ": ",
                                 bad.empty() ? "a tensor of rank " + std::to_string(r) : bad,
                                 " holds non-finite values; not saved (the last complete "
                                 "checkpoint stays as it was)"));
  write_checkpoint_folder(final_dir.string(), shard, groups, m);
  if (groups.world->rank() == 0) {
    write_text_file_atomic((root / "latest").string(), step_folder(step) + "\n");
    remove_old_checkpoints(root, config.train().keep_checkpoints(), step_folder(step));
  }
  groups.world->barrier();
  return final_dir.string();
}

CheckpointState load_checkpoint(const std::string& folder, Trainer& trainer,
                                const ProcessGroups& groups) {
  const config::CheckpointManifest m = read_checkpoint_manifest(folder);
  const CheckpointTensors tensors(folder, m);
  tensors.verify_all();  // a resume reads nearly everything anyway: refuse damage up front
  auto take = [&](const std::string& key) {
    if (!tensors.contains(key))
      throw Error(detail::concat("checkpoint ", folder, ": no tensor '", key,
                                 "' (saved with other trainable parameters or another model?)"));
    return tensors.get(key);
  };
  NamedTensors moments;
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : trainer.trainable()) {
    auto gather = [&](const std::string& key) {
      if (!trainer.is_expert_sharded(p)) return take(key);
      const auto& held = trainer.expert_placement(p).slots[size_t(groups.ep_rank())];
      take(expert_tensor_name(key, held.front()));  // the missing-tensor message, if absent
      return tensors.gather_experts(key, held);
    };
    auto value = gather("param." + name);
    SY_CHECK(value.sizes() == p.sizes(), "checkpoint ", folder, ": '", name, "' is ", value.sizes(),
             ", the model's is ", p.sizes());
    p.copy_(value);
    moments.emplace_back("exp_avg." + name, gather("exp_avg." + name));
    moments.emplace_back("exp_avg_sq." + name, gather("exp_avg_sq." + name));
  }
  for (const auto& [name, b] : trainer.trained_buffers()) {
    auto value = take("buffer." + name);
    SY_CHECK(value.sizes() == b.sizes(), "checkpoint ", folder, ": '", name, "' is ", value.sizes(),
             ", the model's is ", b.sizes());
    b.copy_(value);
  }
  moments.emplace_back("step", take("step"));
  trainer.optimizer().load_state(moments);
  set_generator_state(at::detail::getDefaultCPUGenerator(), m.cpu_rng_state());
  if (const auto cuda = cuda_generator(trainer); cuda && m.has_cuda_rng_state())
    set_generator_state(*cuda, m.cuda_rng_state());
  groups.world->barrier();
  return {m.step(), DataPosition{m.data_epoch(), m.data_batch()}, m.fingerprint(),
          m.expert_placement_json(),
          std::vector<int64_t>(m.rebalance_counts().begin(), m.rebalance_counts().end())};
}

}  // namespace switchyard
