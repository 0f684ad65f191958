// The MoE block in one process against a reference written straight from the formulas (a loop
// over tokens and their top-k experts, as Hugging Face's Qwen2MoeSparseMoeBlock computes), the
// grouped-GEMM path against the slice loop, gradient-sync bucketing, and the same block on a GPU
// through the NCCL backend (skipped without one).
#include <gtest/gtest.h>

#include "common/errors.h"
#include "common/host_reads.h"
#include "common/kernel_profile.h"
#include "models/moe_block.h"
#include "parallel/all_to_all.h"
#include "parallel/gradient_sync.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"
#ifdef SWITCHYARD_WITH_CUDA
#include "parallel/nccl_communicator.h"
#endif

using namespace switchyard;

namespace {

constexpr int64_t kT = 23, kH = 16, kE = 8, kI = 12, kShared = 20;

MoeBlockOptions qwen_like(int64_t top_k, bool norm_topk_prob, double capacity = 0.0) {
  config::RouterConfig rc;
  rc.set_top_k(int(top_k));
  rc.set_norm_topk_prob(norm_topk_prob);
  rc.set_capacity_factor(float(capacity));
  rc.mutable_linear();
  return MoeBlockOptions(kH, kE, kI).shared_expert_intermediate_size(kShared).router(rc);
}

// y_t = sum_{kept slots s} w_ts * down_e(silu(gate_e x_t) * up_e x_t)
//       + sigmoid(g . x_t) * shared(x_t), token by token.
torch::Tensor reference_forward(MoeBlock& m, const torch::Tensor& x, const Routing& r) {
  auto swiglu = [](const torch::Tensor& w_in, const torch::Tensor& w_out, const torch::Tensor& v) {
    const int64_t I = w_out.size(1);
    auto gate = torch::mv(w_in.narrow(0, 0, I), v), up = torch::mv(w_in.narrow(0, I, I), v);
    return torch::mv(w_out, torch::silu(gate) * up);
  };
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < x.size(0); ++t) {
    auto y = torch::zeros({kH});
    for (int64_t s = 0; s < r.topk_ids.size(1); ++s) {
      if (r.dropped[t][s].item<bool>()) continue;
      const int64_t e = r.topk_ids[t][s].item<int64_t>();
      y += r.topk_weights[t][s] * swiglu(m->experts->w_in[e], m->experts->w_out[e], x[t]);
    }
    auto g = torch::sigmoid(torch::dot(m->shared_expert_gate->weight[0], x[t]));
    y += g * swiglu(m->shared_expert->w_in[0], m->shared_expert->w_out[0], x[t]);
    rows.push_back(y);
  }
  return torch::stack(rows);
}

TEST(MoeBlock, MatchesTokenByTokenReference) {
  for (bool norm : {false, true}) {
    for (double capacity : {0.0, 0.75}) {
      torch::manual_seed(3);
      MoeBlock m(qwen_like(/*top_k=*/4, norm, capacity), single_process_groups());
      auto x = torch::randn({kT, kH});
      auto out = m->forward(x);
      torch::NoGradGuard no_grad;
      auto want = reference_forward(m, x, out.routing);
      EXPECT_TRUE(torch::allclose(out.hidden, want, 1e-5, 1e-5))
          << "norm_topk_prob " << norm << " capacity " << capacity << " max diff "
          << (out.hidden - want).abs().max().item<double>();
      EXPECT_EQ(out.num_dropped, out.routing.dropped.sum().item<int64_t>());
      if (capacity > 0) EXPECT_GT(out.num_dropped, 0);
      int64_t routed = 0;
      for (auto n : out.routed_per_expert) routed += n;
      EXPECT_EQ(routed, kT * 4 - out.num_dropped);
    }
  }
}

TEST(MoeBlock, KeepsLeadingShape) {
  MoeBlock m(qwen_like(2, false), single_process_groups());
  auto out = m->forward(torch::randn({3, 5, kH}));
  EXPECT_EQ(out.hidden.sizes(), (std::vector<int64_t>{3, 5, kH}));
  EXPECT_THROW(m->forward(torch::randn({4, kH + 1})), Error);
}

// A checkpoint's gate and up rows go into the bank as two blocks (no concatenated temporary):
// the same weights as their concatenation, in a float bank and in an int4 one, and blocks that do
// not fit are one error naming the expert.
TEST(ExpertBank, LoadsInputRowBlocksAsTheirConcatenation) {
  torch::manual_seed(3);
  const auto gate = torch::randn({kI, kH}), up = torch::randn({kI, kH}),
             down = torch::randn({kH, kI});
  for (bool int4 : {false, true}) {
    ExpertBank blocks(ExpertBankOptions(kH, kI, 2)), whole(ExpertBankOptions(kH, kI, 2));
    if (int4) {
      const auto q = QuantOptions().kind(QuantKind::kInt4).group_size(4).symmetric(false);
      blocks->quantize_(q);
      whole->quantize_(q);
    }
    blocks->load_expert(1, {gate, up}, down);
    whole->load_expert(1, torch::cat({gate, up}), down);
    const auto [in_b, out_b] = blocks->expert_weights(1, torch::kFloat);
    const auto [in_w, out_w] = whole->expert_weights(1, torch::kFloat);
    EXPECT_TRUE(torch::equal(in_b, in_w)) << "int4 " << int4;
    EXPECT_TRUE(torch::equal(out_b, out_w)) << "int4 " << int4;
    if (!int4) EXPECT_TRUE(torch::equal(in_b, torch::cat({gate, up})));
    const std::vector<torch::Tensor> narrow_up{gate, up.narrow(1, 0, kH - 1)}, gate_only{gate};
    test::expect_error([&] { blocks->load_expert(0, narrow_up, down); },
                       {"expert 0", "input rows"});
    test::expect_error([&] { blocks->load_expert(0, gate_only, down); },
                       {"expert 0", "do not match"});
    test::expect_error(
        [&] {
          blocks->load_expert(0, {gate, up}, down.t());
        },
        {"expert 0", "do not match"});
  }
}

TEST(ExpertBank, GroupedMmMatchesSliceLoopForwardAndBackward) {
  for (auto kind : {ExpertKind::kSwiGlu, ExpertKind::kGeluMlp}) {
    torch::manual_seed(5);
    ExpertBank loop(ExpertBankOptions(kH, kI, 4).kind(kind).gemm(GroupedGemm::kSliceLoop));
    ExpertBank grouped(ExpertBankOptions(kH, kI, 4).kind(kind).gemm(GroupedGemm::kGroupedMm));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : grouped->named_parameters())
        p.value().copy_(loop->named_parameters()[p.key()]);
    }
    const std::vector<int64_t> counts{5, 0, 9, 2};  // an expert with no rows, too
    auto x = torch::randn({16, kH});
    auto a = loop->forward(x, counts), b = grouped->forward(x, counts);
    // fp32 on the CPU: torch's grouped GEMM runs the slice loop's per-expert GEMMs, so outputs
    // and weight gradients are the same bits; the GELU bank's bias gradients are sums over
    // rows in another order.
    EXPECT_TRUE(torch::equal(a, b));
    a.square().sum().backward();
    b.square().sum().backward();
    for (auto& p : loop->named_parameters()) {
      const auto& want = p.value().grad();
      const auto& got = grouped->named_parameters()[p.key()].grad();
      if (p.key().rfind("w_", 0) == 0)
        EXPECT_TRUE(torch::equal(got, want)) << p.key();
      else
        EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << p.key();
    }
    // The default takes the grouped GEMM for fp32 banks on the CPU (its backward writes the
    // weight gradients straight into the bank's, no per-expert copies to stack).
    ExpertBank automatic(ExpertBankOptions(kH, kI, 4).kind(kind));
    if (kind == ExpertKind::kSwiGlu)
      EXPECT_NE(automatic->forward(x, counts).grad_fn()->name().find("GroupedMm"),
                std::string::npos);
    EXPECT_THROW(loop->forward(x, {5, 0, 9}), Error);
    EXPECT_THROW(loop->forward(x, {5, 0, 9, 3}), Error);
  }
  // Widths the grouped GEMM does not take (rows not starting on 16 bytes: 10 fp32 values): the
  // default takes the slice loop; asking for the grouped GEMM is a one-line error, not torch's.
  torch::manual_seed(5);
  ExpertBank odd(ExpertBankOptions(kH, 10, 4));
  const auto x = torch::randn({16, kH});
  const auto y = odd->forward(x, {5, 0, 9, 2});
  EXPECT_EQ(y.grad_fn()->name().find("GroupedMm"), std::string::npos) << y.grad_fn()->name();
  ExpertBank odd_grouped(ExpertBankOptions(kH, 10, 4).gemm(GroupedGemm::kGroupedMm));
  EXPECT_NE(
      test::error_of([&] {
        odd_grouped->forward(x, {5, 0, 9, 2});
      }).find("the grouped GEMM takes hidden and intermediate widths that are multiples of 4"),
      std::string::npos);
}

TEST(GradientSync, BucketsOnlyTrainableParametersAndKeepsGradients) {
  MoeBlock m(qwen_like(2, false), single_process_groups());
  for (auto& p : m->experts->parameters()) p.set_requires_grad(false);  // router fine-tuning
  GradientSync one_bucket(single_process_groups(), m->replicated_parameters(),
                          m->expert_parameters());
  EXPECT_EQ(one_bucket.num_buckets(), 1);  // router + shared expert, experts frozen
  GradientSync small(single_process_groups(), m->replicated_parameters(), m->expert_parameters(),
                     GradientSyncOptions().bucket_bytes(256));
  EXPECT_GT(small.num_buckets(), 3);
  m->forward(torch::randn({kT, kH})).hidden.sum().backward();
  auto before = m->router->parameters()[0].grad().clone();
  small.synchronize();
  EXPECT_TRUE(torch::equal(m->router->parameters()[0].grad(), before));  // world of one
  EXPECT_FALSE(m->experts->w_in.grad().defined());                       // frozen: untouched
}

#ifdef SWITCHYARD_WITH_CUDA
CommunicatorPtr nccl_or_null() {
  if (!torch::cuda::is_available()) return nullptr;
  static CommunicatorPtr c = make_nccl_communicator(make_single_process_communicator(), 0);
  return c;
}

TEST(MoeBlockNccl, GpuBlockOverNcclMatchesCpu) {
  auto nccl = nccl_or_null();
  if (!nccl) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(9);
  MoeBlock cpu(qwen_like(4, false), single_process_groups());
  MoeBlock gpu(qwen_like(4, false), ProcessGroups{nccl, nccl, nccl});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : gpu->named_parameters()) p.value().copy_(cpu->named_parameters()[p.key()]);
  }
  gpu->to(torch::kCUDA);
  auto x = torch::randn({kT, kH});
  auto xg = x.cuda().requires_grad_(true);
  auto xc = x.clone().requires_grad_(true);
  auto a = cpu->forward(xc).hidden, b = gpu->forward(xg).hidden;
  EXPECT_TRUE(torch::allclose(a, b.cpu(), 1e-4, 1e-4));
  a.square().sum().backward();
  b.square().sum().backward();
  EXPECT_TRUE(torch::allclose(xc.grad(), xg.grad().cpu(), 1e-4, 1e-4));
  // The autograd exchange itself on NCCL: rows out and gradients back.
  auto rows = torch::randn({7, 3}, torch::kCUDA).requires_grad_(true);
  auto moved = all_to_all_v_with_grad(nccl, rows, {7}, {7});
  (moved * 2).sum().backward();
  EXPECT_TRUE(torch::allclose(rows.grad().cpu(), torch::full({7, 3}, 2.0)));
}

TEST(MoeBlockNccl, Bf16GroupedGemmOnGpuMatchesSliceLoop) {
  if (!nccl_or_null()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(4);
  ExpertBank loop(ExpertBankOptions(256, 128, 4).gemm(GroupedGemm::kSliceLoop));
  loop->to(torch::kCUDA, torch::kBFloat16);
  ExpertBank grouped(ExpertBankOptions(256, 128, 4).gemm(GroupedGemm::kAuto));
  grouped->to(torch::kCUDA, torch::kBFloat16);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : grouped->named_parameters()) p.value().copy_(loop->named_parameters()[p.key()]);
  }
  auto x = torch::randn({64, 256}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  const std::vector<int64_t> counts{16, 0, 40, 8};
  auto a = loop->forward(xa, counts), b = grouped->forward(xb, counts);
  auto close = [](const torch::Tensor& p, const torch::Tensor& q) {
    auto pf = p.to(torch::kFloat), qf = q.to(torch::kFloat);
    return (pf - qf).abs().max().item<double>() <= 2e-2 * (1 + pf.abs().max().item<double>());
  };
  EXPECT_TRUE(close(a, b));
  // `.sum()` sends an expanded (zero-stride) gradient, which _grouped_mm's backward refuses raw.
  a.sum().backward();
  b.sum().backward();
  EXPECT_TRUE(close(xa.grad(), xb.grad()));
  EXPECT_TRUE(close(loop->w_in.grad(), grouped->w_in.grad()));
  EXPECT_TRUE(close(loop->w_out.grad(), grouped->w_out.grad()));
}

// A whole bf16 layer on a GPU (grouped GEMM) makes the host wait for the device once per forward,
// for the dispatch's counts, and never in backward: every synchronising CUDA call the profiler
// sees counts, on any thread, not only our counted reads (a blocking copy of the GEMM's offsets
// to the device was a second wait per forward until it was queued from pinned memory).
TEST(MoeBlockGpu, WholeLayerWaitsForTheDeviceOnceInForwardAndNeverInBackward) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(6);
  // Widths of 16 and 24 bf16 values: rows on 16-byte boundaries, which the grouped GEMM needs.
  MoeBlock block(
      qwen_like(4, false).expert_intermediate_size(16).shared_expert_intermediate_size(24),
      single_process_groups());
  block->to(torch::kCUDA, torch::kBFloat16);
  const auto x = torch::randn({64, kH}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  auto pass = [&] {
    auto y = block->forward(x.clone().requires_grad_(true)).hidden;
    y.to(torch::kFloat).square().sum().backward();
  };
  pass();  // warm: the allocators' first blocks, cuBLAS's handle
  const int64_t reads = host_reads();
  const KernelProfile p = profile_kernels(pass, torch::Device(torch::kCUDA, 0));
  ASSERT_FALSE(p.kernels.empty()) << "the profiler saw no kernels: no waits to count";
  EXPECT_EQ(host_reads() - reads, 1);
  EXPECT_EQ(p.host_syncs, 1);
}
#else
TEST(MoeBlockNccl, NotBuilt) {
  GTEST_SKIP() << "built without CUDA";
}
#endif

}  // namespace
