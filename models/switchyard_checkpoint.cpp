// See switchyard_checkpoint.h.
#include "models/switchyard_checkpoint.h"

#include <fcntl.h>
#include <stdio.h>

#include <algorithm>
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
                       const std::vector<int64_t>& experts) {
  SY_CHECK(t.size(0) == int64_t(experts.size()), "checkpoint: '", key, "' has ", t.size(0),
           " rows for ", experts.size(), " expert slots");
  for (size_t s = 0; s < experts.size(); ++s)
    if (experts[s] >= 0) out.emplace_back(expert_tensor_name(key, experts[s]), t[int64_t(s)]);
}

namespace {

// Moves `partial` to `final_dir` so that a kill at any moment leaves a complete folder under
// `final_dir`'s name or under `partial`'s: when `final_dir` exists (the same step saved again)
// the two are swapped atomically and the old one removed after; never removed first.
void move_into_place(const fs::path& partial, const fs::path& final_dir) {
  if (!fs::exists(final_dir)) {
    fs::rename(partial, final_dir);
  } else if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) ==
             0) {
    fs::remove_all(partial);  // now the old folder
  } else {
    // A filesystem without atomic exchange (NFS): the old folder is set aside, not deleted,
    // until the new one has its name; `latest` falls back to complete step folders meanwhile.
    const fs::path old = final_dir.string() + ".replaced";
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(partial, final_dir);
    fs::remove_all(old);
  }
  fsync_directory(final_dir.parent_path().string());
}

std::string expert_file_name(int ep_rank) {
  return "experts-ep" + std::to_string(ep_rank) + ".safetensors";
}

}  // namespace

void write_checkpoint_folder(const std::string& dir, const CheckpointShard& shard,
                             const ProcessGroups& groups, config::CheckpointManifest manifest) {
  const fs::path final_dir(dir), partial(dir + ".partial");
  const int rank = groups.world->rank(), world = groups.world->size();
  if (rank == 0) {
    fs::remove_all(partial);
    fs::create_directories(partial);
  }
  groups.world->barrier();
  // Each writer reports what it wrote (size and checksum, computed while writing), so rank 0
  // lists the files it told the ranks to write, with no directory listing (shared filesystems
  // cache those) and no re-read.
  // [replicated: wrote, bytes, fnv; experts: wrote, bytes, fnv; model tensors in each]
  auto written = torch::zeros({8}, torch::kLong);
  auto report = [&](int at, const WrittenFile& f) {
    written[at] = 1;
    written[at + 1] = int64_t(f.bytes);
    written[at + 2] = static_cast<int64_t>(f.fnv1a64);
  };
  auto model_tensors = [](const CheckpointTensorList& list) {
    return int64_t(std::count_if(list.begin(), list.end(), [](const auto& e) {
      return e.first.starts_with("param.") || e.first.starts_with("buffer.");
    }));
  };
  if (rank == 0) {
    report(0, save_safetensors((partial / "replicated.safetensors").string(), shard.replicated));
    written[6] = model_tensors(shard.replicated);
  }
  if (groups.dp_rank() == 0 && !shard.experts.empty()) {
    report(3, save_safetensors((partial / expert_file_name(groups.ep_rank())).string(),
                               shard.experts));
    written[7] = model_tensors(shard.experts);
  }
  const auto all = groups.world->all_gather(written.view({1, 8})).contiguous();
  if (rank == 0) {
    manifest.clear_files();
    const int64_t* w = all.data_ptr<int64_t>();
    auto add = [&](const std::string& name, const int64_t* f) {
      const fs::path path = partial / name;
      std::error_code ec;
      const uint64_t on_disk = fs::file_size(path, ec);
      if (ec || on_disk != uint64_t(f[1]))
        throw Error(detail::concat(
            "checkpoint ", dir, ": ", name, " was written (", f[1], " bytes) but ",
            ec ? "is not there" : "has " + std::to_string(on_disk) + " bytes", "; not saved"));
      auto* entry = manifest.add_files();
      entry->set_name(name);
      entry->set_bytes(uint64_t(f[1]));
      entry->set_fnv1a64(static_cast<uint64_t>(f[2]));
    };
    add("replicated.safetensors", w);
    int64_t count = w[6];
    // Rank r = dp_rank * EP + ep_rank: the writers of experts are ranks 0 .. EP-1.
    for (int r = 0; r < std::min(world, groups.ep_size()); ++r)
      if (w[8 * r + 3]) {
        add(expert_file_name(r), w + 8 * r + 3);
        count += w[8 * r + 7];
      }
    manifest.set_model_tensor_count(count);
    write_text_file_atomic((partial / kCheckpointManifest).string(), manifest.SerializeAsString());
    move_into_place(partial, final_dir);
  }
  groups.world->barrier();  // nobody returns before the folder exists
}

bool is_switchyard_checkpoint(const std::string& dir) {
  return fs::is_regular_file(fs::path(dir) / kCheckpointManifest);
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir, std::string* note) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root)) return std::nullopt;
  std::string named, why;
  if (fs::is_regular_file(root / "latest")) {
    named = read_text_file((root / "latest").string());
    while (!named.empty() && (named.back() == '\n' || named.back() == ' ')) named.pop_back();
    if (complete_checkpoint(root / named, &why)) return (root / named).string();
  }
  // `latest` is missing, or names a folder that is gone or incomplete (a kill between writing
  // and naming, or a damaged disk): the newest complete step folder instead.
  const std::string problem =
      root.string() + "/latest " +
      (named.empty() ? "is missing"
                     : "names " + named + ", which is not a complete checkpoint (" + why + ")");
  if (note) *note = problem;
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && is_step_folder_name(name)) steps.push_back(e.path());
  }
  std::sort(steps.rbegin(), steps.rend());
  for (const auto& s : steps) {
    if (!complete_checkpoint(s)) continue;
    if (note) *note = problem + "; using the newest complete one, " + s.filename().string();
    return s.string();
  }
  return std::nullopt;
}

bool is_step_folder_name(const std::string& name) {
  return name.size() == 13 && name.starts_with("step-") &&
         name.find_first_not_of("0123456789", 5) == std::string::npos;
}

bool complete_checkpoint(const fs::path& dir, std::string* why) {
  try {
    read_checkpoint_manifest(dir.string());
    return true;
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
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

void check_model_tensor_count(const CheckpointTensors& tensors,
                              const config::CheckpointManifest& manifest) {
  if (!manifest.has_model_tensor_count()) return;  // written before the count was kept
  const auto names = tensors.names();
  const int64_t found = std::count_if(names.begin(), names.end(), [](const std::string& n) {
    return n.starts_with("param.") || n.starts_with("buffer.");
  });
  if (found != manifest.model_tensor_count())
    throw Error(detail::concat("checkpoint ", tensors.dir(), ": the manifest lists ",
                               manifest.model_tensor_count(), " model tensors, its files hold ",
                               found));
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

torch::Tensor CheckpointTensors::gather_experts(const std::string& key,
                                                const std::vector<int64_t>& experts) const {
  std::vector<torch::Tensor> rows;
  for (int64_t e : experts) rows.push_back(get(expert_tensor_name(key, e)));
  return torch::stack(rows);
}

std::vector<std::string> CheckpointTensors::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : file_of_) out.push_back(name);
  return out;
}

}  // namespace switchyard
