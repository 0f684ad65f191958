// Any Switchyard model (a module tree with MoE blocks: Qwen2-MoE, BERT-MoE) as checkpoint
// tensors and back: parameters and buffers by module path, routed experts per global index.
#pragma once

#include <torch/torch.h>

#include "models/switchyard_checkpoint.h"

namespace switchyard {

/// Every parameter ("param.<path>") and buffer ("buffer.<path>") of `model`; the routed experts'
/// stacks [E/EP, ...] cut into per-expert tensors under their global index. Quantized experts
/// stay as their codes, scales and zeros (buffers); empty placeholders are left out.
///   usage: write_checkpoint_folder(dir, model_state_shard(*model, groups), groups, manifest);
CheckpointShard model_state_shard(torch::nn::Module& model, const ProcessGroups& groups);

struct OverlayOptions {
  /// Every tensor of the model must come from the checkpoint, and every "param."/"buffer."
  /// tensor of the checkpoint must have a place in the model (a complete model checkpoint).
  /// Otherwise (a training checkpoint) only the tensors present are copied.
  TORCH_ARG(bool, complete) = true;
  /// The router config differs from the checkpoint's: routers are not read, except that a saved
  /// linear gate ("<block>.router.gate.weight") initialises the new routers (init_from_gate).
  TORCH_ARG(bool, replace_routers) = false;
};

/// Copies the checkpoint's tensors into `model` (this rank's experts only). A checkpoint with
/// float experts loads into a quantized bank (quantized here, expert by expert); one with
/// quantized experts needs a bank of the same quantization. Returns the tensors copied. Throws
/// Error naming the checkpoint and tensor for anything missing, unknown or mis-shaped.
///   usage: overlay_model_state(*model, CheckpointTensors(dir, manifest), OverlayOptions());
int64_t overlay_model_state(torch::nn::Module& model, const CheckpointTensors& ckpt,
                            const OverlayOptions& options);

}  // namespace switchyard
