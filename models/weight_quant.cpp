// Round-to-nearest quantization. Scales are kept in fp32: they are a small fraction of the bytes
// and keep dequantisation exact up to the code rounding.
#include "models/weight_quant.h"

#include <torch/custom_class.h>

#include "common/errors.h"

namespace switchyard {

std::string quant_name(QuantKind kind) {
  switch (kind) {
    case QuantKind::kInt8:
      return "int8";
    case QuantKind::kInt4:
      return "int4";
    default:
      return "none";
  }
}

torch::Tensor pack_int4(const torch::Tensor& codes) {
  SY_CHECK(codes.size(-1) % 2 == 0, "pack_int4: last dimension ", codes.size(-1), " is odd");
  auto c = codes.to(torch::kByte);
  auto even = c.slice(-1, 0, c.size(-1), 2), odd = c.slice(-1, 1, c.size(-1), 2);
  return even.bitwise_or(odd.bitwise_left_shift(4)).contiguous();
}

torch::Tensor unpack_int4(const torch::Tensor& packed) {
  auto low = packed.bitwise_and(0x0F), high = packed.bitwise_right_shift(4);
  auto sizes = packed.sizes().vec();
  sizes.back() *= 2;
  return torch::stack({low, high}, -1).reshape(sizes);
}

QuantizedWeight QuantizedWeight::quantize(const torch::Tensor& weight,
                                          const QuantOptions& options) {
  SY_CHECK(weight.dim() == 3, "quantize: expected [experts, out, in], got ", weight.sizes());
  QuantizedWeight qw;
  qw.options = options;
  qw.shape = weight.sizes().vec();
  auto w = weight.detach().to(torch::kFloat);
  const int64_t E = qw.shape[0], out = qw.shape[1], in = qw.shape[2];
  if (options.kind() == QuantKind::kInt8) {
    qw.scale = w.abs().amax(-1).clamp_min(1e-12) / 127.0;  // [E, out]
    qw.q = torch::round(w / qw.scale.unsqueeze(-1)).clamp(-127, 127).to(torch::kChar);
    return qw;
  }
  SY_CHECK(options.kind() == QuantKind::kInt4, "quantize: no quantization kind given");
  const int64_t g = options.group_size();
  if (g <= 0 || g % 2 != 0 || in % g != 0)
    throw Error(detail::concat("int4 quantization: input width ", in,
                               " is not a multiple of the group size ", g,
                               " (an even number is required)"));
  auto groups = w.view({E, out, in / g, g});
  torch::Tensor codes;
  if (options.symmetric()) {
    qw.scale = groups.abs().amax(-1).clamp_min(1e-12) / 7.0;
    codes = torch::round(groups / qw.scale.unsqueeze(-1)).clamp(-8, 7) + 8;
  } else {
    // The range always includes 0 (as GPTQ does): the zero point then lies in 0..15 and every
    // code is at most half a step from its weight, constant groups included.
    auto lo = groups.amin(-1).clamp_max(0), hi = groups.amax(-1).clamp_min(0);
    qw.scale = ((hi - lo) / 15.0).clamp_min(1e-12);
    auto zero = torch::round(-lo / qw.scale).clamp(0, 15);
    codes = (torch::round(groups / qw.scale.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, 15);
    qw.zero = zero.to(torch::kByte);
  }
  qw.q = pack_int4(codes.view({E, out, in}));
  return qw;
}

torch::Tensor QuantizedWeight::dequantize(int64_t e, torch::ScalarType dtype) const {
  if (options.kind() == QuantKind::kInt8)
    return (q[e].to(torch::kFloat) * scale[e].unsqueeze(-1)).to(dtype);
  const int64_t out = shape[1], in = shape[2], g = options.group_size();
  auto codes = unpack_int4(q[e]).to(torch::kFloat).view({out, in / g, g});
  auto zero_point = zero.defined() ? zero[e].to(torch::kFloat).unsqueeze(-1)
                                   : torch::full({1}, 8.0f, torch::kFloat);
  return ((codes - zero_point) * scale[e].unsqueeze(-1)).view({out, in}).to(dtype);
}

void QuantizedWeight::set_expert(int64_t e, const torch::Tensor& w) {
  SY_CHECK(w.dim() == 2 && w.size(0) == shape[1] && w.size(1) == shape[2], "quantized expert ", e,
           ": weight ", w.sizes(), " does not match [", shape[1], ", ", shape[2], "]");
  auto one = quantize(w.unsqueeze(0), options);
  torch::NoGradGuard no_grad;
  q[e].copy_(one.q[0]);
  scale[e].copy_(one.scale[0]);
  if (zero.defined()) zero[e].copy_(one.zero[0]);
}

namespace {

struct QuantizedWeightCapsule : torch::CustomClassHolder {
  explicit QuantizedWeightCapsule(std::shared_ptr<const QuantizedWeight> w)
      : weight(std::move(w)) {}
  std::shared_ptr<const QuantizedWeight> weight;
};

class QuantizedLinear : public torch::autograd::Function<QuantizedLinear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const std::shared_ptr<const QuantizedWeight>& w, int64_t e) {
    ctx->saved_data["weight"] =
        c10::IValue::make_capsule(c10::make_intrusive<QuantizedWeightCapsule>(w));
    ctx->saved_data["expert"] = e;
    return torch::matmul(x, w->dequantize(e, x.scalar_type()).t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto capsule = ctx->saved_data["weight"].toCapsule();
    const auto& w = static_cast<QuantizedWeightCapsule*>(capsule.get())->weight;
    const auto& g = grads[0];
    auto grad_x =
        torch::matmul(g, w->dequantize(ctx->saved_data["expert"].toInt(), g.scalar_type()));
    return {grad_x, {}, {}};
  }
};

}  // namespace

torch::Tensor quantized_linear(const torch::Tensor& x, std::shared_ptr<const QuantizedWeight> w,
                               int64_t expert) {
  return QuantizedLinear::apply(x, std::move(w), expert);
}

int64_t QuantizedWeight::nbytes() const {
  int64_t n = 0;
  for (const auto& t : {q, scale, zero})
    if (t.defined()) n += t.numel() * int64_t(t.element_size());
  return n;
}

}  // namespace switchyard
