// See switchyard_checkpoint.h.
#include "models/switchyard_checkpoint.h"

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "common/fnv1a.h"

namespace switchyard {

namespace fs = std::filesystem;

namespace {

// FNV-1a of a whole file, and its size.
uint64_t file_fnv1a64(const std::string& path, uint64_t* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw Error(path + ": cannot open");
  Fnv1a64 h;
  uint64_t n = 0;
  std::vector<char> buf(1 << 16);
  while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
    h.update(std::string_view(buf.data(), size_t(in.gcount())));
    n += uint64_t(in.gcount());
  }
  *bytes = n;
  return h.value();
}

}  // namespace

std::string expert_tensor_name(const std::string& key, int64_t global_expert) {
  return key + ".expert" + std::to_string(global_expert);
}

void append_per_expert(CheckpointTensorList& out, const std::string& key, const torch::Tensor& t,
                       int64_t first_expert) {
  for (int64_t e = 0; e < t.size(0); ++e)
    out.emplace_back(expert_tensor_name(key, first_expert + e), t[e]);
}

void write_checkpoint_folder(const std::string& dir, const CheckpointShard& shard,
                             const ProcessGroups& groups, config::CheckpointManifest manifest) {
  const fs::path final_dir(dir), partial(dir + ".partial");
  const int rank = groups.world->rank();
  if (rank == 0) {
    fs::remove_all(partial);
    fs::create_directories(partial);
  }
  groups.world->barrier();
  if (rank == 0) save_safetensors((partial / "replicated.safetensors").string(), shard.replicated);
  if (groups.dp_rank() == 0 && !shard.experts.empty())
    save_safetensors(
        (partial / ("experts-ep" + std::to_string(groups.ep_rank()) + ".safetensors")).string(),
        shard.experts);
  groups.world->barrier();  // every file is in place before rank 0 lists them
  if (rank == 0) {
    manifest.clear_files();
    std::vector<fs::path> paths;
    for (const auto& entry : fs::directory_iterator(partial)) paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      auto* f = manifest.add_files();
      uint64_t bytes = 0;
      f->set_fnv1a64(file_fnv1a64(path.string(), &bytes));
      f->set_bytes(bytes);
      f->set_name(path.filename().string());
    }
    write_text_file_atomic((partial / kCheckpointManifest).string(), manifest.SerializeAsString());
    fs::remove_all(final_dir);
    fs::rename(partial, final_dir);
  }
  groups.world->barrier();  // nobody returns before the folder exists
}

bool is_switchyard_checkpoint(const std::string& dir) {
  return fs::is_regular_file(fs::path(dir) / kCheckpointManifest);
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_regular_file(root / "latest")) return std::nullopt;
  std::string name = read_text_file((root / "latest").string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return (root / name).string();
}

config::CheckpointManifest read_checkpoint_manifest(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_regular_file(root / kCheckpointManifest))
    throw Error(detail::concat("checkpoint ", dir, ": no ", kCheckpointManifest,
                               " (incomplete or not a checkpoint)"));
  config::CheckpointManifest m;
  if (!m.ParseFromString(read_text_file((root / kCheckpointManifest).string())))
    throw Error(
        detail::concat("checkpoint ", dir, ": ", kCheckpointManifest, " is not a valid manifest"));
  for (const auto& f : m.files()) {
    const fs::path path = root / f.name();
    if (f.name().empty() || f.name().find('/') != std::string::npos || !fs::is_regular_file(path))
      throw Error(detail::concat("checkpoint ", dir, ": ", f.name(), " is missing"));
    const uint64_t bytes = fs::file_size(path);
    if (bytes != f.bytes())
      throw Error(detail::concat("checkpoint ", dir, ": ", f.name(), " has ", bytes,
                                 " bytes, the manifest says ", f.bytes(), " (truncated?)"));
  }
  return m;
}

CheckpointTensors::CheckpointTensors(std::string dir, const config::CheckpointManifest& manifest)
    : dir_(std::move(dir)) {
  for (const auto& f : manifest.files()) {
    if (!f.name().ends_with(".safetensors")) continue;
    File file;
    file.fnv1a64 = f.fnv1a64();
    try {
      file.mapped = SafetensorsFile::open((fs::path(dir_) / f.name()).string());
    } catch (const Error& e) {  // a damaged header: corruption if the bytes changed
      verify(f.name(), file);
      throw Error(detail::concat("checkpoint ", dir_, ": ", e.what()));
    }
    for (const auto& entry : file.mapped->header().tensors) file_of_[entry.name] = f.name();
    files_.emplace(f.name(), std::move(file));
  }
}

void CheckpointTensors::verify(const std::string& file_name, const File& f) const {
  if (f.verified) return;
  uint64_t bytes = 0;
  if (file_fnv1a64((fs::path(dir_) / file_name).string(), &bytes) != f.fnv1a64)
    throw Error(detail::concat("checkpoint ", dir_, ": ", file_name,
                               " does not match its checksum (corrupt)"));
  f.verified = true;
}

void CheckpointTensors::verify_all() const {
  for (const auto& [name, f] : files_) verify(name, f);
}

torch::Tensor CheckpointTensors::get(const std::string& name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end())
    throw Error(detail::concat("checkpoint ", dir_, ": no tensor '", name, "'"));
  const File& f = files_.at(it->second);
  verify(it->second, f);
  return f.mapped->get(name);
}

torch::Tensor CheckpointTensors::gather_experts(const std::string& key, int64_t first,
                                                int64_t count) const {
  std::vector<torch::Tensor> rows;
  for (int64_t e = 0; e < count; ++e) rows.push_back(get(expert_tensor_name(key, first + e)));
  return torch::stack(rows);
}

std::vector<std::string> CheckpointTensors::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : file_of_) out.push_back(name);
  return out;
}

}  // namespace switchyard
