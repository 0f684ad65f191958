// bf16 autocast (torch's automatic mixed precision) for a region of code, and the casts our own
// kernels apply to follow it: torch's autocast lists cover its ATen ops (matmul, linear, softmax
// in fp32, ...), not the grouped GEMM of the expert bank.
#pragma once

#include <torch/torch.h>

namespace switchyard {

/// While alive, ops on `device`'s type run under autocast to `dtype` (when `enabled`); restores
/// the previous state and clears the cast cache on leaving the outermost scope, as Python's
/// torch.autocast does. Backward runs outside it (autograd replays the casts).
///   usage: { AutocastScope amp(model.device(), true); out = model.forward(batch); }
///          out.loss.backward();
class AutocastScope {
 public:
  AutocastScope(torch::Device device, bool enabled, torch::Dtype dtype = torch::kBFloat16);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  c10::DeviceType type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// While alive, tensors created without a dtype (every parameter LibTorch's modules create) are
/// `dtype`: a model built in the dtype it computes in never holds a float32 copy of its weights.
/// Restores the previous default on leaving. LibTorch's default is process-wide, not per thread.
///   usage: { DefaultDtypeScope bf16(torch::kBFloat16); model = Qwen2MoeForCausalLM(options); }
class DefaultDtypeScope {
 public:
  explicit DefaultDtypeScope(torch::Dtype dtype);
  ~DefaultDtypeScope();
  DefaultDtypeScope(const DefaultDtypeScope&) = delete;
  DefaultDtypeScope& operator=(const DefaultDtypeScope&) = delete;

 private:
  caffe2::TypeMeta saved_;
};

/// `t` in autocast's lower-precision dtype when autocast is on for its device and `t` is a
/// floating-point tensor of another dtype, fp64 excepted (as torch's autocast); else `t` itself.
/// For inputs of ops autocast skips.
torch::Tensor autocast_operand(const torch::Tensor& t);

}  // namespace switchyard
