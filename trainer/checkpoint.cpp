#include "trainer/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "common/errors.h"
#include "launch/build_info.h"
#include "models/safetensors.h"

namespace switchyard {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "manifest.pb";

std::string step_folder(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08ld", long(step));
  return buf;
}

uint64_t fnv1a64(const std::string& path, uint64_t* bytes) {
  std::ifstream in(path, std::ios::binary);
  SY_CHECK(in.good(), path, ": cannot open");
  uint64_t h = 1469598103934665603ull, n = 0;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i)
      h = (h ^ uint8_t(buf[i])) * 1099511628211ull;
    n += uint64_t(in.gcount());
  }
  *bytes = n;
  return h;
}

struct Split {
  NamedTensors replicated, experts;
};

// Parameters and their moments ("exp_avg.NAME", ...), replicated ones as they are and expert
// ones cut into global per-expert tensors.
Split split_state(Trainer& trainer, const ProcessGroups& groups) {
  const auto moments = trainer.optimizer().state();
  std::map<std::string, torch::Tensor> moment_of(moments.begin(), moments.end());
  Split s;
  for (const auto& [name, p] : trainer.trainable()) {
    const NamedTensors entries = {{"param." + name, p.detach()},
                                  {"exp_avg." + name, moment_of.at("exp_avg." + name)},
                                  {"exp_avg_sq." + name, moment_of.at("exp_avg_sq." + name)}};
    if (!trainer.is_expert_sharded(p)) {
      s.replicated.insert(s.replicated.end(), entries.begin(), entries.end());
      continue;
    }
    const int64_t local = p.size(0), first = int64_t(groups.ep_rank()) * local;
    for (const auto& [key, t] : entries)
      for (int64_t e = 0; e < local; ++e)
        s.experts.emplace_back(key + ".expert" + std::to_string(first + e), t[e]);
  }
  s.replicated.emplace_back("step", moment_of.at("step"));
  return s;
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, Trainer& trainer,
                            const ProcessGroups& groups, const RunConfig& config,
                            const DataPosition& data) {
  const int64_t step = trainer.optimizer().steps();
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / step_folder(step);
  const fs::path partial = root / (step_folder(step) + ".partial");
  const int rank = groups.world->rank();
  if (rank == 0) {
    fs::remove_all(partial);
    fs::create_directories(partial);
  }
  groups.world->barrier();
  const Split s = split_state(trainer, groups);
  if (rank == 0) save_safetensors((partial / "replicated.safetensors").string(), s.replicated);
  if (groups.dp_rank() == 0 && !s.experts.empty())
    save_safetensors((partial / ("experts-ep" + std::to_string(groups.ep_rank()) + ".safetensors"))
                         .string(),
                     s.experts);
  groups.world->barrier();
  if (rank == 0) {
    config::CheckpointManifest m;
    m.set_step(step);
    *m.mutable_config() = config;
    m.set_switchyard_version(SWITCHYARD_VERSION);
    m.set_torch_version(SWITCHYARD_TORCH_VERSION);
    m.set_world_size(groups.world->size());
    m.set_expert_parallel(groups.ep_size());
    m.set_data_epoch(data.epoch);
    m.set_data_batch(data.batch);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    torch::Tensor rng;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      rng = generator.get_state();
    }
    m.set_cpu_rng_state(std::string(static_cast<const char*>(rng.data_ptr()), rng.numel()));
    for (const auto& entry : fs::directory_iterator(partial)) {
      auto* f = m.add_files();
      uint64_t bytes = 0;
      f->set_fnv1a64(fnv1a64(entry.path().string(), &bytes));
      f->set_bytes(bytes);
      f->set_name(entry.path().filename().string());
    }
    write_text_file_atomic((partial / kManifest).string(), m.SerializeAsString());
    fs::remove_all(final_dir);
    fs::rename(partial, final_dir);
    write_text_file_atomic((root / "latest").string(), step_folder(step) + "\n");
  }
  groups.world->barrier();
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_regular_file(root / "latest")) return std::nullopt;
  std::string name = read_text_file((root / "latest").string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return (root / name).string();
}

CheckpointState load_checkpoint(const std::string& folder, Trainer& trainer,
                                const ProcessGroups& groups) {
  const fs::path dir(folder);
  SY_CHECK(fs::is_regular_file(dir / kManifest), "checkpoint ", folder, ": no ", kManifest,
           " (incomplete or not a checkpoint)");
  config::CheckpointManifest m;
  SY_CHECK(m.ParseFromString(read_text_file((dir / kManifest).string())), "checkpoint ", folder,
           ": ", kManifest, " is not a valid manifest");
  for (const auto& f : m.files()) {
    const fs::path path = dir / f.name();
    SY_CHECK(fs::is_regular_file(path), "checkpoint ", folder, ": ", f.name(), " is missing");
    uint64_t bytes = 0;
    const uint64_t sum = fnv1a64(path.string(), &bytes);
    SY_CHECK(bytes == f.bytes(), "checkpoint ", folder, ": ", f.name(), " has ", bytes,
             " bytes, the manifest says ", f.bytes(), " (truncated?)");
    SY_CHECK(sum == f.fnv1a64(), "checkpoint ", folder, ": ", f.name(),
             " does not match its checksum (corrupt)");
  }
  // Every tensor by name, from whichever file holds it.
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& f : m.files()) {
    if (f.name().size() < 12 || f.name().substr(f.name().size() - 12) != ".safetensors") continue;
    auto file = SafetensorsFile::open((dir / f.name()).string());
    for (const auto& entry : file->header().tensors) tensors[entry.name] = file->get(entry.name);
  }
  auto take = [&](const std::string& key) {
    auto it = tensors.find(key);
    SY_CHECK(it != tensors.end(), "checkpoint ", folder, ": no tensor '", key,
             "' (saved with other trainable parameters or another model?)");
    return it->second;
  };
  NamedTensors moments;
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : trainer.trainable()) {
    auto gather = [&](const std::string& key) {
      if (!trainer.is_expert_sharded(p)) return take(key);
      const int64_t local = p.size(0), first = int64_t(groups.ep_rank()) * local;
      std::vector<torch::Tensor> rows;
      for (int64_t e = 0; e < local; ++e)
        rows.push_back(take(key + ".expert" + std::to_string(first + e)));
      return torch::stack(rows);
    };
    auto value = gather("param." + name);
    SY_CHECK(value.sizes() == p.sizes(), "checkpoint ", folder, ": '", name, "' is ",
             value.sizes(), ", the model's is ", p.sizes());
    p.copy_(value);
    moments.emplace_back("exp_avg." + name, gather("exp_avg." + name));
    moments.emplace_back("exp_avg_sq." + name, gather("exp_avg_sq." + name));
  }
  moments.emplace_back("step", take("step"));
  trainer.optimizer().load_state(moments);
  auto rng = torch::empty({int64_t(m.cpu_rng_state().size())}, torch::kByte);
  std::memcpy(rng.data_ptr(), m.cpu_rng_state().data(), m.cpu_rng_state().size());
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle on the default
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
  }
  groups.world->barrier();
  return {m.step(), DataPosition{m.data_epoch(), m.data_batch()}};
}

}  // namespace switchyard
