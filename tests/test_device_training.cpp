// Training on a device and in reduced precision: bf16 autocast scopes (CPU, so CI runs them),
// the trainer under bf16 autocast on the CPU, and on a GPU (skipped without one) the trainer in
// fp32 against the same steps on the CPU, bf16 autocast close to fp32, the expert bank's grouped
// GEMM under autocast, and the staging communicator moving tensors between host and device.
#include <gtest/gtest.h>

#include "common/autocast.h"
#include "models/expert_bank.h"
#include "models/qwen2_moe.h"
#include "parallel/staging_communicator.h"
#ifdef SWITCHYARD_WITH_CUDA
#include "parallel/nccl_communicator.h"
#endif
#include "trainer/trainer.h"
#include "trainer/weight_init.h"

using namespace switchyard;

namespace {

Qwen2MoeForCausalLM tiny_model() {
  torch::manual_seed(7);
  auto cfg = Qwen2MoeConfig::preset("tiny");
  cfg.dtype = torch::kFloat;
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  init_for_pretraining(TaskModel::causal_lm(model), single_process_groups(), 0.05, 7);
  return model;
}

config::TrainConfig full_training(config::Precision precision) {
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_learning_rate(3e-3);
  t.set_steps(20);
  t.set_precision(precision);
  return t;
}

// Task losses of `steps` steps on the same two micro-batches.
std::vector<double> losses(Trainer& trainer, const torch::Tensor& tokens, int steps) {
  std::vector<double> out;
  for (int i = 0; i < steps; ++i)
    out.push_back(trainer
                      .step({causal_lm_batch(tokens.narrow(0, 0, 2)),
                             causal_lm_batch(tokens.narrow(0, 2, 2))})
                      .task_loss);
  return out;
}

TEST(Autocast, ScopeCastsMatmulsAndRestoresTheStateOnLeaving) {
  auto a = torch::randn({4, 8}), b = torch::randn({8, 3});
  EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kFloat);
  {
    AutocastScope amp(torch::kCPU, true);
    EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kBFloat16);
    EXPECT_EQ(autocast_operand(a).scalar_type(), torch::kBFloat16);
    EXPECT_EQ(autocast_operand(torch::ones({2}, torch::kLong)).scalar_type(), torch::kLong);
    {
      AutocastScope off(torch::kCPU, false);  // a disabled scope changes nothing
      EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kFloat);
  EXPECT_EQ(autocast_operand(a).scalar_type(), torch::kFloat);
}

TEST(Autocast, PrecisionResolvesPerDevice) {
  config::TrainConfig t;
  EXPECT_FALSE(uses_bf16_autocast(t, torch::kCPU));  // PRECISION_AUTO: fp32 on the CPU
  EXPECT_TRUE(uses_bf16_autocast(t, torch::Device(torch::kCUDA, 0)));
  t.set_precision(config::PRECISION_FP32);
  EXPECT_FALSE(uses_bf16_autocast(t, torch::Device(torch::kCUDA, 0)));
  t.set_precision(config::PRECISION_BF16);
  EXPECT_TRUE(uses_bf16_autocast(t, torch::kCPU));
}

TEST(Autocast, Bf16TrainingOnCpuFollowsFp32AndLearns) {
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  auto fp32_model = tiny_model(), bf16_model = tiny_model();
  Trainer fp32(TaskModel::causal_lm(fp32_model), single_process_groups(),
               full_training(config::PRECISION_FP32));
  Trainer bf16(TaskModel::causal_lm(bf16_model), single_process_groups(),
               full_training(config::PRECISION_BF16));
  EXPECT_FALSE(fp32.bf16_autocast());
  EXPECT_TRUE(bf16.bf16_autocast());
  const auto a = losses(fp32, tokens, 20), b = losses(bf16, tokens, 20);
  EXPECT_NEAR(b[0], a[0], 0.02 * a[0]);  // same weights: only rounding differs
  EXPECT_LT(b.back(), 0.5 * b.front()) << b.front() << " -> " << b.back();
  // Master weights stay fp32.
  for (const auto& p : bf16_model->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat);
}

// The bank's answer goes back over the exchange, so its dtype may not depend on the rows a rank
// got: a rank without rows once answered in fp32 while its peers sent bf16 (a 4-rank bf16 run
// on one H100 failed in MPI_Alltoallv at step 16).
TEST(Autocast, ExpertBankAnswersInBf16AlsoWithoutRows) {
  torch::manual_seed(2);
  ExpertBank bank(ExpertBankOptions(16, 8, 4));
  AutocastScope amp(torch::kCPU, true);
  EXPECT_EQ(bank->forward(torch::randn({0, 16}), {0, 0, 0, 0}).scalar_type(), torch::kBFloat16);
  EXPECT_EQ(bank->forward(torch::randn({5, 16}), {0, 5, 0, 0}).scalar_type(), torch::kBFloat16);
  EXPECT_EQ(bank->forward(torch::randn({6, 16}), {1, 2, 1, 2}).scalar_type(), torch::kBFloat16);
}

bool gpu() {
  return torch::cuda::is_available();
}

TEST(TrainerGpu, Fp32StepsMatchTheCpu) {
  if (!gpu()) GTEST_SKIP() << "no GPU visible";
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  auto cpu_model = tiny_model(), gpu_model = tiny_model();
  std::map<std::string, torch::Tensor> initial;
  for (const auto& p : cpu_model->named_parameters()) initial[p.key()] = p.value().detach().clone();
  gpu_model->to(torch::Device(torch::kCUDA, 0));
  const auto t = full_training(config::PRECISION_FP32);
  Trainer on_cpu(TaskModel::causal_lm(cpu_model), single_process_groups(), t);
  Trainer on_gpu(TaskModel::causal_lm(gpu_model), single_process_groups(), t);
  EXPECT_FALSE(on_gpu.bf16_autocast());
  const auto a = losses(on_cpu, tokens, 5), b = losses(on_gpu, tokens, 5);  // CPU batches
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-4 * a[i]) << "step " << i;
  // AdamW normalises each gradient, so rounding differences in tiny gradients move a weight by
  // up to the learning rate: the two runs must differ far less than training moved the weights.
  auto cpu_params = cpu_model->named_parameters();
  for (const auto& p : gpu_model->named_parameters()) {
    EXPECT_TRUE(p.value().is_cuda()) << p.key();
    const auto& trained = cpu_params[p.key()];
    const double apart = (p.value().cpu() - trained).abs().max().item<double>();
    const double moved = (trained - initial[p.key()]).abs().max().item<double>();
    EXPECT_LE(apart, 0.05 * moved + 1e-7) << p.key() << ": moved " << moved;
  }
}

TEST(TrainerGpu, Bf16AutocastFollowsFp32AndLearns) {
  if (!gpu()) GTEST_SKIP() << "no GPU visible";
  auto tokens = torch::randint(0, 512, {4, 33}, torch::kLong);
  auto cpu_model = tiny_model(), gpu_model = tiny_model();
  gpu_model->to(torch::Device(torch::kCUDA, 0));
  Trainer fp32(TaskModel::causal_lm(cpu_model), single_process_groups(),
               full_training(config::PRECISION_FP32));
  Trainer amp(TaskModel::causal_lm(gpu_model), single_process_groups(),
              full_training(config::PRECISION_AUTO));
  EXPECT_TRUE(amp.bf16_autocast());
  const auto a = losses(fp32, tokens, 20), b = losses(amp, tokens, 20);
  EXPECT_NEAR(b[0], a[0], 0.02 * a[0]);
  EXPECT_LT(b.back(), 0.5 * b.front()) << b.front() << " -> " << b.back();
  for (const auto& p : gpu_model->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat);
}

TEST(TrainerGpu, ExpertBankTakesTheGroupedGemmUnderAutocast) {
  if (!gpu()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(5);
  ExpertBank bank(ExpertBankOptions(64, 32, 4));
  bank->to(torch::Device(torch::kCUDA, 0));  // fp32 weights, as a trainer's master copy
  auto x = torch::randn({40, 64}, torch::kCUDA).requires_grad_(true);
  const std::vector<int64_t> counts{10, 0, 25, 5};
  auto reference = bank->forward(x, counts);
  torch::Tensor y;
  {
    AutocastScope amp(x.device(), true);
    y = bank->forward(x, counts);
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);  // the bf16 path, not fp32 weights
  const double scale = reference.abs().max().item<double>();
  EXPECT_LE((y.to(torch::kFloat) - reference).abs().max().item<double>(), 2e-2 * (1 + scale));
  y.to(torch::kFloat).square().sum().backward();
  ASSERT_TRUE(bank->w_in.grad().defined());
  EXPECT_EQ(bank->w_in.grad().scalar_type(), torch::kFloat);  // gradients reach the fp32 weights
  EXPECT_EQ(x.grad().scalar_type(), torch::kFloat);
}

TEST(StagingCommunicatorGpu, DeviceTensorsTravelThroughTheHostAndBack) {
  if (!gpu()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto staged = make_staging_communicator(single_process_groups().world, torch::kCPU);
  auto rows = torch::arange(12, torch::kFloat).view({4, 3}).to(cuda);
  auto moved = staged->all_to_all_v(rows, {4}, {4});
  EXPECT_TRUE(moved.is_cuda());
  EXPECT_TRUE(torch::equal(moved.cpu(), rows.cpu()));
  auto gathered = staged->all_gather(rows);
  EXPECT_TRUE(gathered.is_cuda());
  auto sum = torch::ones({3}, cuda);
  staged->all_reduce(sum, ReduceOp::kSum);
  EXPECT_TRUE(sum.is_cuda());
  // The other way: host tensors through a GPU-homed communicator (as NCCL worlds are).
  auto on_gpu = make_staging_communicator(single_process_groups().world, cuda);
  auto host_rows = torch::arange(6, torch::kLong).view({3, 2});
  auto back = on_gpu->all_to_all_v(host_rows, {3}, {3});
  EXPECT_TRUE(back.device().is_cpu());
  EXPECT_TRUE(torch::equal(back, host_rows));
  auto split = on_gpu->split(0, 0);
  EXPECT_TRUE(split->all_gather(host_rows).device().is_cpu());
}

#ifdef SWITCHYARD_WITH_CUDA
TEST(StagingCommunicatorGpu, HostTensorsThroughNccl) {
  if (!gpu()) GTEST_SKIP() << "no GPU visible";
  const torch::Device cuda(torch::kCUDA, 0);
  auto nccl = make_staging_communicator(
      make_nccl_communicator(make_single_process_communicator(), 0), cuda);
  EXPECT_EQ(nccl->backend(), "nccl");
  auto losses = torch::tensor({1.5, 2.5}, torch::kDouble);  // the trainer's host-side sums
  nccl->all_reduce(losses, ReduceOp::kSum);
  EXPECT_TRUE(losses.device().is_cpu());
  EXPECT_TRUE(torch::equal(losses, torch::tensor({1.5, 2.5}, torch::kDouble)));
  auto gathered = nccl->all_gather(torch::tensor({int64_t(3), int64_t(4)}).view({1, 2}));
  EXPECT_TRUE(gathered.device().is_cpu());
  EXPECT_EQ(gathered[0][1].item<int64_t>(), 4);
  nccl->barrier();
  auto device_rows = torch::randn({5, 2}, cuda);  // device tensors go straight through
  EXPECT_TRUE(torch::equal(nccl->all_to_all_v(device_rows, {5}, {5}), device_rows));
}
#endif

}  // namespace
