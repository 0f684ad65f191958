// The MoE block under expert parallelism equals a single-process reference with the same
// weights: outputs, input gradients, router / shared-expert / expert gradients, for all six
// routers and every EP size that divides the world (CTest runs 1, 2 and 4 ranks, so EP in
// {1, 2, 4} and EP x DP = 2 x 2). The reference runs each rank's tokens through one full copy
// of the block, which is what data parallelism means.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "models/moe_block.h"
#include "parallel/gradient_sync.h"
#include "routers/router_registry.h"
#include "tests/test_support.h"

using namespace switchyard;

namespace switchyard {
void PrintTo(const RouterEntry& entry, std::ostream* os) {
  *os << entry.name;
}
}  // namespace switchyard

namespace {

using namespace switchyard::test;

constexpr int64_t kHidden = 16, kExperts = 8, kIntermediate = 12, kShared = 20;

struct Case {
  config::RouterConfig::KindCase kind = config::RouterConfig::kLinear;
  int64_t top_k = 2;
  double capacity_factor = 0.0;
  bool empty_rank = false;  // rank 1 brings no tokens
  ExpertKind experts = ExpertKind::kSwiGlu;
};

MoeBlockOptions options_for(const Case& c) {
  config::RouterConfig rc;
  rc.set_top_k(int(c.top_k));
  rc.set_capacity_factor(float(c.capacity_factor));
  rc.set_aux_loss_coef(0.01f);
  rc.set_z_loss_coef(0.001f);
  rc.mutable_mlp()->set_hidden(24);
  rc.mutable_hybrid()->set_mlp_hidden(24);
  rc.mutable_attention()->set_head_dim(8);
  rc.mutable_attention()->set_num_heads(2);
  rc.mutable_mlp_hadamard()->set_hidden(16);
  return MoeBlockOptions(kHidden, kExperts, kIntermediate)
      .shared_expert_intermediate_size(c.experts == ExpertKind::kSwiGlu ? kShared : 0)
      .expert_kind(c.experts)
      .router(with_router_kind(rc, c.kind));
}

int64_t tokens_on(int rank, const Case& c) {
  return c.empty_rank && rank == 1 ? 0 : 5 + 4 * rank;
}

// Same on every rank: the global batch, its token ids and the probe that makes the loss.
struct Batch {
  std::vector<torch::Tensor> x, ids, probe;
};
Batch make_batch(const Case& c) {
  torch::manual_seed(7);
  Batch b;
  for (int r = 0; r < world()->size(); ++r) {
    const int64_t t = tokens_on(r, c);
    b.x.push_back(torch::randn({t, kHidden}));
    b.ids.push_back(torch::randint(0, 1000, {t}, torch::kLong));
    b.probe.push_back(torch::randn({t, kHidden}));
  }
  return b;
}

torch::Tensor loss_of(const MoeOutput& out, const torch::Tensor& probe) {
  return (out.hidden * probe).sum() + out.routing.loss;
}

// Copies the reference's weights: replicated ones whole, experts the local slice.
void copy_weights(MoeBlock& dist, MoeBlock& ref) {
  torch::NoGradGuard no_grad;
  auto ref_params = ref->named_parameters();
  const auto held = torch::tensor(dist->dispatcher().local_experts(), torch::kLong);
  for (auto& p : dist->named_parameters()) {
    auto src = ref_params[p.key()];
    if (p.key().rfind("experts.", 0) == 0) src = src.index_select(0, held);
    p.value().copy_(src);
  }
}

torch::Tensor grad_or_zero(const torch::Tensor& p) {
  return p.grad().defined() ? p.grad() : torch::zeros_like(p);
}

void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (want.numel() == 0) return;
  const double scale = 1.0 + want.abs().max().item<double>();
  const double diff = (got - want).abs().max().item<double>();
  EXPECT_LE(diff, 1e-5 * scale) << what << " on rank " << world()->rank();
}

void check_equivalence(const Case& c, int ep) {
  const int me = world()->rank();
  ProcessGroups groups = make_process_groups(world(), ep);
  const Batch batch = make_batch(c);

  torch::manual_seed(11);
  MoeBlock ref(options_for(c), single_process_groups());
  MoeBlock dist(options_for(c), groups);
  copy_weights(dist, ref);

  // Reference: every rank's tokens through the full block, gradients accumulated.
  std::vector<torch::Tensor> ref_out, ref_dx;
  for (int r = 0; r < world()->size(); ++r) {
    auto x = batch.x[r].clone().requires_grad_(true);
    auto out = ref->forward(x, batch.ids[r]);
    loss_of(out, batch.probe[r]).backward();
    ref_out.push_back(out.hidden.detach());
    ref_dx.push_back(x.grad());
  }

  auto x = batch.x[me].clone().requires_grad_(true);
  auto out = dist->forward(x, batch.ids[me]);
  loss_of(out, batch.probe[me]).backward();
  GradientSync(groups, dist->replicated_parameters(), dist->expert_parameters(),
               GradientSyncOptions().average(false).bucket_bytes(1024))
      .synchronize();

  expect_close(out.hidden, ref_out[me], "output");
  expect_close(grad_or_zero(x), ref_dx[me], "input gradient");
  auto ref_params = ref->named_parameters();
  const auto held = torch::tensor(dist->dispatcher().local_experts(), torch::kLong);
  for (auto& p : dist->named_parameters()) {
    auto want = grad_or_zero(ref_params[p.key()]);
    if (p.key().rfind("experts.", 0) == 0) want = want.index_select(0, held);
    expect_close(grad_or_zero(p.value()), want, "gradient of " + p.key());
  }
}

std::vector<int> ep_sizes() {
  std::vector<int> out;
  for (int ep = 1; ep <= world()->size(); ++ep)
    if (world()->size() % ep == 0 && kExperts % ep == 0) out.push_back(ep);
  return out;
}

class MoeEquivalence : public ::testing::TestWithParam<RouterEntry> {};

TEST_P(MoeEquivalence, MatchesSingleProcessAtEveryEpSize) {
  for (int ep : ep_sizes()) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " x DP " + std::to_string(world()->size() / ep));
    check_equivalence(Case{GetParam().kind}, ep);
  }
}

TEST_P(MoeEquivalence, CapacityDroppingTopKEightAndAnEmptyRank) {
  for (int ep : ep_sizes()) {
    SCOPED_TRACE("EP " + std::to_string(ep));
    Case c{GetParam().kind};
    c.capacity_factor = 1.0;
    c.empty_rank = true;
    check_equivalence(c, ep);
    c.capacity_factor = 0.0;
    c.top_k = 8;
    check_equivalence(c, ep);
  }
}

std::string router_name(const ::testing::TestParamInfo<RouterEntry>& info) {
  return info.param.name;
}
INSTANTIATE_TEST_SUITE_P(AllRouters, MoeEquivalence, ::testing::ValuesIn(router_registry()),
                         router_name);

TEST(MoeExpertParallel, GeluExpertsMatchToo) {
  for (int ep : ep_sizes()) {
    Case c;
    c.experts = ExpertKind::kGeluMlp;
    check_equivalence(c, ep);
  }
}

}  // namespace
