// Why chunked: at 256 tokens and vocabulary 151936 the usual
// cross_entropy(logits.narrow(...).float(), targets) holds bf16 logits (78 MB), their fp32 copy,
// the saved log-softmax, and in backward two fp32 gradients plus a zero-padded bf16 one: most of
// a router backward's peak (bench/RESULTS.md, "Measurements behind the code"). Here the extra
// memory is the gradient in the logits' dtype and one fp32 chunk; with the head fused in, a
// chunk of the logits themselves and the input's gradient.
#include "models/lm_loss.h"

#include <algorithm>

#include "common/autocast.h"
#include "common/errors.h"
#include "models/cpu_linear.h"

namespace switchyard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// exp(rows - rowmax) of one chunk of rows [n, V] in any dtype, and its row sums: what the
// log-sum-exp is made of, and (the fused head) what its softmax is made of.
struct ShiftedExp {
  torch::Tensor exp, sum;  // [n, V] and [n, 1], fp32 (fp64 for fp64 rows)
};

// One chunk: lse[r] = log sum_v exp rows[r, v] and picked[r] = rows[r, target[r]], written into
// fp32 [n, 1] views; returns the exponentials they came from.
//
// The chunk's one fp32 temporary is made by a subtraction that reads the rows in their dtype and
// writes fp32, then worked on in place: torch's log_softmax(x, dtype=float) would convert a bf16
// chunk into a second fp32 copy first (its fused conversion is for fp16 on CUDA only), doubling
// the loss's memory.
ShiftedExp log_sum_exp_and_target(const torch::Tensor& rows, const torch::Tensor& safe_targets,
                                  torch::Tensor lse, torch::Tensor picked) {
  auto row_max = rows.amax(1, /*keepdim=*/true).to(torch::kFloat);
  ShiftedExp e;
  e.exp = torch::sub(rows, row_max).exp_();
  e.sum = e.exp.sum(1, /*keepdim=*/true);
  lse.copy_(e.sum.log().add_(row_max));
  picked.copy_(rows.gather(1, safe_targets));
  return e;
}

// d(lse - picked) / d rows = softmax(rows) - onehot(target), fp32 (fp64 for fp64 rows), for one
// chunk of rows the loss's backward reads again.
torch::Tensor softmax_minus_target(const torch::Tensor& rows, const torch::Tensor& lse,
                                   const torch::Tensor& safe_targets,
                                   const torch::Tensor& minus_one) {
  auto p = torch::sub(rows, lse).exp_();
  return p.scatter_add_(1, safe_targets, minus_one.narrow(0, 0, rows.size(0)).to(p.dtype()));
}

class CrossEntropySum : public torch::autograd::Function<CrossEntropySum> {
 public:
  // logits [N, V]; targets [N] int64, negative where a row predicts nothing.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t step) {
    const int64_t N = logits.size(0);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto fp32 = logits.options().dtype(torch::kFloat);
    auto lse = torch::empty({N, 1}, fp32), picked = torch::empty({N, 1}, fp32);
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      log_sum_exp_and_target(logits.narrow(0, s, n), safe_targets.narrow(0, s, n),
                             lse.narrow(0, s, n), picked.narrow(0, s, n));
    }
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["step"] = step;
    return ((lse - picked).squeeze(1) * targets.ge(0)).sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &logits = saved[0], &targets = saved[1], &lse = saved[2];
    const int64_t N = logits.size(0), step = ctx->saved_data["step"].toInt();
    // d loss_sum / d logits = softmax - onehot(target) on rows that predict a token, 0 elsewhere;
    // each row's factor (0 or the incoming gradient) stays on the device.
    auto factor = (targets.ge(0).to(torch::kFloat) * grads[0].to(torch::kFloat)).unsqueeze(1);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto minus_one = torch::full({std::min(step, N), 1}, -1.0f, factor.options());
    auto grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      auto p = softmax_minus_target(logits.narrow(0, s, n), lse.narrow(0, s, n),
                                    safe_targets.narrow(0, s, n), minus_one);
      auto out = grad.narrow(0, s, n);
      torch::mul_out(out, p, factor.narrow(0, s, n));  // rounded once, to the logits' dtype
    }
    return {grad, {}, {}};
  }
};

// The LM head and the loss in one, for a frozen head weight (routers-only fine-tuning): the
// logits of one chunk of rows exist at a time, never all [N, V] of them nor their gradient.
// While a chunk's logits exist, forward also takes the input's gradient for them,
// (softmax - onehot) @ W, into [N, H]; backward scales it by the incoming gradient. The same
// GEMMs as an unfused head (forward, input gradient) and no recomputation; a frozen weight
// needs no gradient of its own.
class LinearCrossEntropySum : public torch::autograd::Function<LinearCrossEntropySum> {
 public:
  // hidden [N, H], weight [V, H] in one dtype; targets [N] int64, negative: no target.
  // with_grad: hidden's gradient will be asked for (decided outside: forward runs without
  // grad mode).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& targets,
                               int64_t step, bool with_grad) {
    const int64_t N = hidden.size(0);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto fp32 = hidden.options().dtype(torch::kFloat);
    auto lse = torch::empty({N, 1}, fp32), picked = torch::empty({N, 1}, fp32);
    auto grad =
        with_grad ? torch::empty_like(hidden, torch::MemoryFormat::Contiguous) : torch::Tensor();
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      auto rows = torch::mm(hidden.narrow(0, s, n), weight.t());  // [n, V], in the GEMM's dtype
      auto chunk_targets = safe_targets.narrow(0, s, n);
      auto e =
          log_sum_exp_and_target(rows, chunk_targets, lse.narrow(0, s, n), picked.narrow(0, s, n));
      if (!with_grad) continue;
      // softmax - onehot(target) = (exp - sum * onehot) / sum, from the exponentials the
      // log-sum-exp just summed rather than exp(rows - lse) taken again: one pass over the
      // chunk's fp32 instead of four and none over the logits (30 bytes moved per bf16 logit
      // in all, GEMMs included, instead of 44). The target's 1 comes off in fp32; the quotient
      // is rounded once, to the GEMM's dtype, into the logits' chunk, which is needed no more.
      e.exp.scatter_add_(1, chunk_targets, e.sum.neg());
      torch::div_out(rows, e.exp, e.sum);
      e = ShiftedExp();  // the fp32 chunk goes before the GEMM
      auto chunk_grad = grad.narrow(0, s, n);
      torch::mm_out(chunk_grad, rows, weight);
    }
    ctx->save_for_backward({grad, targets});
    return ((lse - picked).squeeze(1) * targets.ge(0)).sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &grad = saved[0], &targets = saved[1];
    SY_CHECK(grad.defined(), "linear_cross_entropy_sum: backward of a forward without gradient");
    // The input's gradient was taken in forward, outside autograd: it has no graph of its own.
    SY_CHECK(!torch::GradMode::is_enabled(),
             "linear_cross_entropy_sum: the fused head has no second derivative (create_graph)");
    auto factor = (targets.ge(0).to(torch::kFloat) * grads[0].to(torch::kFloat)).unsqueeze(1);
    auto scaled = torch::empty_like(grad);
    torch::mul_out(scaled, grad, factor);  // in fp32, rounded once to the input's dtype
    return {scaled, {}, {}, {}, {}};
  }
};

}  // namespace

HeadLossKernel resolve_head_loss_kernel(HeadLossKernel kernel, torch::Device device,
                                        bool weight_trains) {
  if (kernel != HeadLossKernel::kAuto) return kernel;
  return device.is_cuda() && !weight_trains ? HeadLossKernel::kFused : HeadLossKernel::kLogits;
}

int64_t loss_chunk_bytes(bool on_gpu) {
  return on_gpu ? int64_t(256) << 20 : int64_t(16) << 20;
}

int64_t loss_chunk_rows(int64_t V, bool on_gpu, int64_t asked) {
  if (asked > 0) return asked;
  const int64_t fp32_row_bytes = std::max<int64_t>(1, V) * int64_t(sizeof(float));
  return std::max<int64_t>(1, loss_chunk_bytes(on_gpu) / fp32_row_bytes);
}

double head_loss_bytes(HeadLossKernel kernel, int64_t N, int64_t H, int64_t V, int64_t dtype_bytes,
                       bool on_gpu, int64_t chunk_rows_or_0) {
  SY_CHECK(kernel != HeadLossKernel::kAuto, "head_loss_bytes: resolve kAuto first");
  const double a = double(dtype_bytes), rows = double(N),
               chunk_rows = double(std::min(loss_chunk_rows(V, on_gpu, chunk_rows_or_0), N));
  const double fp32_chunk = 4 * chunk_rows * double(V);
  const double converted = !on_gpu && dtype_bytes == 2 ? fp32_chunk : 0;  // the CPU's temporary
  if (kernel == HeadLossKernel::kLogits) return 2 * a * rows * double(V) + fp32_chunk + converted;
  const double input_grad = a * rows * double(H);
  return std::max(a * chunk_rows * double(V) + fp32_chunk + converted + input_grad, 2 * input_grad);
}

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets,
                                int64_t chunk_rows) {
  SY_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
           "cross_entropy_sum: logits ", logits.sizes(), " do not fit targets ", targets.sizes());
  SY_CHECK(chunk_rows >= 0, "cross_entropy_sum: chunk_rows ", chunk_rows, " is negative");
  const int64_t step = loss_chunk_rows(logits.size(1), logits.is_cuda(), chunk_rows);
  return CrossEntropySum::apply(logits, targets.to(logits.device(), torch::kLong), step);
}

torch::Tensor linear_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                       const torch::Tensor& targets, HeadLossKernel kernel,
                                       int64_t chunk_rows) {
  SY_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1) &&
               targets.dim() == 1 && targets.size(0) == hidden.size(0),
           "linear_cross_entropy_sum: hidden ", hidden.sizes(), ", weight ", weight.sizes(),
           " and targets ", targets.sizes(), " do not fit");
  SY_CHECK(chunk_rows >= 0, "linear_cross_entropy_sum: chunk_rows ", chunk_rows, " is negative");
  const bool weight_trains = weight.requires_grad() && torch::GradMode::is_enabled();
  SY_CHECK(kernel != HeadLossKernel::kFused || !weight_trains,
           "linear_cross_entropy_sum: the fused head needs a frozen weight");
  // Under autocast, both operands in its dtype once, not the big weight once per chunk.
  const auto x = autocast_operand(hidden), w = autocast_operand(weight);
  const auto ids = targets.to(x.device(), torch::kLong);
  kernel = resolve_head_loss_kernel(kernel, x.device(), weight_trains);
  if (kernel == HeadLossKernel::kLogits) {
    auto logits = gemm_in_fp32_on_cpu(x, w) ? cpu_linear(x, w) : torch::linear(x, w);
    return cross_entropy_sum(logits, ids, chunk_rows);
  }
  const bool with_grad = torch::GradMode::is_enabled() && hidden.requires_grad();
  return LinearCrossEntropySum::apply(
      x, w, ids, loss_chunk_rows(w.size(0), x.is_cuda(), chunk_rows), with_grad);
}

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                              int64_t chunk_rows) {
  SY_CHECK(logits.dim() == 3 && input_ids.dim() == 2 && logits.size(0) == input_ids.size(0) &&
               logits.size(1) == input_ids.size(1),
           "next_token_loss: logits ", logits.sizes(), " do not fit input_ids ", input_ids.sizes());
  const int64_t B = logits.size(0), S = logits.size(1), V = logits.size(2);
  // Row b * S + s predicts input_ids[b, s + 1]; the last position of each sequence predicts none.
  auto ids = input_ids.to(logits.device(), torch::kLong);
  auto targets = torch::cat({ids.narrow(1, 1, S - 1), torch::full({B, 1}, -1, ids.options())}, 1);
  auto sum = cross_entropy_sum(logits.reshape({B * S, V}), targets.reshape(-1), chunk_rows);
  return sum / double(std::max<int64_t>(B * (S - 1), 1));  // counted on the host: no device wait
}

}  // namespace switchyard
