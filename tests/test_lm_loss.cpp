// The chunked cross-entropy and the fused LM head + loss (models/lm_loss.h) against torch's
// cross_entropy on fp32 logits: values, gradients, ignored rows, chunk boundaries; what they
// hold in memory beyond their inputs, measured by the profiler's memory events; and the
// causal-LM task loss that training and evaluation take from them.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "common/autocast.h"
#include "common/kernel_profile.h"
#include "models/lm_loss.h"
#include "models/task_model.h"
#include "parallel/process_groups.h"
#include "tests/test_support.h"

using namespace switchyard;
using test::close;
using test::leaf;
namespace F = torch::nn::functional;

namespace {

torch::Tensor reference_sum(const torch::Tensor& logits32, const torch::Tensor& targets) {
  return F::cross_entropy(logits32, targets,
                          F::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(-1));
}

}  // namespace

TEST(CrossEntropySum, EqualsCrossEntropyIgnoringNegativeTargetsInEveryChunking) {
  torch::manual_seed(5);
  const int64_t N = 13, V = 50;
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  targets.index_put_({torch::tensor({0, 4, 5, 12})}, -1);  // at chunk edges and inside
  const auto ignored = targets.lt(0);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const auto values = torch::randn({N, V}).mul(3).to(dtype);
    auto ref_logits = leaf(values.to(torch::kFloat));
    auto ref = reference_sum(ref_logits, targets);
    (ref * 0.5).backward();
    // 4: chunks 4, 4, 4, 1; 0: the default (one chunk here); 100: a chunk beyond the rows.
    for (int64_t chunk_rows : {4, 0, 100}) {
      auto logits = leaf(values);
      auto sum = cross_entropy_sum(logits, targets, chunk_rows);
      ASSERT_EQ(sum.scalar_type(), torch::kFloat);
      (sum * 0.5).backward();
      EXPECT_NEAR(sum.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>())
          << dtype << " " << chunk_rows;
      EXPECT_EQ(logits.grad().scalar_type(), dtype);
      // bf16: the gradient is rounded once to the logits' dtype.
      EXPECT_TRUE(
          close(logits.grad(), ref_logits.grad(), dtype == torch::kFloat ? 1e-5 : 1.0 / 128, 1e-6))
          << dtype << " " << chunk_rows;
      EXPECT_EQ(logits.grad().index({ignored}).abs().max().item<double>(), 0.0);
    }
  }
  // No target at all: zero, and a zero gradient.
  auto logits = leaf(torch::randn({3, V}));
  auto none = cross_entropy_sum(logits, torch::full({3}, -1, torch::kLong));
  none.backward();
  EXPECT_EQ(none.item<double>(), 0.0);
  EXPECT_EQ(logits.grad().abs().max().item<double>(), 0.0);
  EXPECT_THROW(cross_entropy_sum(torch::randn({3, V}), torch::zeros({4}, torch::kLong)),
               std::exception);
}

TEST(NextTokenLoss, MatchesCrossEntropyAndItsGradient) {
  torch::manual_seed(5);
  const int64_t B = 2, S = 7, V = 50;
  auto ids = torch::randint(0, V, {B, S}, torch::kLong);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto logits = leaf(torch::randn({B, S, V}).mul(3).to(dtype));
    auto loss = next_token_loss(logits, ids, /*chunk_rows=*/3);  // 14 rows: chunks 3,3,3,3,2
    ASSERT_EQ(loss.scalar_type(), torch::kFloat);
    (loss * 2).backward();

    auto ref_logits = leaf(logits.detach().to(torch::kFloat));
    auto ref = torch::cross_entropy_loss(ref_logits.narrow(1, 0, S - 1).reshape({-1, V}),
                                         ids.narrow(1, 1, S - 1).reshape(-1));
    (ref * 2).backward();
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5) << dtype;
    EXPECT_EQ(logits.grad().scalar_type(), dtype);
    EXPECT_TRUE(
        close(logits.grad(), ref_logits.grad(), dtype == torch::kFloat ? 1e-5 : 1.0 / 128, 1e-5))
        << dtype;
    // The last position predicts nothing: its gradient is exactly zero.
    EXPECT_EQ(logits.grad().select(1, S - 1).abs().max().item<double>(), 0.0);
  }
}

// Qwen1.5-MoE's vocabulary, 128 rows: the fp32 logits are 77.8 MB. torch's cross_entropy keeps
// the log-softmax (one logits size) and its backward makes two more (the NLL's gradient and the
// log-softmax's); the chunked loss makes the gradient and one 16 MiB fp32 chunk at a time (two
// for bf16 logits on the CPU, whose mixed-dtype subtraction converts its bf16 input into a
// temporary first; a GPU reads it directly, LmLossGpu below).
TEST(CrossEntropySum, HoldsTheGradientAndAChunkWhereCrossEntropyHoldsThreeLogitSizes) {
  torch::manual_seed(6);
  const int64_t N = 128, V = 151936;
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const auto values = torch::randn({N, V}).to(dtype);
    const double logits_bytes = double(values.nbytes());
    const double chunk = double(loss_chunk_bytes(/*on_gpu=*/false));
    auto chunked = leaf(values);
    const int64_t chunked_peak =
        peak_extra_bytes([&] { cross_entropy_sum(chunked, targets).backward(); }, torch::kCPU);
    auto plain = leaf(values);
    const int64_t plain_peak = peak_extra_bytes(
        [&] { reference_sum(plain.to(torch::kFloat), targets).backward(); }, torch::kCPU);
    std::printf("%s: chunked %.1f MB, cross_entropy %.1f MB, logits %.1f MB\n",
                c10::toString(dtype), chunked_peak / 1e6, plain_peak / 1e6, logits_bytes / 1e6);
    EXPECT_LE(double(chunked_peak),
              logits_bytes + (dtype == torch::kFloat ? 1 : 2) * chunk + (1 << 20))
        << dtype << ": " << chunked_peak << " bytes";
    EXPECT_GE(double(plain_peak), 3 * logits_bytes * (dtype == torch::kFloat ? 1 : 2))
        << dtype << ": " << plain_peak << " bytes";
  }
}

// Both heads against the head's logits, then torch's cross_entropy: the loss and the input's
// gradient in every chunking, the fused head (frozen weight) and the logits (frozen or trained
// weight, whose gradient is checked too); without grad mode nothing is kept.
TEST(LinearCrossEntropySum, EqualsTheHeadThenCrossEntropyWithTheInputsGradient) {
  torch::manual_seed(9);
  const int64_t N = 13, H = 8, V = 50;
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  targets.index_put_({torch::tensor({0, 4, 5, 12})}, -1);
  const auto ignored = targets.lt(0);
  const std::vector<std::pair<HeadLossKernel, bool>> cases = {{HeadLossKernel::kFused, false},
                                                              {HeadLossKernel::kLogits, false},
                                                              {HeadLossKernel::kAuto, true}};
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const auto x_values = torch::randn({N, H}).to(dtype);
    const auto w_values = torch::randn({V, H}).mul(0.7).to(dtype);
    for (const auto& [kernel, train_weight] : cases) {
      auto ref_x = leaf(x_values.to(torch::kFloat)), ref_w = leaf(w_values.to(torch::kFloat));
      // The logits as the head's GEMM gives them: rounded to the inputs' dtype.
      auto ref = reference_sum(torch::linear(ref_x, ref_w).to(dtype).to(torch::kFloat), targets);
      (ref * 0.5).backward();
      for (int64_t chunk_rows : {4, 0, 100}) {
        const std::string where = std::string(c10::toString(dtype)) + " kernel " +
                                  std::to_string(int(kernel)) + " chunk " +
                                  std::to_string(chunk_rows);
        auto x = leaf(x_values), w = w_values.clone().requires_grad_(train_weight);
        auto sum = linear_cross_entropy_sum(x, w, targets, kernel, chunk_rows);
        ASSERT_EQ(sum.scalar_type(), torch::kFloat);
        (sum * 0.5).backward();
        EXPECT_NEAR(sum.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>()) << where;
        ASSERT_EQ(x.grad().scalar_type(), dtype) << where;
        // bf16: the logits' gradient is rounded to bf16 before its GEMMs, and their sums again.
        const double rtol = dtype == torch::kFloat ? 1e-5 : 1.0 / 64;
        const double atol = dtype == torch::kFloat ? 1e-6 : 1.0 / 128;
        EXPECT_TRUE(close(x.grad(), ref_x.grad(), rtol, atol)) << where;
        if (train_weight) EXPECT_TRUE(close(w.grad(), ref_w.grad(), rtol, atol)) << where;
      }
    }
    torch::NoGradGuard no_grad;
    auto sum = linear_cross_entropy_sum(leaf(x_values), w_values, targets, HeadLossKernel::kFused);
    EXPECT_FALSE(sum.requires_grad());
    EXPECT_NEAR(
        sum.item<double>(),
        reference_sum(torch::linear(x_values, w_values).to(torch::kFloat), targets).item<double>(),
        1e-5 * sum.item<double>());
  }
  // A row without a target contributes no gradient to its input.
  auto x = leaf(torch::randn({N, H}));
  linear_cross_entropy_sum(x, torch::randn({V, H}), targets, HeadLossKernel::kFused, 4).backward();
  EXPECT_EQ(x.grad().index({ignored}).abs().max().item<double>(), 0.0);
  EXPECT_GT(x.grad().index({ignored.logical_not()}).abs().min().item<double>(), 0.0);
  EXPECT_THROW(linear_cross_entropy_sum(torch::randn({N, H}), torch::randn({V, H + 1}), targets),
               std::exception);
  EXPECT_THROW(linear_cross_entropy_sum(torch::randn({N, H}), leaf(torch::randn({V, H})), targets,
                                        HeadLossKernel::kFused),
               std::exception);
}

// kAuto fuses a frozen head on GPUs only (the CPU's GEMMs of a chunk read the whole weight again,
// bench head); a trained head always keeps its logits; the other kernels are taken as given.
// Resolving needs a device type, not a GPU. The fused head also refuses a second derivative
// (its input gradient has no graph) and runs in fp64.
TEST(LinearCrossEntropySum, AutoFusesAFrozenHeadOnGpusOnly) {
  const torch::Device cuda(torch::kCUDA, 0), cpu(torch::kCPU);
  EXPECT_EQ(resolve_head_loss_kernel(HeadLossKernel::kAuto, cuda, false), HeadLossKernel::kFused);
  EXPECT_EQ(resolve_head_loss_kernel(HeadLossKernel::kAuto, cuda, true), HeadLossKernel::kLogits);
  EXPECT_EQ(resolve_head_loss_kernel(HeadLossKernel::kAuto, cpu, false), HeadLossKernel::kLogits);
  EXPECT_EQ(resolve_head_loss_kernel(HeadLossKernel::kFused, cpu, false), HeadLossKernel::kFused);
  EXPECT_EQ(resolve_head_loss_kernel(HeadLossKernel::kLogits, cuda, false),
            HeadLossKernel::kLogits);

  torch::manual_seed(12);
  const int64_t N = 6, H = 4, V = 9;
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  auto x = leaf(torch::randn({N, H}, torch::kDouble));
  const auto w = torch::randn({V, H}, torch::kDouble);
  auto sum = linear_cross_entropy_sum(x, w, targets, HeadLossKernel::kFused, 4);
  EXPECT_NEAR(sum.item<double>(), reference_sum(torch::linear(x, w), targets).item<double>(),
              1e-5 * sum.item<double>());
  EXPECT_THROW(torch::autograd::backward({sum}, {}, /*retain_graph=*/true, /*create_graph=*/true),
               std::exception);
  sum.backward();
  EXPECT_EQ(x.grad().scalar_type(), torch::kDouble);
  // A trained weight may still take the fused head where nothing trains (no grad mode).
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(linear_cross_entropy_sum(x, leaf(w), targets, HeadLossKernel::kFused));
}

// Qwen's vocabulary at 512 rows of hidden size 256 on the CPU, frozen head: the logits are 311 MB
// in fp32 and their gradient as much again; the fused head holds one 16 MiB chunk's logits
// beside the loss's fp32 temporary (bf16: and the CPU's fp32 conversion of the chunk), and the
// input's gradient. Each stays within what switchyard plan counts for it (head_loss_bytes)
// + 1 MiB, and the two give the same loss and input gradient.
TEST(LinearCrossEntropySum, HoldsAChunkOfLogitsWhereTheUnfusedHeadHoldsThemAndTheirGradient) {
  torch::manual_seed(10);
  const int64_t N = 512, H = 256, V = 151936;
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const auto w = torch::randn({V, H}).mul(0.05).to(dtype);
    const auto values = torch::randn({N, H}).to(dtype);
    const int64_t a = dtype == torch::kFloat ? 4 : 2;
    // The extra peak of one forward and backward by `kernel`; its loss and input gradient.
    auto measure = [&](HeadLossKernel kernel) {
      auto x = leaf(values);
      torch::Tensor sum;
      const int64_t peak = peak_extra_bytes(
          [&] {
            sum = linear_cross_entropy_sum(x, w, targets, kernel);
            sum.backward();
          },
          torch::kCPU);
      return std::make_tuple(peak, sum, x.grad());
    };
    const auto [fused_peak, fused_sum, fused_grad] = measure(HeadLossKernel::kFused);
    const auto [plain_peak, plain_sum, plain_grad] = measure(HeadLossKernel::kLogits);
    const double fused_plan = head_loss_bytes(HeadLossKernel::kFused, N, H, V, a, false);
    const double plain_plan = head_loss_bytes(HeadLossKernel::kLogits, N, H, V, a, false);
    std::printf("%s: fused head %.1f MB (plan %.1f), logits then loss %.1f MB (plan %.1f)\n",
                c10::toString(dtype), fused_peak / 1e6, fused_plan / 1e6, plain_peak / 1e6,
                plain_plan / 1e6);
    EXPECT_LE(double(fused_peak), fused_plan + (1 << 20)) << dtype << ": " << fused_peak;
    EXPECT_LE(double(plain_peak), plain_plan + (1 << 20)) << dtype << ": " << plain_peak;
    EXPECT_GE(double(plain_peak), 2.0 * double(a) * double(N) * double(V)) << dtype;
    EXPECT_LT(double(fused_peak), 0.25 * double(plain_peak)) << dtype;
    EXPECT_NEAR(fused_sum.item<double>(), plain_sum.item<double>(), 1e-5 * plain_sum.item<double>())
        << dtype;
    // bf16: the same rounded logits; the fused head rounds its input gradient once more.
    EXPECT_TRUE(close(fused_grad, plain_grad, dtype == torch::kFloat ? 1e-4 : 1.0 / 64,
                      dtype == torch::kFloat ? 1e-5 : 1.0 / 128))
        << dtype;
  }
}

// What training and evaluation compute for a causal LM: the summed loss over positions with a
// target (-1: none) and their count, against torch's cross_entropy on the model's logits.
TEST(CausalLmTask, SumsTheLossOverTargetedPositionsOnly) {
  torch::manual_seed(7);
  const auto c = Qwen2MoeConfig::from_json(test::kTinyQwen, "kTinyQwen");
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(c, single_process_groups()));
  const TaskModel task = TaskModel::causal_lm(model);
  auto ids = torch::randint(0, c.vocab_size, {2, 6}, torch::kLong);
  auto targets = torch::randint(0, c.vocab_size, {2, 6}, torch::kLong);
  targets.index_put_({1, torch::indexing::Slice(3, torch::indexing::None)}, -1);
  const torch::Tensor router = model->layers()[0]->moe->router->parameters().front();
  // A trained head (its logits, then the loss) and a frozen one (the fused head), each
  // against torch's cross_entropy on the model's logits, in value and in a router's gradient.
  for (bool frozen_head : {false, true}) {
    model->lm_head->weight.set_requires_grad(!frozen_head);
    for (int64_t counted : {int64_t(-1), int64_t(9)}) {  // counted here, or by the caller
      model->zero_grad();
      const TaskOutput out = task.forward({ids, torch::ones_like(ids), targets, counted});
      EXPECT_EQ(out.num_targets, 9);
      out.loss_sum.backward();
      const auto grad = router.grad().clone();
      model->zero_grad();
      auto logits = model->forward(ids).logits.reshape({-1, c.vocab_size});
      auto want = reference_sum(logits, targets.reshape(-1));
      want.backward();
      EXPECT_NEAR(out.loss_sum.item<double>(), want.item<double>(), 1e-5 * want.item<double>())
          << frozen_head;
      EXPECT_TRUE(close(grad, router.grad(), 1e-4, 1e-5)) << frozen_head;
    }
    // A loss that is only logged (distillation): the same value, and no gradient taken for it
    // through the hidden states.
    const TaskOutput logged = task.forward({ids, torch::ones_like(ids), targets, 9}, false);
    auto want = torch::Tensor();
    {
      torch::NoGradGuard no_grad;
      want = reference_sum(model->forward(ids).logits.reshape({-1, c.vocab_size}),
                           targets.reshape(-1));
    }
    EXPECT_NEAR(logged.loss_sum.item<double>(), want.item<double>(), 1e-5 * want.item<double>());
    EXPECT_EQ(logged.loss_sum.requires_grad(), !frozen_head);
  }
}

// A batch whose mask the host saw all ones is attended with the causal flag alone (what flash
// attention needs on a GPU); one with padding keeps its mask. Both give what the model gives
// with the mask applied.
TEST(CausalLmTask, AttendsWithTheCausalFlagAloneWhereTheHostSawNoPadding) {
  torch::manual_seed(8);
  const auto c = Qwen2MoeConfig::from_json(test::kTinyQwen, "kTinyQwen");
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(c, single_process_groups()));
  const TaskModel task = TaskModel::causal_lm(model);
  const auto blocks = torch::randint(0, c.vocab_size, {2, 7}, torch::kLong);
  const TaskBatch full = causal_lm_batch(blocks);
  EXPECT_FALSE(full.unpadded);  // not looked at yet
  EXPECT_TRUE(full.to(torch::kCPU).unpadded);
  TaskBatch padded = full;
  padded.attention_mask = full.attention_mask.clone();
  padded.attention_mask[1][5] = 0;
  EXPECT_FALSE(padded.to(torch::kCPU).unpadded);
  torch::NoGradGuard no_grad;
  for (const TaskBatch& b : {full, padded}) {
    auto logits = model->forward(b.input_ids, b.attention_mask).logits.reshape({-1, c.vocab_size});
    const double want = reference_sum(logits, b.targets.reshape(-1)).item<double>();
    EXPECT_NEAR(task.forward(b).loss_sum.item<double>(), want, 1e-6 * want);
  }
}

// Unpadded training blocks on a GPU take flash attention (no mask), forward and backward.
TEST(CausalLmTaskGpu, UnpaddedBlocksTakeFlashAttention) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto c = Qwen2MoeConfig::from_json(test::kTinyQwen, "kTinyQwen");
  c.hidden_size = 64;  // head dim 16
  torch::manual_seed(8);
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(c, single_process_groups()));
  model->to(cuda, torch::kBFloat16);
  const TaskModel task = TaskModel::causal_lm(model);
  const TaskBatch batch = causal_lm_batch(torch::randint(0, c.vocab_size, {2, 129}, torch::kLong));
  auto pass = [&] { task.forward(batch).loss_sum.backward(); };
  pass();  // warm
  const KernelProfile p = profile_kernels(pass, cuda);
  ASSERT_FALSE(p.kernels.empty()) << "the profiler saw no kernels";
  int64_t flash = 0;
  for (const auto& k : p.kernels)
    if (k.name.find("flash") != std::string::npos) flash += k.calls;
  EXPECT_GE(flash, 2 * c.num_hidden_layers)
      << "no flash attention kernel among " << p.kernels.size();
}

// On a GPU, at issue 18's micro-batch (2 x 2048 tokens) and Qwen's vocabulary in bf16: the loss
// follows torch's fp32 cross-entropy, waits for the device nowhere in forward and backward, and
// holds the gradient and one 256 MiB chunk beyond the logits (torch's: three fp32 copies).
TEST(LmLossGpu, FollowsCrossEntropyWithoutWaitsInOneChunkBeyondTheGradient) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(8);
  const int64_t N = 4096, V = 151936;
  auto targets = torch::randint(0, V, {N}, torch::kLong).to(cuda);
  targets.narrow(0, 100, 7).fill_(-1);
  const auto values = torch::randn({N, V}, torch::TensorOptions(cuda).dtype(torch::kBFloat16));

  auto logits = leaf(values);
  torch::Tensor sum;
  const int64_t peak = peak_extra_bytes(
      [&] {
        sum = cross_entropy_sum(logits, targets);
        sum.backward();
      },
      cuda);
  const double grad_bytes = double(values.nbytes()), chunk = double(loss_chunk_bytes(true));
  std::printf("chunked loss: %.2f GB beyond bf16 logits of %.2f GB\n", peak / 1e9,
              grad_bytes / 1e9);
  EXPECT_LE(double(peak), grad_bytes + chunk + (16 << 20)) << peak << " bytes";

  auto again = leaf(values);
  const KernelProfile p =
      profile_kernels([&] { cross_entropy_sum(again, targets).backward(); }, cuda);
  ASSERT_FALSE(p.kernels.empty()) << "the profiler saw no kernels: no waits to count";
  EXPECT_EQ(p.host_syncs, 0);

  auto ref_logits = leaf(values.to(torch::kFloat));
  auto ref = reference_sum(ref_logits, targets);
  ref.backward();
  EXPECT_NEAR(sum.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>());
  EXPECT_TRUE(close(logits.grad(), ref_logits.grad(), 1.0 / 128, 1e-6));
  EXPECT_TRUE(torch::equal(logits.grad(), again.grad()));  // and the same bits every time
}

// The fused head on a GPU at issue 18's micro-batch (4096 tokens, Qwen's hidden size and
// vocabulary, bf16, frozen head): the loss and the input's gradient follow the head's bf16
// logits then the chunked loss, the same bits every time, with no wait for the device; it holds
// one chunk's logits (bf16 beside the loss's fp32) and the input's gradient twice, where the
// unfused head holds the logits and their gradient (2.5 GB). Under autocast the fp32 weight is
// cast once, and the gradient comes back in fp32.
TEST(LmLossGpu, FusedHeadFollowsTheHeadThenTheLossInAChunkOfLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(11);
  const int64_t N = 4096, H = 2048, V = 151936;
  const auto bf16 = torch::TensorOptions(cuda).dtype(torch::kBFloat16);
  auto targets = torch::randint(0, V, {N}, torch::kLong).to(cuda);
  targets.narrow(0, 100, 7).fill_(-1);
  const auto w = torch::randn({V, H}, bf16).mul_(0.02);
  const auto values = torch::randn({N, H}, bf16);
  torch::mm(values, values.narrow(0, 0, 64).t());  // cuBLAS's workspace, before the count

  auto x = leaf(values);
  torch::Tensor sum;
  const int64_t peak = peak_extra_bytes(
      [&] {
        sum = linear_cross_entropy_sum(x, w, targets);
        sum.backward();
      },
      cuda);
  // What switchyard plan counts: a chunk's bf16 and fp32 logits and the input's gradient.
  const double plan = head_loss_bytes(HeadLossKernel::kFused, N, H, V, 2, /*on_gpu=*/true);
  std::printf("fused head: %.3f GB beyond its inputs, plan %.3f GB (bf16 logits: %.2f GB)\n",
              peak / 1e9, plan / 1e9, double(N) * double(V) * 2 / 1e9);
  EXPECT_LE(double(peak), plan + 2 * double(values.nbytes()) + (16 << 20)) << peak << " bytes";

  auto again = leaf(values);
  const KernelProfile p =
      profile_kernels([&] { linear_cross_entropy_sum(again, w, targets).backward(); }, cuda);
  ASSERT_FALSE(p.kernels.empty()) << "the profiler saw no kernels: no waits to count";
  EXPECT_EQ(p.host_syncs, 0);
  EXPECT_TRUE(torch::equal(x.grad(), again.grad()));

  auto plain_x = leaf(values);
  auto plain = cross_entropy_sum(torch::linear(plain_x, w), targets);
  plain.backward();
  EXPECT_NEAR(sum.item<double>(), plain.item<double>(), 1e-5 * plain.item<double>());
  EXPECT_TRUE(close(x.grad(), plain_x.grad(), 1.0 / 64, 1e-3));

  // fp32 weight and input under bf16 autocast: the same bf16 GEMMs, the gradient in fp32.
  auto x32 = leaf(values.to(torch::kFloat));
  torch::Tensor autocast_sum;
  {
    AutocastScope amp(cuda, true);
    autocast_sum = linear_cross_entropy_sum(x32, w.to(torch::kFloat), targets);
  }
  autocast_sum.backward();
  EXPECT_EQ(x32.grad().scalar_type(), torch::kFloat);
  EXPECT_NEAR(autocast_sum.item<double>(), sum.item<double>(), 1e-5 * sum.item<double>());
  EXPECT_TRUE(close(x32.grad(), x.grad().to(torch::kFloat), 1.0 / 64, 1e-3));
}
