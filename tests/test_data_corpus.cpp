// Corpus readers (fortune files, plain text, JSON Lines) and the deterministic split, on small
// files written here and on the fortune corpus launch/setup.sh installs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "common/errors.h"
#include "data/corpus_split.h"
#include "data/fortune_corpus.h"
#include "data/text_corpus.h"
#include "tests/test_support.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

using namespace switchyard::test;

/// A fresh folder under the test temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("sy_corpus_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& rel, const std::string& content) const {
    const fs::path p = path_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

 private:
  fs::path path_;
};

std::vector<std::string> texts(const std::vector<TextRecord>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.text);
  return out;
}

}  // namespace

// ---- fortune files ---------------------------------------------------------------------------

TEST(FortuneCorpus, CleaningRemovesEscapesOverstrikeAndControls) {
  EXPECT_EQ(clean_fortune_text("\x1b[32mgreen\x1b[m text"), "green text");
  EXPECT_EQ(clean_fortune_text("\x1b[1;33mbold\x1b[0m"), "bold");
  EXPECT_EQ(clean_fortune_text("_\bu_\bn_\bd_\be_\br"), "under");  // underline
  EXPECT_EQ(clean_fortune_text("B\bBo\bol\bld\bd"), "Bold");       // bold
  EXPECT_EQ(clean_fortune_text("\xE4\xB8\xAD\bX"), "X");           // a whole UTF-8 character
  EXPECT_EQ(clean_fortune_text("line\n\bnext"), "line\nnext");     // never a newline
  EXPECT_EQ(clean_fortune_text("crlf\r\nbell\a tab\tend\x7f"), "crlf\nbell tab\tend");
  EXPECT_EQ(clean_fortune_text("lone \x1b escape"), "lone  escape");
}

TEST(FortuneCorpus, RecordsAreSeparatedByPercentLines) {
  using V = std::vector<std::string>;
  EXPECT_EQ(parse_fortune_records("one\n%\ntwo\nlines\n%\n"), (V{"one", "two\nlines"}));
  EXPECT_EQ(parse_fortune_records("%\n%\n\n\n  indented\n\n%\nlast"), (V{"  indented", "last"}));
  EXPECT_EQ(parse_fortune_records("100% sure\n%%\n %\n"), (V{"100% sure\n%%\n %"}));
  EXPECT_EQ(parse_fortune_records("trailing  \t\n\n%"), (V{"trailing"}));
  EXPECT_EQ(parse_fortune_records(""), V{});
  EXPECT_EQ(parse_fortune_records("   \n%\n"), V{});
}

TEST(FortuneCorpus, ReadsTheSourcesOfALayout) {
  TempDir dir;
  dir.write("alpha", "a1\n%\na2\n%\nshared\n%\n");
  dir.write("alpha.dat", "binary index");
  dir.write("beta.fortunes", "b1\n%\n");
  dir.write("poems", "\xE8\xAF\x97\n%\n");  // claimed by zh below
  dir.write("off/rude", "offensive\n%\n");
  dir.write("de/witze", "w1\n%\nshared\n%\nw2\n");
  dir.write("de/witze.u8", "");
  fs::create_symlink("de/witze", dir.path() / "witze");  // Debian's compatibility links
  FortuneCorpusOptions o;
  o.root = dir.path().string();
  o.sources = {
      {"en", ".", "fortunes"}, {"de", "de", "fortunes-de"}, {"zh", "poems", "fortunes-zh"}};
  const auto records = read_fortune_corpus(o);
  std::vector<std::string> got;
  for (const auto& r : records) got.push_back(r.language + "/" + r.category + ":" + r.text);
  EXPECT_EQ(got,
            (std::vector<std::string>{"en/alpha:a1", "en/alpha:a2", "en/alpha:shared", "en/beta:b1",
                                      "de/witze:w1", "de/witze:w2", "zh/poems:\xE8\xAF\x97"}));
  o.drop_duplicates = false;
  EXPECT_EQ(read_fortune_corpus(o).size(), records.size() + 1);
}

TEST(FortuneCorpus, MissingSourcesAndBadBytesAreOneLineErrors) {
  TempDir dir;
  FortuneCorpusOptions o;
  o.root = dir.path().string();
  o.sources = {{"xx", "nowhere", "fortunes-xx"}};
  const std::string missing = error_of([&] { read_fortune_corpus(o); });
  EXPECT_NE(missing.find("fortunes-xx"), std::string::npos) << missing;
  EXPECT_NE(missing.find("launch/setup.sh"), std::string::npos) << missing;
  const std::string bad = dir.write("latin1", "fine\n%\ncaf\xE9\n");
  o.sources = {{"fr", "latin1", "fortunes-fr"}};
  EXPECT_EQ(error_of([&] { read_fortune_corpus(o); }), bad + ":3: not UTF-8");
}

TEST(FortuneCorpus, InstalledCorpusHasEveryLanguageInEverySplit) {
  const auto records = read_fortune_corpus({});
  std::map<std::string, std::map<Split, int>> counts;
  std::set<std::string> seen;
  for (const auto& r : records) {
    ++counts[r.language][split_of(r.text, {})];
    EXPECT_TRUE(seen.insert(r.text).second) << "duplicate: " << r.text.substr(0, 80);
    EXPECT_FALSE(r.category.empty());
  }
  EXPECT_EQ(counts.size(), 13u);
  for (const auto& [language, splits] : counts) {
    for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
      EXPECT_GT(splits.count(s) ? splits.at(s) : 0, 0) << language << " " << split_name(s);
  }
  EXPECT_GT(records.size(), 90000u);
}

// ---- split -----------------------------------------------------------------------------------

TEST(CorpusSplit, HashIsFnv1aWithTheSplitmixFinalizer) {
  EXPECT_EQ(fnv1a64(""), 0xCBF29CE484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xAF63DC4C8601EC8Cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171F73967E8ull);
  EXPECT_EQ(mix64(0), 0u);
  EXPECT_NE(mix64(1), 1u);
}

TEST(CorpusSplit, DeterministicDisjointAndNearTheFractions) {
  std::vector<TextRecord> records;
  for (int i = 0; i < 20000; ++i) records.push_back({"document " + std::to_string(i), "c", "en"});
  const SplitOptions o;  // 5% valid, 5% test
  const auto train = select_split(records, Split::kTrain, o);
  const auto valid = select_split(records, Split::kValid, o);
  const auto test = select_split(records, Split::kTest, o);
  EXPECT_EQ(train.size() + valid.size() + test.size(), records.size());
  EXPECT_NEAR(double(valid.size()) / 20000, 0.05, 0.006);
  EXPECT_NEAR(double(test.size()) / 20000, 0.05, 0.006);
  std::set<std::string> all;
  for (const auto* part : {&train, &valid, &test})
    for (const auto& r : *part) EXPECT_TRUE(all.insert(r.text).second) << r.text;
  // A record's split depends on its text alone: other records (a new file) change nothing.
  std::vector<TextRecord> more = records;
  for (int i = 0; i < 5000; ++i) more.insert(more.begin(), {"new " + std::to_string(i), "d", "de"});
  const auto valid_more = select_split(more, Split::kValid, o);
  const auto valid_texts = texts(valid);
  const std::set<std::string> before(valid_texts.begin(), valid_texts.end());
  int kept = 0;
  for (const auto& r : valid_more) kept += before.count(r.text);
  EXPECT_EQ(kept, int(valid.size()));
  // Another seed, another split; zero fractions put everything in train.
  EXPECT_NE(texts(select_split(records, Split::kValid, {.seed = 1})), texts(valid));
  EXPECT_EQ(select_split(records, Split::kTrain, {.valid_fraction = 0, .test_fraction = 0}).size(),
            records.size());
}

TEST(CorpusSplit, RejectsBadFractionsAndNames) {
  EXPECT_THROW(split_of("x", {.valid_fraction = -0.1}), ConfigError);
  EXPECT_THROW(split_of("x", {.valid_fraction = 0.6, .test_fraction = 0.6}), ConfigError);
  EXPECT_EQ(parse_split("valid"), Split::kValid);
  EXPECT_THROW(parse_split("validation"), ConfigError);
}

// ---- plain text and JSON Lines ---------------------------------------------------------------

TEST(TextCorpus, PlainTextByParagraphOrByLine) {
  TempDir dir;
  const std::string path =
      dir.write("book.txt", "First para\r\nstill first  \r\n\r\n \t\n\nSecond\n\n\nThird\n");
  const auto paragraphs = read_plain_text(path, {});
  EXPECT_EQ(texts(paragraphs),
            (std::vector<std::string>{"First para\nstill first", "Second", "Third"}));
  EXPECT_EQ(paragraphs[0].category, "book.txt");
  const auto lines = read_plain_text(
      path, {.layout = PlainTextLayout::kOnePerLine, .category = "c", .language = "en"});
  EXPECT_EQ(texts(lines),
            (std::vector<std::string>{"First para", "still first", "Second", "Third"}));
  EXPECT_EQ(lines[1].category, "c");
  EXPECT_EQ(lines[1].language, "en");
  const std::string bad = dir.write("bad.txt", "ok\nnot \xC3 ok\n");
  EXPECT_EQ(error_of([&] { read_plain_text(bad, {}); }), bad + ":2:5: not UTF-8");
  EXPECT_THROW(read_plain_text((dir.path() / "none.txt").string(), {}), ConfigError);
}

TEST(TextCorpus, JsonLinesWithOptionalLabels) {
  TempDir dir;
  const std::string path =
      dir.write("data.jsonl",
                "{\"text\": \"hello\\nworld\", \"label\": \"greeting\", \"language\": \"en\"}\n"
                "\n"
                "{\"text\": \"zwei\", \"label\": 2}\n"
                "{\"text\": \"plain\", \"extra\": [1, 2]}\n");
  const auto records = read_jsonl(path, {});
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "hello\nworld");
  EXPECT_EQ(records[0].category, "greeting");
  EXPECT_EQ(records[0].language, "en");
  EXPECT_EQ(records[1].category, "2");
  EXPECT_EQ(records[2].category, "");
  auto error = [&](const std::string& line) {
    const std::string p = dir.write("bad.jsonl", "{\"text\": \"ok\"}\n" + line + "\n");
    return error_of([&] { read_jsonl(p, {}); });
  };
  const std::string bad = (dir.path() / "bad.jsonl").string();
  EXPECT_EQ(error("{\"txt\": \"typo\"}"), bad + ":2: no \"text\" string");
  EXPECT_EQ(error("[1, 2]"), bad + ":2: not a JSON object");
  EXPECT_EQ(error("{\"text\": \"x\", \"label\": 1.5}"),
            bad + ":2: \"label\" is neither a string nor an integer");
  const std::string not_json = error("{\"text\": ");
  EXPECT_EQ(not_json.rfind(bad + ":2: not JSON", 0), 0u) << not_json;
  EXPECT_EQ(not_json.find('\n'), std::string::npos);
  // A number beyond double's range is a JSON error of another kind (out_of_range): one line too.
  const std::string too_big = error("{\"text\": \"x\", \"n\": 1e999}");
  EXPECT_EQ(too_big.rfind(bad + ":2: not JSON", 0), 0u) << too_big;
}
