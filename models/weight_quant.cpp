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

namespace {

void check_fits(const std::vector<int64_t>& shape, const QuantOptions& options) {
  SY_CHECK(shape.size() == 3, "quantize: expected [experts, out, in], got ", shape.size(), " dims");
  SY_CHECK(options.kind() != QuantKind::kNone, "quantize: no quantization kind given");
  const int64_t g = options.group_size(), in = shape[2];
  if (options.kind() == QuantKind::kInt4 && (g <= 0 || g % 2 != 0 || in % g != 0))
    throw Error(detail::concat("int4 quantization: input width ", in,
                               " is not a multiple of the group size ", g,
                               " (an even number is required)"));
}

}  // namespace

QuantizedWeight QuantizedWeight::empty(const std::vector<int64_t>& shape,
                                       const QuantOptions& options) {
  check_fits(shape, options);
  QuantizedWeight qw;
  qw.options = options;
  qw.shape = shape;
  const int64_t E = shape[0], out = shape[1], in = shape[2];
  if (options.kind() == QuantKind::kInt8) {
    qw.q = torch::zeros({E, out, in}, torch::kChar);
    qw.scale = torch::zeros({E, out}, torch::kFloat);
    return qw;
  }
  const int64_t groups = in / options.group_size();
  qw.q = torch::zeros({E, out, in / 2}, torch::kByte);
  qw.scale = torch::zeros({E, out, groups}, torch::kFloat);
  if (!options.symmetric()) qw.zero = torch::zeros({E, out, groups}, torch::kByte);
  return qw;
}

QuantizedWeight QuantizedWeight::quantize(const torch::Tensor& weight,
                                          const QuantOptions& options) {
  SY_CHECK(weight.dim() == 3, "quantize: expected [experts, out, in], got ", weight.sizes());
  QuantizedWeight qw = empty(weight.sizes().vec(), options);
  // One expert at a time: temporaries stay the size of one expert's weight.
  for (int64_t e = 0; e < weight.size(0); ++e) qw.set_expert(e, weight[e]);
  return qw;
}

void QuantizedWeight::set_expert(int64_t e, const torch::Tensor& weight) {
  SY_CHECK(weight.dim() == 2 && weight.size(0) == shape[1] && weight.size(1) == shape[2],
           "quantized expert ", e, ": weight ", weight.sizes(), " does not match [", shape[1], ", ",
           shape[2], "]");
  torch::NoGradGuard no_grad;
  auto w = weight.detach().to(torch::kFloat);
  const int64_t out = shape[1], in = shape[2];
  if (options.kind() == QuantKind::kInt8) {
    auto s = w.abs().amax(-1).clamp_min(1e-12) / 127.0;  // [out]
    scale[e].copy_(s);
    q[e].copy_(torch::round(w / s.unsqueeze(-1)).clamp(-127, 127));
    return;
  }
  const int64_t g = options.group_size();
  auto groups = w.view({out, in / g, g});
  torch::Tensor codes;
  if (options.symmetric()) {
    auto s = groups.abs().amax(-1).clamp_min(1e-12) / 7.0;
    codes = torch::round(groups / s.unsqueeze(-1)).clamp(-8, 7) + 8;
    scale[e].copy_(s);
  } else {
    // The range always includes 0 (as GPTQ does): the zero point then lies in 0..15 and every
    // code is at most half a step from its weight, constant groups included.
    auto lo = groups.amin(-1).clamp_max(0), hi = groups.amax(-1).clamp_min(0);
    auto s = ((hi - lo) / 15.0).clamp_min(1e-12);
    auto z = torch::round(-lo / s).clamp(0, 15);
    codes = (torch::round(groups / s.unsqueeze(-1)) + z.unsqueeze(-1)).clamp(0, 15);
    scale[e].copy_(s);
    zero[e].copy_(z);
  }
  q[e].copy_(pack_int4(codes.view({out, in})));
}

void QuantizedWeight::set_expert_codes(int64_t e, const Int4Codes& c) {
  const int64_t out = shape[1], in = shape[2];
  SY_CHECK(options.kind() == QuantKind::kInt4 && zero.defined(), "quantized expert ", e,
           ": 4-bit codes need an int4 bank with zero points, this one is ",
           quant_name(options.kind()), options.symmetric() ? " symmetric" : "");
  const int64_t groups = in / options.group_size();
  if (c.codes.sizes() != torch::IntArrayRef{out, in} ||
      c.scale.sizes() != torch::IntArrayRef{out, groups} ||
      c.zero.sizes() != torch::IntArrayRef{out, groups})
    throw Error(detail::concat("quantized expert ", e, ": codes ", c.codes.sizes(), ", scales ",
                               c.scale.sizes(), ", zeros ", c.zero.sizes(), " do not fit [", out,
                               ", ", in, "] in groups of ", options.group_size()));
  torch::NoGradGuard no_grad;
  q[e].copy_(pack_int4(c.codes));
  scale[e].copy_(c.scale);
  zero[e].copy_(c.zero);
}

torch::Tensor Int4Codes::dequantize(torch::ScalarType dtype) const {
  const int64_t out = codes.size(0), in = codes.size(1), groups = scale.size(1);
  auto grouped = codes.to(torch::kFloat).view({out, groups, in / groups});
  return ((grouped - zero.to(torch::kFloat).unsqueeze(-1)) * scale.to(torch::kFloat).unsqueeze(-1))
      .view({out, in})
      .to(dtype);
}

Int4Codes Int4Codes::cat_rows(const Int4Codes& top, const Int4Codes& bottom) {
  return {torch::cat({top.codes, bottom.codes}), torch::cat({top.scale, bottom.scale}),
          torch::cat({top.zero, bottom.zero})};
}

torch::Tensor QuantizedWeight::dequantize(int64_t e, torch::ScalarType dtype) const {
  if (options.kind() == QuantKind::kInt8)
    return (q[e].to(torch::kFloat) * scale[e].unsqueeze(-1)).to(dtype);
  const int64_t out = shape[1], in = shape[2], g = options.group_size();
  auto codes = unpack_int4(q[e]).to(torch::kFloat).view({out, in / g, g});
  // Symmetric codes subtract a plain scalar: a 1-element CPU tensor would not mix with CUDA codes.
  auto centred = zero.defined() ? codes - zero[e].to(torch::kFloat).unsqueeze(-1) : codes - 8.0;
  return (centred * scale[e].unsqueeze(-1)).view({out, in}).to(dtype);
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
