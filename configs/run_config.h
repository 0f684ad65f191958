// Loading a run config: text-format protobuf files, `--set a.b=c` overrides through protobuf
// reflection, and the one place where invariants across fields are validated.
#pragma once

#include <string>
#include <vector>

#include "configs/switchyard.pb.h"

namespace switchyard {

using config::RunConfig;

/// Parses a .pbtxt file. Throws ConfigError "FILE:LINE:COL: what" on any parse error,
/// including unknown fields and wrong types.
RunConfig load_run_config_file(const std::string& path);

/// Parses text-format protobuf from a string (`source` names it in error messages).
RunConfig parse_run_config(const std::string& text, const std::string& source);

/// Applies one `path.to.field=value` assignment. Setting a field inside a oneof member
/// selects that member (e.g. `router.mlp_hadamard.hidden=128` picks the MLP-Hadamard router).
/// Throws ConfigError naming the assignment and the offending path segment.
void apply_override(RunConfig& config, const std::string& assignment);

/// Checks every cross-field invariant. Throws ConfigError "field: why" on the first violation.
void validate_run_config(const RunConfig& config);

/// The router settings that depend on the number of experts (top_k, the MLP-Hadamard width);
/// `experts_field` names where the count came from in the message.
void validate_router_for_experts(const config::RouterConfig& router, int num_experts,
                                 const std::string& experts_field);

/// The config every subcommand starts from: file (optional) + overrides, then validation.
RunConfig build_run_config(const std::string& path, const std::vector<std::string>& overrides);

/// Text-format rendering, for logs and checkpoint manifests.
std::string to_text(const RunConfig& config);

}  // namespace switchyard
