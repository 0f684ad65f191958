// Why chunked: at 256 tokens and vocabulary 151936 the usual
// cross_entropy(logits.narrow(...).float(), targets) holds bf16 logits (78 MB), their fp32 copy,
// the saved log-softmax, and in backward two fp32 gradients plus a zero-padded bf16 one: most of
// a router backward's peak (bench/RESULTS.md, "Measurements behind the code"). Here the extra
// memory is the bf16 gradient and one fp32 chunk.
#include "models/lm_loss.h"

#include "common/errors.h"

namespace switchyard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kChunkFp32Elements = int64_t(4) << 20;  // 16 MB of fp32 logits

class NextTokenLoss : public torch::autograd::Function<NextTokenLoss> {
 public:
  // logits [N, V]; targets [N] int64 with -1 where a row predicts nothing (the last position).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, int64_t step) {
    const int64_t N = logits.size(0);
    auto valid = targets.ge(0);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto lse = torch::empty({N}, logits.options().dtype(torch::kFloat));
    auto total = torch::zeros({}, lse.options());
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      auto rows = logits.narrow(0, s, n).to(torch::kFloat);
      auto part = lse.narrow(0, s, n);
      part.copy_(torch::logsumexp(rows, 1));
      auto picked = rows.gather(1, safe_targets.narrow(0, s, n)).squeeze(1);
      total += ((part - picked) * valid.narrow(0, s, n)).sum();
    }
    const int64_t count = valid.sum().item<int64_t>();
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["step"] = step;
    ctx->saved_data["count"] = count;
    return total / double(std::max<int64_t>(count, 1));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &logits = saved[0], &targets = saved[1], &lse = saved[2];
    const int64_t N = logits.size(0), step = ctx->saved_data["step"].toInt();
    const int64_t count = std::max<int64_t>(ctx->saved_data["count"].toInt(), 1);
    auto scale = grads[0].to(torch::kFloat) / double(count);
    auto valid = targets.ge(0).to(torch::kFloat).unsqueeze(1);
    auto safe_targets = targets.clamp_min(0).unsqueeze(1);
    auto grad = torch::empty_like(logits);
    // d loss / d logits = (softmax - onehot(target)) / count on rows that predict a token.
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      auto p = (logits.narrow(0, s, n).to(torch::kFloat) - lse.narrow(0, s, n).unsqueeze(1)).exp_();
      p.scatter_add_(1, safe_targets.narrow(0, s, n), torch::full({n, 1}, -1.0f, p.options()));
      p.mul_(valid.narrow(0, s, n) * scale);
      grad.narrow(0, s, n).copy_(p);
    }
    return {grad, {}, {}};
  }
};

}  // namespace

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                              int64_t chunk_rows) {
  SY_CHECK(logits.dim() == 3 && input_ids.dim() == 2 && logits.size(0) == input_ids.size(0) &&
               logits.size(1) == input_ids.size(1),
           "next_token_loss: logits ", logits.sizes(), " do not fit input_ids ", input_ids.sizes());
  SY_CHECK(chunk_rows >= 0, "next_token_loss: chunk_rows ", chunk_rows, " is negative");
  const int64_t B = logits.size(0), S = logits.size(1), V = logits.size(2);
  // Row b * S + s predicts input_ids[b, s + 1]; the last position of each sequence predicts none.
  auto ids = input_ids.to(logits.device(), torch::kLong);
  auto targets = torch::cat({ids.narrow(1, 1, S - 1), torch::full({B, 1}, -1, ids.options())}, 1);
  const int64_t step = chunk_rows > 0 ? chunk_rows : std::max<int64_t>(1, kChunkFp32Elements / V);
  return NextTokenLoss::apply(logits.reshape({B * S, V}), targets.reshape(-1), step);
}

}  // namespace switchyard
