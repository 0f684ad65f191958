// See lm_evaluation.h.
#include "trainer/lm_evaluation.h"

#include <algorithm>
#include <numeric>

#include "common/errors.h"

namespace switchyard {

LmEvaluation evaluate_lm(Qwen2MoeForCausalLM& model, const ProcessGroups& groups,
                         PackedSequences& set, const LmEvaluationOptions& options) {
  SY_CHECK(options.batch_size > 0, "evaluate_lm: batch_size ", options.batch_size, " < 1");
  const int world = groups.world->size(), rank = groups.world->rank();
  const int64_t total =
      options.max_blocks > 0 ? std::min(options.max_blocks, set.size()) : set.size();
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < total; i += world) mine.push_back(i);
  // Every rank makes as many forwards as the rank with the most blocks.
  const int64_t per_rank = (total + world - 1) / world;
  const int64_t forwards = (per_rank + options.batch_size - 1) / options.batch_size;

  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->parameters().front().device();
  // [sum of NLL, targets counted], summed over the world at the end.
  double nll_sum = 0, counted = 0;
  std::vector<int64_t> indices;
  for (int64_t f = 0; f < forwards; ++f) {
    const int64_t begin = f * options.batch_size;
    const int64_t end = std::min<int64_t>(begin + options.batch_size, int64_t(mine.size()));
    const bool counts = begin < end;
    if (counts) indices.assign(mine.begin() + begin, mine.begin() + end);
    if (indices.empty()) indices = {0};  // a rank with no blocks at all still takes part
    auto block = set.batch(0, indices).to(device);
    auto inputs = block.narrow(1, 0, block.size(1) - 1);
    auto targets = block.narrow(1, 1, block.size(1) - 1);
    auto logits = model->forward(inputs).logits;
    if (!counts) continue;
    auto nll = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat), targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    nll_sum += nll.item<double>();
    counted += double(targets.numel());
  }
  auto sums = torch::tensor({nll_sum, counted}, torch::kDouble).to(device);
  groups.world->all_reduce(sums);
  sums = sums.cpu();
  if (was_training) model->train();
  LmEvaluation out;
  out.tokens = int64_t(sums[1].item<double>());
  SY_CHECK(out.tokens > 0, "evaluate_lm: the evaluation set has no blocks");
  out.nll = sums[0].item<double>() / double(out.tokens);
  return out;
}

}  // namespace switchyard
