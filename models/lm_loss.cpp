// Why chunked: at 256 tokens and vocabulary 151936 the usual
// cross_entropy(logits.narrow(...).float(), targets) holds bf16 logits (78 MB), their fp32 copy,
// the saved log-softmax, and in backward two fp32 gradients plus a zero-padded bf16 one: most of
// a router backward's peak (bench/RESULTS.md, "Measurements behind the code"). Here the extra
// memory is the gradient in the logits' dtype and one fp32 chunk.
#include "models/lm_loss.h"

#include <algorithm>

#include "common/errors.h"

namespace switchyard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CrossEntropySum : public torch::autograd::Function<CrossEntropySum> {
 public:
  // logits [N, V]; targets [N] int64, negative where a row predicts nothing.
  //
  // Each chunk's one fp32 temporary is made by a subtraction that reads the logits in their
  // dtype and writes fp32, then worked on in place: torch's log_softmax(x, dtype=float) would
  // convert a bf16 chunk into a second fp32 copy first (its fused conversion is for fp16 on
  // CUDA only), doubling the loss's memory.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t step) {
    const int64_t N = logits.size(0);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto fp32 = logits.options().dtype(torch::kFloat);
    // Per row: lse = max + log(sum(exp(x - max))), kept for backward; and the target's logit.
    auto lse = torch::empty({N, 1}, fp32), picked = torch::empty({N, 1}, fp32);
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      const auto rows = logits.narrow(0, s, n);
      auto row_max = rows.amax(1, /*keepdim=*/true).to(torch::kFloat);
      auto shifted = torch::sub(rows, row_max).exp_();  // the chunk's one fp32 temporary
      auto part = lse.narrow(0, s, n);
      torch::sum_out(part, shifted, torch::IntArrayRef{1}, /*keepdim=*/true);
      part.log_().add_(row_max);
      auto out = picked.narrow(0, s, n);
      out.copy_(rows.gather(1, safe_targets.narrow(0, s, n)));
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
      auto p = torch::sub(logits.narrow(0, s, n), lse.narrow(0, s, n)).exp_();  // softmax, fp32
      p.scatter_add_(1, safe_targets.narrow(0, s, n), minus_one.narrow(0, 0, n));
      auto out = grad.narrow(0, s, n);
      torch::mul_out(out, p, factor.narrow(0, s, n));  // rounded once, to the logits' dtype
    }
    return {grad, {}, {}};
  }
};

}  // namespace

int64_t loss_chunk_bytes(bool on_gpu) {
  return on_gpu ? int64_t(256) << 20 : int64_t(16) << 20;
}

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets,
                                int64_t chunk_rows) {
  SY_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
           "cross_entropy_sum: logits ", logits.sizes(), " do not fit targets ", targets.sizes());
  SY_CHECK(chunk_rows >= 0, "cross_entropy_sum: chunk_rows ", chunk_rows, " is negative");
  const int64_t V = std::max<int64_t>(1, logits.size(1));
  const int64_t fp32_row_bytes = V * int64_t(sizeof(float));
  const int64_t step =
      chunk_rows > 0 ? chunk_rows
                     : std::max<int64_t>(1, loss_chunk_bytes(logits.is_cuda()) / fp32_row_bytes);
  return CrossEntropySum::apply(logits, targets.to(logits.device(), torch::kLong), step);
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
