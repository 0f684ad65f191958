// Expert computation on contiguous slices. The dispatcher already grouped rows by expert, so each
// expert is one dense GEMM pair on a view; no per-token gather happens here.
#include "models/expert_bank.h"

#include <cmath>
#include <cstdint>
#include <numeric>

#include "common/autocast.h"
#include "common/errors.h"
#include "common/host_reads.h"
#include "models/cpu_linear.h"

namespace switchyard {

namespace {
thread_local bool skip_expert_init = false;
}  // namespace

SkipExpertInit::SkipExpertInit() : saved_(skip_expert_init) {
  skip_expert_init = true;
}
SkipExpertInit::~SkipExpertInit() {
  skip_expert_init = saved_;
}

ExpertBankImpl::ExpertBankImpl(ExpertBankOptions options) : options_(std::move(options)) {
  const auto E = options_.num_experts(), H = options_.hidden_size(),
             I = options_.intermediate_size();
  SY_CHECK(E > 0 && H > 0 && I > 0, "ExpertBank: experts ", E, ", hidden ", H, ", intermediate ", I,
           " must be positive");
  const bool swiglu = options_.kind() == ExpertKind::kSwiGlu;
  const std::vector<int64_t> in_shape{E, swiglu ? 2 * I : I, H}, out_shape{E, H, I};
  const bool quantize = options_.quant().kind() != QuantKind::kNone;
  // A bank built quantized never holds full-precision weights, not even while initialising.
  w_in = register_parameter("w_in", torch::empty(quantize ? std::vector<int64_t>{0} : in_shape));
  w_out = register_parameter("w_out", torch::empty(quantize ? std::vector<int64_t>{0} : out_shape));
  if (!swiglu) {
    b_in = register_parameter("b_in", torch::empty({E, I}));
    b_out = register_parameter("b_out", torch::empty({E, H}));
  }
  if (quantize)
    adopt_quantized(QuantizedWeight::empty(in_shape, options_.quant()),
                    QuantizedWeight::empty(out_shape, options_.quant()));
  if (!skip_expert_init) reset_parameters();
}

void ExpertBankImpl::adopt_quantized(QuantizedWeight in, QuantizedWeight out) {
  quant_in_ = std::make_shared<QuantizedWeight>(std::move(in));
  quant_out_ = std::make_shared<QuantizedWeight>(std::move(out));
  // Buffers, so .to(device) moves the codes with the module (and keeps these handles valid).
  for (auto [name, qw] : {std::pair{"w_in", quant_in_.get()}, {"w_out", quant_out_.get()}}) {
    qw->q = register_buffer(std::string(name) + "_q", qw->q);
    qw->scale = register_buffer(std::string(name) + "_scale", qw->scale);
    if (qw->zero.defined()) qw->zero = register_buffer(std::string(name) + "_zero", qw->zero);
  }
  // The full-precision weights go; empty frozen placeholders keep parameter names stable.
  for (auto* p : {&w_in, &w_out}) {
    p->set_data(torch::empty({0}, p->options()));
    p->set_requires_grad(false);
  }
  for (auto* b : {&b_in, &b_out})
    if (b->defined()) b->set_requires_grad(false);
}

void ExpertBankImpl::reset_parameters() {
  // nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
  torch::NoGradGuard no_grad;
  const double in_bound = 1.0 / std::sqrt(double(options_.hidden_size()));
  const double out_bound = 1.0 / std::sqrt(double(options_.intermediate_size()));
  if (quantized()) {
    // One expert at a time, straight into codes.
    for (int64_t e = 0; e < options_.num_experts(); ++e) {
      const auto& si = quant_in_->shape;
      const auto& so = quant_out_->shape;
      quant_in_->set_expert(e, torch::empty({si[1], si[2]}).uniform_(-in_bound, in_bound));
      quant_out_->set_expert(e, torch::empty({so[1], so[2]}).uniform_(-out_bound, out_bound));
    }
  } else {
    w_in.uniform_(-in_bound, in_bound);
    w_out.uniform_(-out_bound, out_bound);
  }
  if (b_in.defined()) b_in.uniform_(-in_bound, in_bound);
  if (b_out.defined()) b_out.uniform_(-out_bound, out_bound);
}

torch::Tensor ExpertBankImpl::activate(const torch::Tensor& h) const {
  if (options_.kind() == ExpertKind::kSwiGlu) {
    auto gate_up = h.chunk(2, -1);
    return torch::silu(gate_up[0]) * gate_up[1];
  }
  return torch::gelu(h);  // exact erf
}

std::vector<ExpertBankImpl::Weights> ExpertBankImpl::per_expert() const {
  auto unbind = [](const torch::Tensor& t) {
    return t.defined() ? t.unbind(0) : std::vector<torch::Tensor>();
  };
  std::vector<Weights> out(size_t(options_.num_experts()));
  std::vector<torch::Tensor> w_ins, w_outs;
  if (!quantized()) w_ins = unbind(w_in), w_outs = unbind(w_out);
  auto b_ins = unbind(b_in), b_outs = unbind(b_out);
  for (size_t e = 0; e < out.size(); ++e) {
    if (!w_ins.empty()) out[e].w_in = w_ins[e], out[e].w_out = w_outs[e];
    if (!b_ins.empty()) out[e].b_in = b_ins[e];
    if (!b_outs.empty()) out[e].b_out = b_outs[e];
  }
  return out;
}

torch::Tensor ExpertBankImpl::forward_expert(int64_t e, const Weights& weights,
                                             const torch::Tensor& x) const {
  const Weights& w = weights;
  auto linear = [&](const torch::Tensor& in, const torch::Tensor& weight,
                    const std::shared_ptr<QuantizedWeight>& quant, const torch::Tensor& bias) {
    torch::Tensor y;
    if (quant)
      y = quantized_linear(in, quant, e);
    else if (gemm_in_fp32_on_cpu(in, weight))
      y = cpu_linear(in, weight);
    else
      y = torch::matmul(in, weight.t());
    return bias.defined() ? y + bias : y;
  };
  auto h = linear(x, w.w_in, quant_in_, w.b_in);
  return linear(activate(h), w.w_out, quant_out_, w.b_out);
}

torch::Tensor ExpertBankImpl::slice_loop(const torch::Tensor& x,
                                         const std::vector<int64_t>& counts) {
  auto slices = x.split_with_sizes(counts);
  const auto experts = per_expert();
  std::vector<torch::Tensor> outputs;
  outputs.reserve(slices.size());
  for (size_t e = 0; e < slices.size(); ++e)
    outputs.push_back(counts[e] ? forward_expert(int64_t(e), experts[e], slices[e]) : slices[e]);
  return torch::cat(outputs);
}

void ExpertBankImpl::quantize_(const QuantOptions& options) {
  SY_CHECK(!quantized(), "ExpertBank: already quantized");
  if (options.kind() == QuantKind::kNone) return;
  torch::NoGradGuard no_grad;
  adopt_quantized(QuantizedWeight::quantize(w_in, options),
                  QuantizedWeight::quantize(w_out, options));
}

void ExpertBankImpl::to(torch::Dtype dtype, bool non_blocking) {
  for (auto& p : named_parameters(/*recurse=*/false))
    if (p.value().is_floating_point()) p.value().set_data(p.value().to(dtype, non_blocking));
}

void ExpertBankImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  to(dtype, non_blocking);
}

void ExpertBankImpl::load_expert(int64_t e, const std::vector<torch::Tensor>& w_in_rows,
                                 const torch::Tensor& w_out_e) {
  SY_CHECK(e >= 0 && e < options_.num_experts(), "ExpertBank: expert ", e, " out of range");
  SY_CHECK(!w_in_rows.empty(), "ExpertBank: expert ", e, " given no input weight");
  // The slot's shapes from the options: a quantized bank holds no float weights to ask.
  const int64_t H = options_.hidden_size(), I = options_.intermediate_size();
  const std::vector<int64_t> want_in{options_.kind() == ExpertKind::kSwiGlu ? 2 * I : I, H},
      want_out{H, I};
  std::vector<int64_t> in_sizes{0, H};
  for (const auto& rows : w_in_rows) {
    SY_CHECK(rows.dim() == 2 && rows.size(1) == H, "ExpertBank: expert ", e, " input rows ",
             rows.sizes(), " do not fit ", torch::IntArrayRef(want_in));
    in_sizes[0] += rows.size(0);
  }
  SY_CHECK(in_sizes == want_in && w_out_e.sizes() == torch::IntArrayRef(want_out),
           "ExpertBank: expert ", e, "'s weights ", torch::IntArrayRef(in_sizes), " / ",
           w_out_e.sizes(), " do not match ", torch::IntArrayRef(want_in), " / ",
           torch::IntArrayRef(want_out));
  torch::NoGradGuard no_grad;
  if (quantized()) {  // quantizing takes the whole weight
    quant_in_->set_expert(e, w_in_rows.size() == 1 ? w_in_rows[0] : torch::cat(w_in_rows));
    quant_out_->set_expert(e, w_out_e);
    return;
  }
  int64_t row = 0;
  for (const auto& rows : w_in_rows) {
    w_in[e].narrow(0, row, rows.size(0)).copy_(rows);
    row += rows.size(0);
  }
  w_out[e].copy_(w_out_e);
}

void ExpertBankImpl::load_expert_codes(int64_t e, const Int4Codes& w_in_e,
                                       const Int4Codes& w_out_e) {
  SY_CHECK(e >= 0 && e < options_.num_experts(), "ExpertBank: expert ", e, " out of range");
  SY_CHECK(quantized(), "ExpertBank: 4-bit codes given to a bank that is not quantized");
  quant_in_->set_expert_codes(e, w_in_e);
  quant_out_->set_expert_codes(e, w_out_e);
}

void ExpertBankImpl::load_expert_biases(int64_t e, const torch::Tensor& b_in_e,
                                        const torch::Tensor& b_out_e) {
  SY_CHECK(b_in.defined(), "ExpertBank: SwiGLU experts have no biases");
  SY_CHECK(e >= 0 && e < options_.num_experts(), "ExpertBank: expert ", e, " out of range");
  SY_CHECK(b_in_e.sizes() == b_in[e].sizes() && b_out_e.sizes() == b_out[e].sizes(),
           "ExpertBank: expert biases ", b_in_e.sizes(), " / ", b_out_e.sizes(), " do not match ",
           b_in[e].sizes(), " / ", b_out[e].sizes());
  torch::NoGradGuard no_grad;
  b_in[e].copy_(b_in_e);
  b_out[e].copy_(b_out_e);
}

std::pair<torch::Tensor, torch::Tensor> ExpertBankImpl::expert_weights(int64_t e,
                                                                       torch::Dtype dtype) const {
  SY_CHECK(e >= 0 && e < options_.num_experts(), "ExpertBank: expert ", e, " out of range");
  if (quantized()) return {quant_in_->dequantize(e, dtype), quant_out_->dequantize(e, dtype)};
  return {w_in[e].detach().to(dtype), w_out[e].detach().to(dtype)};
}

int64_t ExpertBankImpl::num_logical_parameters() const {
  const int64_t E = options_.num_experts(), H = options_.hidden_size(),
                I = options_.intermediate_size();
  const int64_t in_rows = options_.kind() == ExpertKind::kSwiGlu ? 2 * I : I;
  int64_t n = E * (in_rows * H + H * I);
  if (b_in.defined()) n += b_in.numel() + b_out.numel();
  return n;
}

int64_t ExpertBankImpl::weight_bytes() const {
  if (quantized()) return quant_in_->nbytes() + quant_out_->nbytes();
  return (w_in.numel() + w_out.numel()) * int64_t(w_in.element_size());
}

torch::Tensor ExpertBankImpl::grouped_mm(const torch::Tensor& x,
                                         const std::vector<int64_t>& counts) {
  std::vector<int32_t> ends(counts.size());
  int64_t running = 0;
  for (size_t e = 0; e < counts.size(); ++e) ends[e] = int32_t(running += counts[e]);
  auto offs = to_device_without_sync(torch::tensor(ends, torch::kInt), x.device());
  // Autocast has no rule for _grouped_mm: under it the weights are cast here (x already is).
  // A quantized bank dequantises all its experts for each GEMM, in one launch on a GPU.
  auto gemm = [&](const torch::Tensor& a, const torch::Tensor& weight,
                  const std::shared_ptr<QuantizedWeight>& quant) {
    return quant ? quantized_grouped_linear(a, quant, offs)
                 : at::_grouped_mm(a, autocast_operand(weight).transpose(1, 2), offs);
  };
  // Biases (GELU banks) repeated over each expert's rows; the row total is given, so
  // repeat_interleave does not read it back from the device.
  torch::Tensor repeats;
  auto per_row = [&](const torch::Tensor& bias) {
    if (!repeats.defined())
      repeats = to_device_without_sync(torch::tensor(counts, torch::kLong), x.device());
    return autocast_operand(bias).repeat_interleave(repeats, 0, running);
  };
  auto h = gemm(x, w_in, quant_in_);
  if (b_in.defined()) h = h + per_row(b_in);
  auto y = gemm(activate(h), w_out, quant_out_);
  if (b_out.defined()) y = y + per_row(b_out);
  // _grouped_mm's backward refuses a gradient with zero strides, which is what `y.sum()` sends
  // (an expanded scalar; seen on an H100 with torch 2.11): hand it a dense copy instead.
  if (y.requires_grad()) y.register_hook([](const torch::Tensor& g) { return g.contiguous(); });
  return y;
}

torch::Tensor ExpertBankImpl::forward(const torch::Tensor& x,
                                      const std::vector<int64_t>& tokens_per_expert) {
  SY_CHECK(int64_t(tokens_per_expert.size()) == options_.num_experts(),
           "ExpertBank: ", tokens_per_expert.size(), " counts for ", options_.num_experts(),
           " experts");
  SY_CHECK(x.dim() == 2 && x.size(1) == options_.hidden_size(), "ExpertBank: input ", x.sizes(),
           " is not [rows, ", options_.hidden_size(), "]");
  const int64_t rows =
      std::accumulate(tokens_per_expert.begin(), tokens_per_expert.end(), int64_t(0));
  SY_CHECK(rows == x.size(0), "ExpertBank: counts sum to ", rows, " but ", x.size(0),
           " rows arrived");
  // Under bf16 autocast the rows are bf16 on every path, also when none arrived: the output
  // goes back over the exchange, whose senders and receivers must agree on its dtype (a rank
  // without rows answering in fp32 corrupted a 4-rank bf16 run).
  const auto cast = autocast_operand(x);
  // kAuto takes torch's grouped GEMM where it pays: its kernel for bf16 on CUDA, and on the CPU
  // for fp32 weights and rows, or bf16 where the CPU has native bf16 GEMMs, where it runs the
  // same per-expert GEMMs as the slice loop (the same bits) but its backward writes each
  // expert's weight gradient straight into the bank's instead of the unbind's stacking
  // per-expert copies. CPU bf16 without them keeps the slice loop's fp32-chunked GEMMs
  // (models/cpu_linear.h), quantized CPU banks their per-expert dequantisation.
  const bool cpu_native =
      cast.is_cpu() && !quantized() && w_in.scalar_type() == cast.scalar_type() &&
      (cast.scalar_type() == torch::kFloat ||
       (cast.scalar_type() == torch::kBFloat16 && cpu_half_gemm_is_native(torch::kBFloat16)));
  // torch's grouped GEMM refuses operands whose rows do not start on 16-byte boundaries (its
  // kernels load 16 bytes at a time): widths of 12 bf16 values fail on a GPU, where the CPU's
  // fp32 took them.
  const int64_t row_align = 16 / int64_t(cast.element_size());
  const bool shapes_fit = options_.hidden_size() % row_align == 0 &&
                          options_.intermediate_size() % row_align == 0 &&
                          reinterpret_cast<uintptr_t>(cast.data_ptr()) % 16 == 0;
  const bool grouped = options_.gemm() == GroupedGemm::kGroupedMm ||
                       (options_.gemm() == GroupedGemm::kAuto && shapes_fit &&
                        ((cast.is_cuda() && cast.scalar_type() == torch::kBFloat16) || cpu_native));
  if (grouped && rows > 0) {
    SY_CHECK(shapes_fit, "ExpertBank: the grouped GEMM takes hidden and intermediate widths that ",
             "are multiples of ", row_align, " ", cast.scalar_type(), " values, rows starting ",
             "on 16 bytes; got hidden ", options_.hidden_size(), ", intermediate ",
             options_.intermediate_size(), " (GroupedGemm::kSliceLoop or kAuto take any)");
    return grouped_mm(cast, tokens_per_expert);
  }
  return slice_loop(cast, tokens_per_expert);
}

}  // namespace switchyard
