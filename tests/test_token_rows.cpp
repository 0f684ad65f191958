// parallel/token_rows.h: moving rows between token order and assignment order by gathers alone
// gives the bits index_select and index_add give on the CPU, forward and backward,
// fp32 and bf16; dropped assignments fall back to them; on a GPU the moves repeat bit for bit
// (atomic adds did not) and follow the CPU's to one bf16 rounding.
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <tuple>
#include <utility>

#include "parallel/token_rows.h"

using namespace switchyard;

namespace {

// The dispatcher's order: assignments stably sorted by a random slot; `drop` of them (random)
// sorted last as dropped.
std::pair<torch::Tensor, int64_t> random_order(int64_t tokens, int64_t k, int64_t slots,
                                               int64_t drop) {
  auto slot = torch::randint(slots, {tokens * k}, torch::kLong);
  if (drop > 0) slot.index_put_({torch::randperm(tokens * k).narrow(0, 0, drop)}, slots);
  return {std::get<1>(slot.sort(/*stable=*/true, 0, false)), tokens * k - drop};
}

// Output and input gradient of `move` on x, against a fixed upstream gradient.
std::pair<torch::Tensor, torch::Tensor> run(const torch::Tensor& x,
                                            const std::function<torch::Tensor(torch::Tensor)>& move,
                                            const torch::Tensor& upstream) {
  auto leaf = x.detach().clone().requires_grad_(true);
  auto y = move(leaf);
  y.backward(upstream);
  return {y.detach(), leaf.grad()};
}

void expect_same_bits(const std::pair<torch::Tensor, torch::Tensor>& a,
                      const std::pair<torch::Tensor, torch::Tensor>& b) {
  EXPECT_TRUE(torch::equal(a.first, b.first));
  EXPECT_TRUE(torch::equal(a.second, b.second));
}

}  // namespace

TEST(TokenRows, MovesEqualIndexSelectAndTheCpusIndexAddBitForBit) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kBFloat16})
    for (auto [tokens, k, H] : {std::tuple<int64_t, int64_t, int64_t>{37, 4, 24},
                                {300, 4, 520},
                                {16, 1, 24},
                                {9, 2, 24},
                                {0, 4, 24}}) {
      SCOPED_TRACE(::testing::Message() << dtype << " " << tokens << " tokens, top-" << k);
      const auto [order, kept] = random_order(tokens, k, 6, 0);
      const auto map = TokenRows::from_order(order, k, kept);
      ASSERT_TRUE(map.rows_of_token.defined());
      const auto hidden = torch::randn({tokens, H}).to(dtype);
      const auto rows = torch::randn({kept, H}).to(dtype);
      const auto& tor = map.token_of_row;
      expect_same_bits(run(
                           hidden, [&](auto x) { return copy_tokens_to_rows(x, map); }, rows),
                       run(
                           hidden, [&](auto x) { return x.index_select(0, tor); }, rows));
      expect_same_bits(
          run(
              rows, [&](auto x) { return sum_rows_to_tokens(x, map); }, hidden),
          run(
              rows, [&](auto x) { return torch::zeros_like(hidden).index_add(0, tor, x); },
              hidden));
    }
}

// With capacity, dropped assignments have no row and their tokens fewer than k rows (a token
// may have none: its sum is zero). The moves fall back to index_select and index_add.
TEST(TokenRows, DroppedAssignmentsFallBackAndATokenWithoutRowsSumsToZero) {
  torch::manual_seed(4);
  // 5 tokens, top-2: assignments 1, 7, 4 and 5 dropped, so token 2 keeps no row.
  const auto order = torch::tensor({0, 2, 3, 6, 8, 9, 1, 7, 4, 5}, torch::kLong);
  const auto map = TokenRows::from_order(order, 2, 6);
  EXPECT_FALSE(map.rows_of_token.defined());
  EXPECT_TRUE(torch::equal(map.token_of_row, torch::tensor({0, 1, 1, 3, 4, 4}, torch::kLong)));
  const auto rows = torch::randn({6, 3});
  const auto summed = sum_rows_to_tokens(rows, map);
  EXPECT_TRUE(torch::equal(summed[0], rows[0]));
  EXPECT_TRUE(torch::equal(summed[1], rows[1] + rows[2]));
  EXPECT_TRUE(torch::equal(summed[2], torch::zeros({3})));
  auto [more_order, kept] = random_order(11, 3, 4, 5);
  const auto more = TokenRows::from_order(more_order, 3, kept);
  const auto r = torch::randn({kept, 8});
  EXPECT_TRUE(torch::equal(sum_rows_to_tokens(r, more),
                           torch::zeros({11, 8}).index_add(0, more.token_of_row, r)));
  EXPECT_THROW(sum_rows_to_tokens(torch::randn({kept + 1, 8}), more), std::exception);
}

// On a GPU: every move gives the same bits twice (index_add's atomic adds summed bf16 rows in a
// different order each run), and the CPU's results to one bf16 rounding.
TEST(TokenRowsGpu, MovesRepeatBitForBitAndFollowTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible";
  torch::manual_seed(5);
  const int64_t tokens = 4096, k = 4, H = 256;
  const auto [order, kept] = random_order(tokens, k, 60, 0);
  const auto cpu_map = TokenRows::from_order(order, k, kept);
  const auto gpu_map = TokenRows::from_order(order.cuda(), k, kept);
  const auto hidden = torch::randn({tokens, H}).to(torch::kBFloat16);
  const auto rows = torch::randn({kept, H}).to(torch::kBFloat16);
  auto both = [&](const TokenRows& map, const torch::Tensor& h, const torch::Tensor& r) {
    auto to_rows = run(
        h, [&](auto x) { return copy_tokens_to_rows(x, map); }, r);
    auto to_tokens = run(
        r, [&](auto x) { return sum_rows_to_tokens(x, map); }, h);
    return std::vector<torch::Tensor>{to_rows.first, to_rows.second, to_tokens.first,
                                      to_tokens.second};
  };
  const auto cpu = both(cpu_map, hidden, rows);
  const auto first = both(gpu_map, hidden.cuda(), rows.cuda());
  const auto second = both(gpu_map, hidden.cuda(), rows.cuda());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_TRUE(torch::equal(first[i], second[i])) << i;
    EXPECT_TRUE(
        torch::allclose(first[i].cpu().to(torch::kFloat), cpu[i].to(torch::kFloat), 1e-2, 1e-2))
        << i;
  }
}
