// What a checkpoint holds, read from its headers alone (no weights are touched): architecture
// facts from config.json, parameter counts per component, and tensors grouped by name pattern.
// `switchyard inspect` prints it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchyard {

/// Parameters and bytes of one part of the model (embeddings, attention, routed experts, ...).
struct ComponentCount {
  std::string component;
  int64_t tensors = 0;
  int64_t parameters = 0;  ///< logical weights: a GPTQ int32 word counts as 8 4-bit weights
  int64_t bytes = 0;       ///< as stored, quantization scales and zeros included
};

/// Tensors whose names differ only in layer or expert numbers, e.g.
/// "model.layers.*.mlp.experts.*.gate_proj.weight" x 1440, BF16 [1408, 2048].
struct TensorGroup {
  std::string pattern;
  int64_t count = 0;
  std::string dtype;  ///< "mixed" when members differ
  std::string shape;  ///< "mixed" when members differ
};

struct CheckpointSummary {
  std::string path;
  std::map<std::string, std::string> architecture;  ///< config.json facts, as text
  std::string quantization;                         ///< "none", "gptq int4 group 128 sym", ...
  std::vector<ComponentCount> components;           ///< fixed order; only non-empty ones
  int64_t total_parameters = 0;
  /// Per token: everything but the routed experts, plus top_k / num_experts of them.
  int64_t active_parameters = 0;
  int64_t total_bytes = 0;
  std::vector<TensorGroup> groups;
  /// Every tensor: name, dtype, shape (for --tensors).
  std::vector<std::vector<std::string>> tensors;
};

/// Reads a Hugging Face folder (config.json optional, single or sharded safetensors), a
/// Switchyard checkpoint folder (manifest.pb; quantized experts counted by their codes) or one
/// .safetensors file. Throws Error naming the path for anything unreadable.
CheckpointSummary summarize_checkpoint(const std::string& path);

/// The component a tensor name belongs to ("routed experts", "attention", ...).
std::string component_of(const std::string& tensor_name);

}  // namespace switchyard
