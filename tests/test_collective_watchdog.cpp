// The collective watchdog's bookkeeping in one process: sequence numbers per group, the flight
// record's ring, heartbeat files and who is named as never having entered a stalled collective.
// The deadline itself (which ends the job) runs in ctest rank_failure under mpirun.
#include <gtest/gtest.h>

#include "parallel/collective_watchdog.h"
#include "parallel/communicator.h"
#include "parallel/watched_communicator.h"

using namespace switchyard;

namespace {

// The records of `group`, oldest first.
std::vector<CollectiveRecord> records_of(const std::string& group) {
  std::vector<CollectiveRecord> out;
  for (auto& r : CollectiveWatchdog::instance().flight_record())
    if (r.group == group) out.push_back(r);
  return out;
}

std::shared_ptr<WatchedGroup> group_of_four(const std::string& name, std::vector<int> ranks) {
  auto g = std::make_shared<WatchedGroup>();
  g->name = name;
  g->world_ranks = std::move(ranks);
  return g;
}

}  // namespace

TEST(CollectiveWatchdog, NumbersEveryCollectiveOfAGroupAndRecordsIt) {
  auto c = watch_communicator(make_single_process_communicator(), "numbered", {0});
  auto t = torch::ones({3, 4});
  c->all_reduce(t);
  c->broadcast(t, 0);
  auto g = c->all_gather(t);
  c->all_to_all_v(t, {3}, {3});
  EXPECT_EQ(c->exchange_counts({5}), std::vector<int64_t>{5});
  c->barrier();
  const auto records = records_of("numbered");
  ASSERT_EQ(records.size(), 6u);
  const std::vector<std::string> ops = {"all_reduce",   "broadcast",       "all_gather",
                                        "all_to_all_v", "exchange_counts", "barrier"};
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].seq, int64_t(i + 1));
    EXPECT_EQ(records[i].op, ops[i]);
    EXPECT_GT(records[i].end, 0) << "finished collectives have an end time";
    EXPECT_GE(records[i].end, records[i].start);
  }
  EXPECT_EQ(records[0].bytes, 3 * 4 * 4);
  EXPECT_EQ(records[5].bytes, 0);
}

TEST(CollectiveWatchdog, SplitsAreWatchedUnderTheirLabel) {
  auto world = watch_communicator(make_single_process_communicator(), "parent", {0});
  auto child = world->split(0, 0);
  child->label("ep7", {0});
  auto t = torch::zeros({2});
  child->all_reduce(t);
  child->all_reduce(t);
  ASSERT_EQ(records_of("parent").size(), 1u);
  EXPECT_EQ(records_of("parent")[0].op, "split");
  const auto records = records_of("ep7");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].seq, 2);
}

TEST(CollectiveWatchdog, TheRingKeepsTheLastCollectives) {
  auto c = watch_communicator(make_single_process_communicator(), "ring", {0});
  const size_t n = CollectiveWatchdog::kRingSize + 40;
  for (size_t i = 0; i < n; ++i) c->barrier();
  const auto all = CollectiveWatchdog::instance().flight_record();
  EXPECT_EQ(all.size(), CollectiveWatchdog::kRingSize);
  const auto mine = records_of("ring");
  ASSERT_FALSE(mine.empty());
  EXPECT_EQ(mine.back().seq, int64_t(n));
  for (size_t i = 1; i < mine.size(); ++i) EXPECT_EQ(mine[i].seq, mine[i - 1].seq + 1);
}

TEST(CollectiveWatchdog, AFailedCollectiveIsNotLeftInFlight) {
  auto c = watch_communicator(make_single_process_communicator(), "failing", {0});
  auto t = torch::ones({2, 2});
  EXPECT_ANY_THROW(c->all_to_all_v(t, {1}, {1}));  // counts do not add up to the rows
  const auto records = records_of("failing");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_GT(records[0].end, 0);
}

TEST(CollectiveWatchdog, HeartbeatsRoundTripAndATruncatedOneReadsAsMissing) {
  const std::vector<PeerHeartbeat::Group> groups = {
      {"world", 12, 11, "all_reduce"}, {"ep0", 40, 40, "all_to_all_v"}, {"dp1", 0, 0, ""}};
  const std::string text = format_heartbeat(1796166375.25, groups);
  const PeerHeartbeat beat = parse_heartbeat(text);
  ASSERT_TRUE(beat.found);
  EXPECT_DOUBLE_EQ(beat.time, 1796166375.25);
  ASSERT_EQ(beat.groups.size(), 3u);
  for (size_t i = 0; i < groups.size(); ++i) {
    EXPECT_EQ(beat.groups[i].name, groups[i].name);
    EXPECT_EQ(beat.groups[i].entered, groups[i].entered);
    EXPECT_EQ(beat.groups[i].completed, groups[i].completed);
    EXPECT_EQ(beat.groups[i].last_op, groups[i].last_op);
  }
  ASSERT_NE(beat.group("ep0"), nullptr);
  EXPECT_EQ(beat.group("ep9"), nullptr);
  EXPECT_FALSE(parse_heartbeat("").found);
  EXPECT_FALSE(parse_heartbeat("group world entered 3 barrier completed 3\n").found);
}

TEST(CollectiveWatchdog, NamesTheRanksThatNeverEnteredTheStalledCollective) {
  // Group ep0 = world ranks 4..7; this is world rank 4, stalled in ep0 collective #41.
  auto g = group_of_four("ep0", {4, 5, 6, 7});
  const double now = 1000;
  std::vector<PeerHeartbeat> peers(8);
  peers[5] = parse_heartbeat(format_heartbeat(now - 0.5, {{"ep0", 41, 40, "all_to_all_v"}}));
  peers[6] = parse_heartbeat(format_heartbeat(now - 9.5, {{"ep0", 40, 40, "all_reduce"}}));
  peers[7] = parse_heartbeat(format_heartbeat(now - 0.2, {{"ep0", 39, 39, "all_to_all_v"}}));
  EXPECT_EQ(ranks_missing_from(*g, 41, 4, peers, now, 3.0),
            "rank 6 (no heartbeat for 9.5 s; last entered all_reduce #40), "
            "rank 7 (last entered all_to_all_v #39)");
  // Rank 7 catches up: only the silent one is left. A missing file is named as such.
  peers[7] = parse_heartbeat(format_heartbeat(now - 0.2, {{"ep0", 41, 40, "all_to_all_v"}}));
  EXPECT_EQ(ranks_missing_from(*g, 41, 4, peers, now, 3.0),
            "rank 6 (no heartbeat for 9.5 s; last entered all_reduce #40)");
  peers[6] = PeerHeartbeat{};
  EXPECT_EQ(ranks_missing_from(*g, 41, 4, peers, now, 3.0), "rank 6 (no heartbeat file)");
  peers[6] = parse_heartbeat(format_heartbeat(now - 0.1, {{"ep0", 42, 41, "barrier"}}));
  EXPECT_EQ(ranks_missing_from(*g, 41, 4, peers, now, 3.0), "");
}

TEST(CollectiveWatchdog, GroupsDescribeTheirWorldRanks) {
  EXPECT_EQ(group_of_four("ep1", {4, 5, 6, 7})->describe(), "ep1 (world ranks 4-7)");
  EXPECT_EQ(group_of_four("dp1", {1, 3})->describe(), "dp1 (world ranks 1,3)");
  auto unknown = group_of_four("world.split0", {});
  unknown->inner = make_single_process_communicator();
  EXPECT_EQ(unknown->describe(), "world.split0 (1 ranks)");
  EXPECT_EQ(unknown->world_rank(0), -1);
}
