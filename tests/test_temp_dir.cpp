// test::temp_dir's folders go when their test passes and stay, named, when it fails: a run of
// the suite leaves behind only what a failure needs looking at.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/test_support.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;

// What the test below runs in a child process of this binary (ctest leaves it out): makes a
// folder with a file in it, writes the folder's path to $SY_TEMP_DIR_REPORT, and fails when
// $SY_TEMP_DIR_FAIL is set.
TEST(TempDirChild, MakesAFolderAndFailsWhenAsked) {
  const auto dir = test::temp_dir("_child");
  std::ofstream(dir / "kept.txt") << "a file the sweeper must take with the folder";
  ASSERT_TRUE(fs::exists(dir / "kept.txt"));
  if (const char* report = std::getenv("SY_TEMP_DIR_REPORT")) std::ofstream(report) << dir.string();
  if (std::getenv("SY_TEMP_DIR_FAIL")) FAIL() << "failing on purpose";
}

struct ChildRun {
  int status = -1;
  fs::path dir;  // the folder the child made
  std::string output;
};

ChildRun run_child(const fs::path& report, bool fail) {
  // This binary, not sharded (a shard of one test might run none of it).
  const std::string command =
      "env -u GTEST_SHARD_INDEX -u GTEST_TOTAL_SHARDS "
      "SY_TEMP_DIR_REPORT='" +
      report.string() + "' " + (fail ? "SY_TEMP_DIR_FAIL=1 '" : "'") +
      fs::read_symlink("/proc/self/exe").string() + "' --gtest_filter=TempDirChild.* 2>&1";
  ChildRun run;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return run;
  std::array<char, 4096> buffer{};
  while (size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe))
    run.output.append(buffer.data(), n);
  run.status = ::pclose(pipe);
  std::stringstream path;
  path << std::ifstream(report).rdbuf();
  run.dir = path.str();
  return run;
}

TEST(TempDir, GoesWhenItsTestPassesAndStaysNamedWhenItFails) {
  const auto here = test::temp_dir();

  const auto passed = run_child(here / "passed.txt", false);
  ASSERT_EQ(passed.status, 0) << passed.output;
  ASSERT_FALSE(passed.dir.empty()) << passed.output;
  EXPECT_FALSE(fs::exists(passed.dir)) << passed.dir << " outlived its passing test";

  const auto failed = run_child(here / "failed.txt", true);
  EXPECT_NE(failed.status, 0) << failed.output;
  ASSERT_FALSE(failed.dir.empty()) << failed.output;
  EXPECT_TRUE(fs::exists(failed.dir / "kept.txt")) << failed.dir << " gone after a failure";
  EXPECT_NE(failed.output.find(failed.dir.string() + " is kept"), std::string::npos)
      << failed.output;
  fs::remove_all(failed.dir);
}

}  // namespace
}  // namespace switchyard
