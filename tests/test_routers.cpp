// Every registered router: shapes and dtypes, determinism under a seed, gradients reaching every
// parameter and matching finite differences in double precision, and its documented formula
// recomputed independently from its named parameters.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "routers/fwht.h"
#include "routers/hash_router.h"
#include "routers/router_registry.h"

using namespace switchyard;

namespace switchyard {
// Test names and failure messages show the router's name, not its bytes.
void PrintTo(const RouterEntry& entry, std::ostream* os) {
  *os << entry.name;
}
}  // namespace switchyard

namespace {

constexpr int64_t kT = 9, kH = 16, kE = 8, kK = 2;

RouterPtr build(config::RouterConfig::KindCase kind, config::RouterConfig base = {}) {
  base.set_top_k(kK);
  base.set_aux_loss_coef(0.1);
  base.set_z_loss_coef(0.01);
  auto cfg = with_router_kind(base, kind);
  if (cfg.has_mlp()) cfg.mutable_mlp()->set_hidden(12);
  if (cfg.has_hybrid()) cfg.mutable_hybrid()->set_mlp_hidden(12);
  if (cfg.has_mlp_hadamard()) cfg.mutable_mlp_hadamard()->set_hidden(16);
  if (cfg.has_attention()) {
    cfg.mutable_attention()->set_num_heads(2);
    cfg.mutable_attention()->set_head_dim(4);
  }
  return make_router(RouterOptions(kH, kE, cfg));
}

torch::Tensor token_ids(int64_t T) {
  return torch::randint(0, 1000, {T}, torch::kLong);
}

// A scalar that depends on every output of the routing, smoothly where top-k is fixed.
torch::Tensor probe_loss(const Routing& r, const torch::Tensor& probe) {
  return (r.topk_weights * probe).sum() + r.loss + (r.scores * r.scores).sum() * 0.1;
}

class EveryRouter : public ::testing::TestWithParam<RouterEntry> {};

}  // namespace

TEST_P(EveryRouter, ShapesAndDtypes) {
  torch::manual_seed(0);
  auto router = build(GetParam().kind);
  EXPECT_EQ(router->kind(), GetParam().name);
  auto x = torch::randn({kT, kH});
  Routing r = router->route(x, token_ids(kT));
  EXPECT_EQ(r.logits.sizes(), (std::vector<int64_t>{kT, kE}));
  EXPECT_EQ(r.scores.sizes(), (std::vector<int64_t>{kT, kE}));
  EXPECT_EQ(r.topk_ids.sizes(), (std::vector<int64_t>{kT, kK}));
  EXPECT_EQ(r.topk_weights.sizes(), (std::vector<int64_t>{kT, kK}));
  EXPECT_EQ(r.topk_ids.scalar_type(), torch::kLong);
  EXPECT_EQ(r.topk_weights.scalar_type(), torch::kFloat);
  EXPECT_EQ(r.dropped.scalar_type(), torch::kBool);
  EXPECT_EQ(r.aux_loss.dim(), 0);
  EXPECT_EQ(r.z_loss.dim(), 0);
  EXPECT_TRUE(r.topk_ids.ge(0).all().item<bool>() && r.topk_ids.lt(kE).all().item<bool>());
  for (int64_t t = 0; t < kT; ++t)
    EXPECT_NE(r.topk_ids[t][0].item<int64_t>(), r.topk_ids[t][1].item<int64_t>());
  // Weights are the scores of the chosen experts, best first.
  EXPECT_TRUE(torch::allclose(r.topk_weights, r.scores.gather(1, r.topk_ids)));
  EXPECT_TRUE(r.topk_weights.select(1, 0).ge(r.topk_weights.select(1, 1)).all().item<bool>());
  // bf16 routers still score in fp32.
  router->to(torch::kBFloat16);
  Routing rb = router->route(x.to(torch::kBFloat16), token_ids(kT));
  EXPECT_EQ(rb.scores.scalar_type(), torch::kFloat);
}

TEST_P(EveryRouter, DeterministicUnderSeed) {
  auto run = [&] {
    torch::manual_seed(42);
    auto router = build(GetParam().kind);
    auto x = torch::randn({kT, kH});
    return router->route(x, torch::arange(kT, torch::kLong) * 7);
  };
  Routing a = run(), b = run();
  EXPECT_TRUE(torch::equal(a.logits, b.logits));
  EXPECT_TRUE(torch::equal(a.topk_ids, b.topk_ids));
  EXPECT_TRUE(torch::equal(a.topk_weights, b.topk_weights));
}

TEST_P(EveryRouter, GradientsReachEveryParameter) {
  torch::manual_seed(1);
  auto router = build(GetParam().kind);
  auto x = torch::randn({kT, kH}).requires_grad_(true);
  Routing r = router->route(x, token_ids(kT));
  if (router->parameters().empty()) {
    EXPECT_EQ(GetParam().name, "hash");
    EXPECT_EQ(router->num_parameters(), 0);
    EXPECT_FALSE(r.topk_weights.requires_grad());  // nothing to learn, by design
    return;
  }
  probe_loss(r, torch::randn({kT, kK})).backward();
  for (const auto& p : router->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

TEST_P(EveryRouter, GradientsMatchFiniteDifferencesInDouble) {
  torch::manual_seed(2);
  auto router = build(GetParam().kind);
  if (router->parameters().empty()) GTEST_SKIP() << "no parameters";
  router->to(torch::kDouble);
  auto x = torch::randn({kT, kH}, torch::kDouble).requires_grad_(true);
  auto ids = token_ids(kT);
  auto probe = torch::randn({kT, kK}, torch::kDouble);
  auto loss = [&] { return probe_loss(router->route(x, ids), probe); };
  router->zero_grad();
  loss().backward();

  auto check = [&](torch::Tensor param, const std::string& name) {
    torch::NoGradGuard no_grad;
    auto flat = param.view({-1});
    auto grad = param.grad().defined() ? param.grad().view({-1}) : torch::Tensor();
    const int64_t n = flat.numel();
    for (int64_t i : {int64_t(0), n / 3, n / 2, n - 1}) {
      const double orig = flat[i].item<double>(), eps = 1e-6;
      flat[i] = orig + eps;
      const double up = loss().item<double>();
      flat[i] = orig - eps;
      const double down = loss().item<double>();
      flat[i] = orig;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-6 + 1e-5 * std::abs(numeric))
          << name << "[" << i << "]";
    }
  };
  for (const auto& p : router->named_parameters()) check(p.value(), p.key());
  check(x, "input");
}

// The same router on the GPU: routing, losses and parameter gradients equal the CPU's.
TEST_P(EveryRouter, GpuMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(3);
  auto cpu = build(GetParam().kind);
  torch::manual_seed(3);
  auto gpu = build(GetParam().kind);
  gpu->to(torch::kCUDA);
  auto x = torch::randn({kT, kH});
  auto ids = token_ids(kT);
  auto probe = torch::randn({kT, kK});
  Routing a = cpu->route(x, ids), b = gpu->route(x.cuda(), ids.cuda());
  EXPECT_TRUE(torch::allclose(a.logits, b.logits.cpu(), 1e-4, 1e-5));
  // Tied scores (the hash router's chosen experts all score alike) may come out of top-k in
  // another order on each device: compare the chosen sets and their weights, expert by expert.
  auto by_expert = [](const Routing& r) {
    auto [ids_sorted, order] = r.topk_ids.cpu().sort(1);
    return std::pair{ids_sorted, r.topk_weights.cpu().gather(1, order)};
  };
  auto [ids_a, w_a] = by_expert(a);
  auto [ids_b, w_b] = by_expert(b);
  EXPECT_TRUE(torch::equal(ids_a, ids_b));
  EXPECT_TRUE(torch::allclose(w_a, w_b, 1e-4, 1e-5));
  EXPECT_NEAR(a.loss.item<double>(), b.loss.item<double>(), 1e-4);
  if (cpu->parameters().empty()) return;  // nothing to differentiate
  probe_loss(a, probe).backward();
  probe_loss(b, probe.cuda()).backward();
  auto gp = gpu->named_parameters();
  for (const auto& p : cpu->named_parameters())
    EXPECT_TRUE(torch::allclose(p.value().grad(), gp[p.key()].grad().cpu(), 1e-4, 1e-5)) << p.key();
}

TEST_P(EveryRouter, FormulaMatchesDocumentation) {
  torch::manual_seed(3);
  auto router = build(GetParam().kind);
  router->to(torch::kDouble);
  auto x = torch::randn({kT, kH}, torch::kDouble);
  auto ids = token_ids(kT);
  torch::NoGradGuard no_grad;
  Routing r = router->route(x, ids);
  auto P = [&](const std::string& name) { return router->named_parameters()[name]; };
  auto gelu = [](const torch::Tensor& v) { return 0.5 * v * (1 + torch::erf(v / std::sqrt(2.0))); };
  torch::Tensor expected;
  const std::string kind = GetParam().name;
  if (kind == "linear") {
    expected = x.matmul(P("gate.weight").t());
  } else if (kind == "attention") {
    auto q = x.matmul(P("query.weight").t()).view({kT, 2, 4});
    expected = torch::zeros({kT, kE}, torch::kDouble);
    for (int64_t h = 0; h < 2; ++h)
      expected += q.select(1, h).matmul(P("expert_keys").select(1, h).t()) / (2 * std::sqrt(4.0));
  } else if (kind == "mlp") {
    expected = gelu(x.matmul(P("fc1.weight").t()) + P("fc1.bias")).matmul(P("fc2.weight").t()) +
               P("fc2.bias");
  } else if (kind == "hybrid") {
    auto a = 1 / (1 + torch::exp(-P("mix_logit")));
    auto mlp = gelu(x.matmul(P("fc1.weight").t()) + P("fc1.bias")).matmul(P("fc2.weight").t()) +
               P("fc2.bias");
    expected = a * x.matmul(P("linear.weight").t()) + (1 - a) * mlp;
  } else if (kind == "hash") {
    expected = torch::full({kT, kE}, -1e4, torch::kDouble);
    for (int64_t t = 0; t < kT; ++t)
      for (int64_t e : hash_experts(ids[t].item<int64_t>(), kE, kK, 0)) expected[t][e] = 0.0;
  } else if (kind == "mlp_hadamard") {
    auto h = gelu(x.matmul(P("fc1.weight").t()) + P("fc1.bias"));
    auto z = h.matmul(hadamard_matrix(16, torch::kDouble));
    expected = z.narrow(1, 1, kE) * P("expert_scale") + P("expert_bias");
  }
  ASSERT_TRUE(expected.defined()) << "no reference formula for router " << kind;
  EXPECT_TRUE(torch::allclose(r.logits, expected, 1e-10, 1e-10)) << kind;

  // Gating semantics, recomputed with a plain sort per token.
  auto probs = expected.softmax(-1);
  for (int64_t t = 0; t < kT; ++t) {
    std::vector<std::pair<double, int64_t>> row;
    for (int64_t e = 0; e < kE; ++e) row.push_back({probs[t][e].item<double>(), e});
    std::stable_sort(row.begin(), row.end(), [](auto a, auto b) { return a.first > b.first; });
    std::set<int64_t> want{row[0].second, row[1].second}, got;
    for (int64_t j = 0; j < kK; ++j) {
      got.insert(r.topk_ids[t][j].item<int64_t>());
      EXPECT_NEAR(r.topk_weights[t][j].item<double>(), row[j].first, 1e-12);
    }
    EXPECT_EQ(want, got) << kind << " token " << t;
  }
}

// Aux-loss-free balancing works the same way for every router: the bias is a buffer (not a
// parameter), a large one on an expert makes every token choose it, the weights stay the
// unbiased scores, and the update rule moves it against the load.
TEST_P(EveryRouter, ExpertBiasSteersTheChoiceOnly) {
  torch::manual_seed(4);
  config::RouterConfig base;
  base.mutable_expert_bias()->set_update_rate(0.5f);
  auto router = build(GetParam().kind, base);
  auto plain = build(GetParam().kind);
  ASSERT_TRUE(router->expert_bias().defined());
  EXPECT_FALSE(plain->expert_bias().defined());
  EXPECT_EQ(router->num_parameters(), plain->num_parameters());
  EXPECT_EQ(router->named_buffers().size(), plain->named_buffers().size() + 1);
  auto x = torch::randn({kT, kH});
  auto ids = token_ids(kT);
  router->eval();
  const Routing before = router->route(x, ids);
  // load: expert 3 chosen far more than the mean, expert 5 never: 3 goes down, 5 up.
  auto load = torch::ones({kE}, torch::kLong) * 2;
  load[3] = 40;
  load[5] = 0;
  router->update_expert_bias(load);
  EXPECT_EQ(router->expert_bias()[3].item<float>(), -0.5f);
  EXPECT_EQ(router->expert_bias()[5].item<float>(), 0.5f);
  EXPECT_EQ(router->expert_bias()[0].item<float>(), 0.5f);  // 2 < mean 6.5
  // Now bias expert 6 far above every score: every token's first choice.
  torch::NoGradGuard no_grad;
  router->expert_bias().zero_()[6] = 10.0f;
  const Routing after = router->route(x, ids);
  EXPECT_TRUE(after.topk_ids.select(1, 0).eq(6).all().item<bool>());
  EXPECT_TRUE(torch::allclose(after.topk_weights, after.scores.gather(1, after.topk_ids)));
  EXPECT_TRUE(torch::equal(after.scores, before.scores));  // the bias never enters the scores
  // bf16 weights keep an fp32 bias (updates of 1e-3 would vanish).
  router->to(torch::kBFloat16);
  EXPECT_EQ(router->expert_bias().scalar_type(), torch::kFloat);
  EXPECT_EQ(router->expert_bias()[6].item<float>(), 10.0f);
}

INSTANTIATE_TEST_SUITE_P(Routers, EveryRouter, ::testing::ValuesIn(router_registry()),
                         [](const auto& info) { return info.param.name; });

TEST(RouterRegistry, OneEntryPerConfigCaseAndDefaultIsLinear) {
  EXPECT_EQ(router_registry().size(), 6u);
  std::set<int> kinds;
  for (const auto& e : router_registry()) kinds.insert(int(e.kind));
  EXPECT_EQ(kinds.size(), 6u);
  EXPECT_EQ(router_entry(config::RouterConfig::KIND_NOT_SET).name, "linear");
}

TEST(LinearRouter, CheckpointGateReproducesLogitsExactly) {
  torch::manual_seed(4);
  auto router = build(config::RouterConfig::kLinear);
  auto w = torch::randn({kE, kH});
  ASSERT_TRUE(router->init_from_gate(w));
  auto x = torch::randn({kT, kH});
  torch::NoGradGuard no_grad;
  // What transformers' nn.Linear(bias=False) computes: F.linear(x, W).
  EXPECT_TRUE(torch::equal(router->route(x).logits, torch::nn::functional::linear(x, w)));
  EXPECT_THROW(router->init_from_gate(torch::randn({kE + 1, kH})), c10::Error);
  EXPECT_FALSE(build(config::RouterConfig::kMlp)->init_from_gate(w));
}

TEST(HashRouter, BalancedOverRandomTokenIds) {
  // 100k uniformly random token ids over the Qwen vocabulary, 60 experts, top-4.
  torch::manual_seed(5);
  auto ids = torch::randint(0, 151936, {100000}, torch::kLong);
  std::vector<int64_t> load(60, 0);
  auto acc = ids.accessor<int64_t, 1>();
  for (int64_t t = 0; t < ids.size(0); ++t) {
    auto experts = hash_experts(acc[t], 60, 4, 0);
    EXPECT_EQ(std::set<int64_t>(experts.begin(), experts.end()).size(), 4u);
    for (auto e : experts) ++load[e];
  }
  const double mean = 100000.0 * 4 / 60;
  const double max = double(*std::max_element(load.begin(), load.end()));
  EXPECT_LE(max / mean, 1.05);
}

TEST(HashRouter, FixedAcrossRunsAndSeedsMatter) {
  // Pinned values (from an independent Python transcription of splitmix64 + rejection): a change
  // here would silently reshuffle every trained hash-routed model.
  using V = std::vector<int64_t>;
  EXPECT_EQ(hash_experts(0, 60, 4, 0), (V{55, 0, 19, 4}));
  EXPECT_EQ(hash_experts(1, 60, 4, 0), (V{50, 1, 48, 8}));
  EXPECT_EQ(hash_experts(151935, 60, 4, 0), (V{28, 53, 25, 47}));
  EXPECT_EQ(hash_experts(987654321, 60, 4, 0), (V{50, 15, 26, 27}));
  EXPECT_EQ(hash_experts(42, 8, 2, 7), (V{0, 6}));
  EXPECT_NE(hash_experts(12345, 60, 4, 0), hash_experts(12345, 60, 4, 1));
  auto router = build(config::RouterConfig::kHash);
  auto ids = torch::tensor({7, 7, 9}, torch::kLong);
  Routing r = router->route(torch::randn({3, kH}), ids);
  EXPECT_TRUE(torch::equal(std::get<0>(r.topk_ids[0].sort()), std::get<0>(r.topk_ids[1].sort())));
  EXPECT_NEAR(r.topk_weights[0][0].item<double>(), 1.0 / kK, 1e-6);
  EXPECT_THROW(router->route(torch::randn({3, kH})), c10::Error);  // needs token ids
}

TEST(Routers, JitterOnlyInTraining) {
  config::RouterConfig base;
  base.set_jitter_noise(0.5);
  torch::manual_seed(6);
  auto router = build(config::RouterConfig::kLinear, base);
  auto x = torch::randn({kT, kH});
  router->eval();
  EXPECT_TRUE(torch::equal(router->route(x).logits, router->route(x).logits));
  router->train();
  EXPECT_FALSE(torch::equal(router->route(x).logits, router->route(x).logits));
}

TEST(Routers, WrongHiddenSizeIsAClearError) {
  auto router = build(config::RouterConfig::kMlp);
  EXPECT_THROW(router->route(torch::randn({kT, kH + 1})), c10::Error);
}
