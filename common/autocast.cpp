// See autocast.h.
#include "common/autocast.h"

#include <ATen/autocast_mode.h>

namespace switchyard {

AutocastScope::AutocastScope(torch::Device device, bool enabled, torch::Dtype dtype)
    : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  was_enabled_ = at::autocast::is_autocast_enabled(type_);
  was_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  // Leaving the outermost scope drops the weight casts cached for it.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, was_enabled_);
  at::autocast::set_autocast_dtype(type_, was_dtype_);
}

DefaultDtypeScope::DefaultDtypeScope(torch::Dtype dtype) : saved_(torch::get_default_dtype()) {
  torch::set_default_dtype(caffe2::TypeMeta::fromScalarType(dtype));
}

DefaultDtypeScope::~DefaultDtypeScope() {
  torch::set_default_dtype(saved_);
}

torch::Tensor autocast_operand(const torch::Tensor& t) {
  // As torch's autocast: fp64 stays fp64.
  if (!t.defined() || !t.is_floating_point() || t.scalar_type() == torch::kDouble) return t;
  const auto type = t.device().type();
  if (!at::autocast::is_autocast_enabled(type)) return t;
  const auto dtype = at::autocast::get_autocast_dtype(type);
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

}  // namespace switchyard
