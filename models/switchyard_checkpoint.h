// Switchyard checkpoint folders on disk, one format for training checkpoints (trainer/) and model
// checkpoints (`convert --format switchyard`): safetensors files plus manifest.pb, written last.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "configs/switchyard.pb.h"
#include "models/safetensors.h"
#include "parallel/process_groups.h"

// Layout of a folder (see README "Checkpoints"):
//   replicated.safetensors    tensors every rank holds, written once by rank 0
//   experts-ep<k>.safetensors EP rank k's routed experts, one tensor per *global* expert index
//                             ("<name>.expert<g>", the [E/EP, ...] stack cut along dim 0), so any
//                             EP size can load them; written by the ranks of DP rank 0
//   manifest.pb               CheckpointManifest: the run config, and every file's size and
//                             FNV-1a 64 checksum; a folder without it is incomplete
// Tensor names: "param.<module path>" and "buffer.<module path>" (the names LibTorch's
// named_parameters/named_buffers give), training adds "exp_avg.<name>", "exp_avg_sq.<name>" and
// "step". The folder is written as DIR.partial and renamed once the manifest is in.
namespace switchyard {

using CheckpointTensorList = std::vector<std::pair<std::string, torch::Tensor>>;

inline constexpr const char* kCheckpointManifest = "manifest.pb";

/// What one rank contributes to a checkpoint.
struct CheckpointShard {
  CheckpointTensorList replicated;  ///< written by world rank 0 only
  CheckpointTensorList experts;     ///< this EP rank's experts (written by DP rank 0)
};

/// Appends stacked [slots, ...] `t` as per-expert tensors "<key>.expert<g>", row s under
/// experts[s]. A row whose entry is negative is left out: a replica, written by its expert's
/// first copy (LayerPlacement::owned).
void append_per_expert(CheckpointTensorList& out, const std::string& key, const torch::Tensor& t,
                       const std::vector<int64_t>& experts);

/// "<key>.expert<g>".
std::string expert_tensor_name(const std::string& key, int64_t global_expert);

/// Collective over groups.world. Writes every rank's shard into `dir`.partial; the writers'
/// sizes and checksums (computed while writing) go to rank 0, which checks each file is there,
/// writes manifest.pb and moves the folder to `dir` (an older `dir` of that name is swapped out
/// atomically, never deleted first). Returns when the folder exists; throws Error (one line) on
/// any write failure, a full disk included.
///   usage: write_checkpoint_folder(out, shard, groups, manifest);
void write_checkpoint_folder(const std::string& dir, const CheckpointShard& shard,
                             const ProcessGroups& groups, config::CheckpointManifest manifest);

/// Whether `dir` holds a manifest.pb (a Switchyard checkpoint, complete or not yet verified).
bool is_switchyard_checkpoint(const std::string& dir);

/// The newest complete checkpoint of a run folder: the one RUN_DIR/checkpoints/latest names, or,
/// when that is missing or not complete, the newest complete step-* folder. `note`, if given,
/// then says what was wrong with `latest` (and which folder was taken instead, if any). None
/// when there is no complete checkpoint.
std::optional<std::string> latest_checkpoint(const std::string& run_dir,
                                             std::string* note = nullptr);

/// Whether `name` is a training checkpoint folder's name: "step-" and eight digits.
bool is_step_folder_name(const std::string& name);

/// Whether `dir` has a manifest and every file it lists, at its size (no bytes read); if not,
/// `why` (if given) says what is wrong.
bool complete_checkpoint(const std::filesystem::path& dir, std::string* why = nullptr);

/// Reads and parses DIR/manifest.pb and checks that every listed file exists with its size (no
/// bytes read); checksums are checked as files are opened (CheckpointTensors). Throws Error
/// naming the folder and file.
config::CheckpointManifest read_checkpoint_manifest(const std::string& dir);

/// The tensors of a checkpoint folder by name. Files are memory-mapped (headers only) up front;
/// a file's checksum is verified the first time a tensor is taken from it, so a rank that reads
/// only its experts reads only those files' bytes.
///   usage: CheckpointTensors t(dir, read_checkpoint_manifest(dir));
///          torch::Tensor w = t.get("param.norm.weight");
class CheckpointTensors {
 public:
  CheckpointTensors(std::string dir, const config::CheckpointManifest& manifest);
  bool contains(const std::string& name) const { return file_of_.count(name) > 0; }
  /// Throws Error naming the folder for an absent tensor or a file that fails its checksum.
  torch::Tensor get(const std::string& name) const;
  /// "<key>.expert<g>" for each g of `experts`, stacked [experts.size(), ...].
  torch::Tensor gather_experts(const std::string& key, const std::vector<int64_t>& experts) const;
  std::vector<std::string> names() const;
  /// Reads and checks every file's checksum now (training resume verifies all up front).
  void verify_all() const;
  const std::string& dir() const { return dir_; }

 private:
  struct File {
    std::shared_ptr<SafetensorsFile> mapped;
    uint64_t fnv1a64 = 0;
    mutable bool verified = false;
  };
  void verify(const std::string& file_name, const File& f) const;
  std::string dir_;
  std::map<std::string, File> files_;
  std::map<std::string, std::string> file_of_;  ///< tensor -> file name
};

/// Throws Error unless the files hold as many param./buffer. tensors as the manifest lists.
void check_model_tensor_count(const CheckpointTensors& tensors,
                              const config::CheckpointManifest& manifest);

}  // namespace switchyard
