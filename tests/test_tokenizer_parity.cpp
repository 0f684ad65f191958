// The C++ data path against the pinned `tokenizers` and the Python corpus reader
// (scripts/tokenizer_reference.py, run by CTest as a fixture that sets SWITCHYARD_REF_DIR):
// the Unicode class table over every code point, the fortune reader and split record by record,
// ids and decoding of every valid record of every language, edge and random strings, and a
// token file written by scripts/token_file.py. Skipped when run outside CTest.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/corpus_split.h"
#include "data/fortune_corpus.h"
#include "data/token_file.h"
#include "data/unicode_class.h"

using namespace switchyard;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path ref_dir() {
  const char* dir = std::getenv("SWITCHYARD_REF_DIR");
  return dir ? fs::path(dir) / "tokenizer" : fs::path();
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
  return rows;
}

const BpeTokenizer& tokenizer() {
  static const BpeTokenizer tok =
      BpeTokenizer::from_file(SWITCHYARD_SOURCE_DIR "/data/tokenizer.json");
  return tok;
}

}  // namespace

#define REQUIRE_REFS() \
  if (ref_dir().empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set (run through ctest)"

TEST(TokenizerParity, UnicodeTableMatchesTheRegexEngineOnEveryCodePoint) {
  REQUIRE_REFS();
  std::ifstream in(ref_dir() / "unicode_classes.txt");
  ASSERT_TRUE(in.good());
  std::vector<CharClass> expected(0x110000, CharClass::kOther);
  std::string first, last, cls;
  int ranges = 0;
  while (in >> first >> last >> cls) {
    const CharClass c = cls == "L"   ? CharClass::kLetter
                        : cls == "N" ? CharClass::kNumber
                                     : CharClass::kSpace;
    for (unsigned long cp = std::stoul(first, nullptr, 16); cp <= std::stoul(last, nullptr, 16);
         ++cp)
      expected[cp] = c;
    ++ranges;
  }
  EXPECT_GT(ranges, 500);
  int wrong = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (char_class(cp) != expected[cp] && ++wrong <= 10)
      ADD_FAILURE() << "U+" << std::hex << uint32_t(cp) << ": class " << int(char_class(cp))
                    << ", tokenizers says " << int(expected[cp]);
  }
  EXPECT_EQ(wrong, 0) << "regenerate with scripts/unicode_classes.py cpp data/unicode_classes.inc";
}

TEST(TokenizerParity, EveryValidRecordOfEveryLanguage) {
  REQUIRE_REFS();
  const auto rows = read_jsonl(ref_dir() / "valid.jsonl");
  // Our reader and split select the same records, in the same order, with the same labels.
  const auto valid = select_split(read_fortune_corpus({}), Split::kValid, {});
  ASSERT_EQ(valid.size(), rows.size());
  std::map<std::string, int> per_language;
  int64_t tokens = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    ASSERT_EQ(valid[i].text, r["text"].get<std::string>()) << "record " << i;
    ASSERT_EQ(valid[i].language, r["language"].get<std::string>()) << "record " << i;
    ASSERT_EQ(valid[i].category, r["category"].get<std::string>()) << "record " << i;
    const auto ids = tokenizer().encode(valid[i].text);
    ASSERT_EQ(ids, r["ids"].get<std::vector<uint32_t>>())
        << "record " << i << " (" << valid[i].language << "/" << valid[i].category
        << "): " << valid[i].text.substr(0, 200);
    ASSERT_EQ(tokenizer().decode(ids), valid[i].text) << "record " << i;
    ++per_language[valid[i].language];
    tokens += int64_t(ids.size());
  }
  EXPECT_EQ(per_language.size(), 13u);  // en de es it ru zh pl cs sk pt bg eo ga
  for (const auto& [language, n] : per_language) EXPECT_GT(n, 0) << language;
  std::cout << "[ parity ] " << rows.size() << " valid records, " << tokens << " tokens, "
            << per_language.size() << " languages\n";
}

TEST(TokenizerParity, EdgeAndRandomStrings) {
  REQUIRE_REFS();
  const auto rows = read_jsonl(ref_dir() / "edge.jsonl");
  EXPECT_GT(rows.size(), 3000u);
  ByteLevelAlphabet alphabet;
  for (const auto& r : rows) {
    const std::string text = r["text"].get<std::string>();
    std::vector<std::string> pieces;
    for (auto p : gpt2_split(text)) pieces.push_back(alphabet.spell(p));
    ASSERT_EQ(pieces, r["pieces"].get<std::vector<std::string>>()) << json(text).dump();
    ASSERT_EQ(tokenizer().encode(text), r["ids"].get<std::vector<uint32_t>>()) << json(text).dump();
  }
}

TEST(TokenizerParity, DecodingAnyIds) {
  REQUIRE_REFS();
  for (const auto& r : read_jsonl(ref_dir() / "decode.jsonl")) {
    const auto ids = r["ids"].get<std::vector<uint32_t>>();
    ASSERT_EQ(tokenizer().decode(ids, true), r["skip"].get<std::string>()) << r["ids"].dump();
    ASSERT_EQ(tokenizer().decode(ids, false), r["keep"].get<std::string>()) << r["ids"].dump();
  }
}

TEST(TokenizerParity, TokenFileWrittenByPython) {
  REQUIRE_REFS();
  const auto rows = read_jsonl(ref_dir() / "valid.jsonl");
  const TokenDocuments docs = read_token_file((ref_dir() / "valid.tok").string());
  ASSERT_EQ(docs.size(), int64_t(rows.size()));
  EXPECT_EQ(docs.vocab_size(), 8192u);
  EXPECT_EQ(docs.eos_id(), std::optional<uint32_t>(0));
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto doc = docs.document(int64_t(i));
    ASSERT_EQ(std::vector<uint32_t>(doc.begin(), doc.end()),
              rows[i]["ids"].get<std::vector<uint32_t>>())
        << "document " << i;
  }
}
