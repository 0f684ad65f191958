// Expert placement as data: the contiguous default, balancing one layer (replicas, packing,
// swaps) against hand-computed and random loads, the JSON file and its refusals, and the loads
// read back from a run's metrics.jsonl.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "parallel/placement.h"
#include "tests/test_support.h"
#include "trainer/expert_load_history.h"

using namespace switchyard;
using namespace switchyard::test;

namespace {

// Every expert in at least one slot, every rank `slots` slots, no rank with two copies of one.
void expect_valid(const LayerPlacement& p, int64_t E, int ep, int64_t slots) {
  ASSERT_EQ(int64_t(p.slots.size()), ep);
  for (const auto& rank : p.slots) {
    EXPECT_EQ(int64_t(rank.size()), slots);
    std::vector<int64_t> sorted = rank;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
  }
  for (int64_t n : p.copies(E)) EXPECT_GE(n, 1);
}

}  // namespace

TEST(Placement, ContiguousIsTheSplitByExpertId) {
  const Placement p = Placement::contiguous(3, 8, 4);
  ASSERT_EQ(p.layers.size(), 3u);
  EXPECT_EQ(p.slots_per_rank, 2);
  for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(p.layers[1].slots[size_t(e / 2)][size_t(e % 2)], e);
  EXPECT_THROW(Placement::contiguous(1, 6, 4), ConfigError);
}

TEST(Placement, RankLoadsShareAReplicatedExpertsLoad) {
  LayerPlacement p;
  p.slots = {{0, 1}, {0, 2}};  // expert 0 on both ranks
  const auto loads = rank_loads(p, {10, 3, 5});
  EXPECT_DOUBLE_EQ(loads[0], 5 + 3);
  EXPECT_DOUBLE_EQ(loads[1], 5 + 5);
  EXPECT_DOUBLE_EQ(max_over_mean(loads), 10 / 9.0);
  EXPECT_EQ(max_over_mean({0, 0}), 0.0);
}

TEST(Placement, BalancingAHandMadeSkew) {
  // Contiguous: ranks get 50, 20, 10, 5 of 85 (max/mean 2.35). Without replicas no rank can
  // carry less than expert 0's 40 (1.88). With 4 extra slots (3 per rank), expert 0 in 4 copies
  // of 10 leaves six 10s, five 5s and a 0 for 12 slots: some rank gets 10 + 10 + 5 = 25 (1.18).
  // Three copies of 13.3 and a filler for expert 7 do better: 13.3 + 5 + 5, 13.3 + 10 + 0,
  // 13.3 + 10 + 0, 10 + 5 + 5, so the most loaded rank carries 23.3 (1.098).
  const std::vector<double> load = {40, 10, 10, 10, 5, 5, 5, 0};
  EXPECT_NEAR(max_over_mean(rank_loads(Placement::contiguous(1, 8, 4).layers[0], load)), 50 / 21.25,
              1e-12);
  const LayerPlacement plain = balanced_layer(load, 4, 0);
  expect_valid(plain, 8, 4, 2);
  EXPECT_NEAR(max_over_mean(rank_loads(plain, load)), 40 / 21.25, 1e-12);  // the best there is
  const LayerPlacement replicated = balanced_layer(load, 4, 4);
  expect_valid(replicated, 8, 4, 3);
  EXPECT_EQ(replicated.copies(8)[0], 3);
  EXPECT_NEAR(max_over_mean(rank_loads(replicated, load)), (40 / 3.0 + 10) / 21.25, 1e-12);
}

TEST(Placement, BalancedIsNeverWorseThanContiguousAndMeetsTheTargetWithReplicas) {
  // Zipf-like loads, shuffled over expert ids, at Qwen1.5-MoE's 60 experts and small shapes.
  std::mt19937 rng(7);
  for (auto [E, ep] : std::vector<std::pair<int64_t, int>>{{60, 4}, {60, 6}, {8, 4}, {16, 8}}) {
    for (int trial = 0; trial < 5; ++trial) {
      std::vector<double> load;
      for (int64_t e = 0; e < E; ++e) load.push_back(std::floor(1000.0 / double(e + 1)));
      std::shuffle(load.begin(), load.end(), rng);
      const double contiguous =
          max_over_mean(rank_loads(Placement::contiguous(1, E, ep).layers[0], load));
      const LayerPlacement plain = balanced_layer(load, ep, 0);
      expect_valid(plain, E, ep, E / ep);
      EXPECT_LE(max_over_mean(rank_loads(plain, load)), contiguous + 1e-12);
      const LayerPlacement replicated = balanced_layer(load, ep, ep);
      expect_valid(replicated, E, ep, E / ep + 1);
      EXPECT_LE(max_over_mean(rank_loads(replicated, load)), 1.1)
          << "E " << E << ", EP " << ep << ", trial " << trial;
    }
  }
}

TEST(Placement, ShapesThatCannotBePlacedAreOneLine) {
  EXPECT_NE(error_of([] {
              balanced_layer({1, 2, 3}, 2, 0);
            }).find("E + R must be a multiple"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              balanced_layer({1, 2}, 2, 3);
            }).find("--redundant 3 must be in [0, 2]"),
            std::string::npos);
  EXPECT_THROW(balanced_layer({1, -1}, 2, 0), ConfigError);
}

TEST(Placement, FileRoundTripAndRefusals) {
  const auto dir = temp_dir();
  Placement p = Placement::contiguous(2, 4, 2);
  p.layers[1] = balanced_layer({9, 1, 1, 1}, 2, 2);
  p.slots_per_rank = 3;
  p.layers[0].slots = {{0, 1, 0}, {2, 3, 1}};  // every rank 3 slots, expert 0 and 1 twice
  p.source = {{"run", "somewhere"}};
  p.write((dir / "p.json").string());
  EXPECT_FALSE(std::filesystem::exists(dir / "p.json.partial"));
  const Placement back = Placement::read((dir / "p.json").string());
  EXPECT_EQ(back.to_json(), p.to_json());
  EXPECT_NO_THROW(back.check_fits(2, 4, 2, "p.json"));
  EXPECT_NE(error_of([&] {
              back.check_fits(3, 4, 2, "p.json");
            }).find("p.json: 2 layers, the model has 3 MoE layers"),
            std::string::npos);
  EXPECT_NE(error_of([&] { back.check_fits(2, 4, 4, "p.json"); }).find("made for EP 2"),
            std::string::npos);

  // Each broken file: one line naming the file, the layer and rank, and what is wrong.
  auto refusal = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = p.to_json();
    edit(j);
    std::ofstream(dir / "bad.json") << j.dump();
    return error_of([&] { Placement::read((dir / "bad.json").string()); });
  };
  EXPECT_NE(refusal([](auto& j) {
              j["layers"][1]["slots"] = {{1, 1, 1}, {2, 3, 1}};
            }).find("layer 1: expert 0 has no slot"),
            std::string::npos);
  EXPECT_NE(refusal([](auto& j) {
              j["layers"][0]["slots"][1] = {2, 3};
            }).find("layer 0 rank 1: 2 slots, expected slots_per_rank 3"),
            std::string::npos);
  EXPECT_NE(refusal([](auto& j) {
              j["layers"][0]["slots"][1] = {2, 3, 7};
            }).find("layer 0 rank 1: expert 7 is not in [0, 4)"),
            std::string::npos);
  EXPECT_NE(refusal([](auto& j) {
              j["layers"][0]["slots"].push_back({0, 1, 2});
            }).find("layer 0: 3 ranks, expected expert_parallel 2"),
            std::string::npos);
  EXPECT_NE(refusal([](auto& j) { j["schema"] = "other/1"; }).find("schema 'other/1'"),
            std::string::npos);
  EXPECT_NE(refusal([](auto& j) { j.erase("num_experts"); }).find("no field 'num_experts'"),
            std::string::npos);
  std::ofstream(dir / "bad.json") << "{";
  EXPECT_NE(error_of([&] { Placement::read((dir / "bad.json").string()); }).find("not JSON"),
            std::string::npos);
}

TEST(ExpertLoadHistory, SumsRanksAndDataParallelCopiesAndCountsARedoneStepOnce) {
  const auto dir = temp_dir();
  // EP 2 x DP 2 (ranks 0, 2 hold experts 0-1; ranks 1, 3 experts 2-3), one layer, steps 1-2;
  // step 2 was logged twice (a resume redid it): the second record counts.
  std::ofstream out(dir / "metrics.jsonl");
  auto load = [&](int step, int rank, std::vector<int> counts) {
    out << nlohmann::json{{"kind", "load"},
                          {"step", step},
                          {"rank", rank},
                          {"layer", 0},
                          {"first_expert", (rank % 2) * 2},
                          {"expert_tokens", counts},
                          {"max_over_mean", 1.0}}
               .dump()
        << "\n";
  };
  out << R"({"kind":"loss","step":1,"rank":0,"loss":null})"
      << "\n";
  for (int r = 0; r < 4; ++r) load(1, r, {1, 2});
  for (int r = 0; r < 4; ++r) load(2, r, {100, 100});
  for (int r = 0; r < 4; ++r) load(2, r, {10 * (r + 1), 0});
  out << R"({"kind":"load","step":3,"ra)";  // torn by a kill
  out.close();
  const ExpertLoadHistory all = read_expert_loads(dir.string());
  EXPECT_EQ(all.steps, 2);
  ASSERT_EQ(all.per_layer.size(), 1u);
  // expert 0: ranks 0, 2 at steps 1, 2 = 1 + 1 + 10 + 30; expert 2: ranks 1, 3 = 1 + 1 + 20 + 40.
  EXPECT_EQ(all.per_layer[0], (std::vector<double>{42, 4, 62, 4}));
  EXPECT_EQ(all.expert_parallel, 2);     // two sets of experts held
  EXPECT_TRUE(all.per_ep_rank.empty());  // these records have no rank_tokens
  // Step 1: every slot got rows; step 2 (its last records): one of each rank's two.
  EXPECT_EQ(all.active_share, (std::vector<double>{0.75}));
  const ExpertLoadHistory second = read_expert_loads((dir / "metrics.jsonl").string(), 2, 2);
  EXPECT_EQ(second.per_layer[0], (std::vector<double>{40, 0, 60, 0}));
  EXPECT_EQ(second.active_share, (std::vector<double>{0.5}));
  EXPECT_NE(error_of([&] {
              read_expert_loads(dir.string(), 5, 9);
            }).find("no load records for steps 5 to 9"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_expert_loads((dir / "none").string()); }).find("cannot open"),
            std::string::npos);
}

// A run under a placement of its own (EP 2 x DP 2, experts {0, 3} and {1, 2}): the tokens each
// EP rank received, over steps and data-parallel copies (world rank r is EP rank r % 2).
TEST(ExpertLoadHistory, RankTokensFollowThePlacementTheRunUsed) {
  const auto dir = temp_dir();
  std::ofstream out(dir / "metrics.jsonl");
  for (int step : {1, 2})
    for (int r = 0; r < 4; ++r)
      out << nlohmann::json{{"kind", "load"},
                            {"step", step},
                            {"rank", r},
                            {"layer", 0},
                            {"experts",
                             r % 2 == 0 ? std::vector<int>{0, 3} : std::vector<int>{1, 2}},
                            {"expert_tokens", std::vector<int>{step, r}},
                            {"rank_tokens", step + r}}
                 .dump()
          << "\n";
  out.close();
  const ExpertLoadHistory h = read_expert_loads(dir.string());
  EXPECT_EQ(h.expert_parallel, 2);
  // EP rank 0: world ranks 0, 2 at steps 1, 2 = 1 + 3 + 2 + 4; EP rank 1: ranks 1, 3 = 2 + 4 + 3
  // + 5.
  ASSERT_EQ(h.per_ep_rank.size(), 1u);
  EXPECT_EQ(h.per_ep_rank[0], (std::vector<double>{10, 14}));
  // World rank 0 left its second slot empty (expert_tokens {step, 0}), the others none.
  EXPECT_EQ(h.active_share, (std::vector<double>{0.875}));
}
