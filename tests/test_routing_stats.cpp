// RoutingStats on hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>

#include "routers/routing_stats.h"

using namespace switchyard;

namespace {
Routing routing(std::vector<int64_t> ids, int64_t T, int64_t E, std::vector<bool> dropped = {}) {
  const int64_t k = T ? int64_t(ids.size()) / T : 1;
  Routing r;
  r.topk_ids = torch::tensor(ids, torch::kLong).view({T, k});
  r.scores = torch::full({T, E}, 1.0 / double(E));
  r.dropped = dropped.empty() ? torch::zeros_like(r.topk_ids, torch::kBool)
                              : torch::tensor(std::vector<int64_t>(dropped.begin(), dropped.end()))
                                    .to(torch::kBool)
                                    .view({T, k});
  return r;
}
}  // namespace

TEST(RoutingStats, LoadMetricsByHand) {
  // Loads (3, 2, 1, 0) over 4 experts from 3 tokens, top-2.
  auto s = RoutingStats::from_routing(routing({0, 1, 0, 2, 0, 1}, 3, 4), 4);
  EXPECT_EQ(s.expert_tokens, (std::vector<int64_t>{3, 2, 1, 0}));
  EXPECT_EQ(s.num_tokens, 3);
  EXPECT_EQ(s.num_assignments, 6);
  EXPECT_DOUBLE_EQ(s.utilisation, 0.75);
  EXPECT_DOUBLE_EQ(s.max_over_mean, 3 / 1.5);
  EXPECT_NEAR(s.cv, std::sqrt((2.25 + 0.25 + 0.25 + 2.25) / 4) / 1.5, 1e-12);
  const double p[] = {0.5, 1.0 / 3, 1.0 / 6};
  double h = 0;
  for (double q : p) h -= q * std::log(q);
  EXPECT_NEAR(s.load_entropy, h, 1e-12);
  EXPECT_NEAR(s.token_entropy, std::log(4.0), 1e-6);  // uniform scores
  EXPECT_EQ(s.drop_rate, 0.0);
}

TEST(RoutingStats, DroppedAssignmentsAreNotLoad) {
  auto s = RoutingStats::from_routing(routing({0, 0, 0, 1}, 4, 2, {false, false, true, false}), 2);
  EXPECT_EQ(s.expert_tokens, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(s.num_dropped, 1);
  EXPECT_DOUBLE_EQ(s.drop_rate, 0.25);
}

TEST(RoutingStats, PerfectBalanceAndMerge) {
  auto a = RoutingStats::from_routing(routing({0, 1}, 2, 2), 2);
  EXPECT_DOUBLE_EQ(a.max_over_mean, 1.0);
  EXPECT_DOUBLE_EQ(a.cv, 0.0);
  auto b = RoutingStats::from_routing(routing({0, 0, 0}, 3, 2), 2);
  auto m = RoutingStats::merge({a, b});
  EXPECT_EQ(m.expert_tokens, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(m.num_tokens, 5);
  EXPECT_DOUBLE_EQ(m.max_over_mean, 4 / 2.5);
  EXPECT_NE(m.to_json().find("\"expert_tokens\":[4,1]"), std::string::npos);
}

TEST(RoutingStats, EmptyRouting) {
  auto s = RoutingStats::from_routing(routing(std::vector<int64_t>{}, 0, 4), 4);
  EXPECT_EQ(s.num_tokens, 0);
  EXPECT_EQ(s.utilisation, 0.0);
  EXPECT_EQ(s.max_over_mean, 0.0);
}
