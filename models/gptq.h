// GPTQ checkpoints (AutoGPTQ's "gptq" format, as in Qwen/Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4):
// the quantization_config of config.json, and reading qweight/qzeros/scales/g_idx.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

#include "models/safetensors.h"
#include "models/weight_quant.h"

namespace switchyard {

/// The subset of GPTQ settings a checkpoint can have that we load: 4 bits, groups of
/// `group_size` consecutive input columns (no act-order permutation), and the zero-point
/// convention of its format version.
struct GptqConfig {
  int64_t bits = 4;
  int64_t group_size = 128;
  bool sym = true;
  /// checkpoint_format "gptq" (v1, AutoGPTQ's default) stores zero - 1 in qzeros;
  /// "gptq_v2" stores the zero itself.
  bool zeros_minus_one = true;

  /// Reads config.json's "quantization_config". Returns nullopt when there is none; throws
  /// Error naming `where` for another quant_method, bits other than 4, or desc_act.
  static std::optional<GptqConfig> from_hf_config(const nlohmann::json& config,
                                                  const std::string& where);
};

/// Reads the GPTQ linear layer stored under `prefix` (e.g. "model.layers.0.mlp.experts.3.
/// down_proj.") with out features `out` and in features `in`:
///   qweight int32 [in / 8, out]    nibble j of row r is the code of input column 8r + j
///   qzeros  int32 [groups, out / 8] nibble j of column c is the zero of output row 8c + j
///   scales  fp16  [groups, out]
///   g_idx   int32 [in] (optional)  must be i / group_size (act-order is refused)
/// w[o, i] = scales[g, o] * (code[i, o] - zero[g, o]), g = i / group_size. Throws Error naming the
/// checkpoint and tensor for a missing tensor, a wrong shape or dtype, or a g_idx out of order.
Int4Codes read_gptq_linear(const SafetensorsCheckpoint& ckpt, const std::string& prefix,
                           const GptqConfig& config, int64_t out, int64_t in);

/// Whether `prefix` names a GPTQ linear layer in the checkpoint (prefix + "qweight" exists).
inline bool is_gptq_linear(const SafetensorsCheckpoint& ckpt, const std::string& prefix) {
  return ckpt.contains(prefix + "qweight");
}

}  // namespace switchyard
