// Training checkpoints: trainable parameters with their AdamW moments, the step, the data
// position and the RNG state, in RUN_DIR/checkpoints/step-N/. Replicated tensors are written
// once (rank 0, replicated.safetensors); expert-sharded ones per expert under their global
// index (experts-ep<k>.safetensors from each EP rank of DP rank 0), so a run saved at one EP
// size resumes at another. Ranks write into step-N.partial/; rank 0 then writes manifest.pb
// (sizes and checksums of every file) and renames the folder, so a kill at any moment leaves
// the last complete checkpoint loadable. The format is models/switchyard_checkpoint.h's, shared
// with model checkpoints: models/load_model.h's load_model evaluates a training checkpoint as its
// base (config.model.checkpoint) with the saved parameters on top.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "data/batch_sampler.h"
#include "trainer/trainer.h"

namespace switchyard {

struct CheckpointState {
  int64_t step = 0;
  DataPosition data;
  config::ResumeFingerprint fingerprint;  ///< what the run that wrote it trained on
  /// Live re-placement (CheckpointMeta's): the placement in use ("" if none was recorded) and
  /// the window's global expert loads.
  std::string expert_placement_json;
  std::vector<int64_t> rebalance_counts;
};

/// What a training checkpoint records besides the trainer's state.
struct CheckpointMeta {
  DataPosition data;  ///< where the data resumes
  /// The trained model's config.json text: kept so that a run trained from scratch (no base
  /// checkpoint) can be loaded from its checkpoints alone.
  std::string model_config_json;
  config::ResumeFingerprint fingerprint;  ///< trainer/resume_fingerprint.h
  /// Live re-placement (trainer/live_placement.h): the placement in use, as
  /// switchyard.placement/1 JSON, and the global expert loads counted since the last
  /// re-placement, so a resume continues where the run left off. Empty otherwise.
  std::string expert_placement_json;
  std::vector<int64_t> rebalance_counts;
};

/// Collective over the world. Returns the folder written. Saving a step that is already saved
/// replaces its folder atomically; `latest` then names it. With train.keep_checkpoints = N > 0,
/// rank 0 removes all but the newest N step folders afterwards.
std::string save_checkpoint(const std::string& run_dir, Trainer& trainer,
                            const ProcessGroups& groups, const RunConfig& config,
                            const CheckpointMeta& meta);

/// Collective. Verifies the manifest and every file (size, checksum) and restores parameters,
/// optimizer state and the RNGs (the CPU's, and the CUDA device's when both runs have one); returns
/// the step and data position to continue from. Throws Error naming the folder and file for a
/// missing, truncated or corrupt checkpoint.
CheckpointState load_checkpoint(const std::string& folder, Trainer& trainer,
                                const ProcessGroups& groups);

}  // namespace switchyard
