// What a checkpoint's run was trained on, so that --resume can refuse a run that changed under
// it: the base model's files, the training data, the global batch, the sequence length, the seed
// and the router kind. Fingerprints are cheap: file names and sizes plus checksums of small
// files and of a bounded sample of large ones.
#pragma once

#include <string>
#include <vector>

#include "configs/run_config.h"

namespace switchyard {

/// The fingerprint of `config` as a run of `world_size` ranks trains it.
config::ResumeFingerprint resume_fingerprint(const RunConfig& config, int world_size);

/// The names of resume_fingerprint's items ("base", "data", "global_batch", "seq_len", "seed",
/// "router"), for --allow-resume-change.
const std::vector<std::string>& resume_fingerprint_items();

/// Throws ConfigError naming every item that differs between the checkpoint's fingerprint
/// (`saved`, of checkpoint `folder`) and this run's (`now`), except those `allowed` lists.
/// Checkpoints written before fingerprints existed pass.
void check_resume_fingerprint(const config::ResumeFingerprint& saved,
                              const config::ResumeFingerprint& now, const std::string& folder,
                              const std::vector<std::string>& allowed);

/// Size and FNV-1a 64 of a file or a folder's files (names, sizes, and the bytes of small files
/// and of three 64 KiB samples of large ones): "1234567 bytes, 9f0c…". Throws Error naming a path
/// that cannot be read.
std::string file_fingerprint(const std::string& path);

}  // namespace switchyard
