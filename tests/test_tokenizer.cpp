// UTF-8 helpers, the Unicode class table, GPT-2 pre-tokenization and the BPE tokenizer on small
// hand-made vocabularies and on the committed data/tokenizer.json. Parity with `tokenizers`
// on the whole valid split is in test_tokenizer_parity.cpp.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "common/errors.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_level_pre_tokenizer.h"
#include "data/unicode_class.h"
#include "data/utf8.h"

using namespace switchyard;
using nlohmann::json;

namespace {

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> out;
  for (auto p : gpt2_split(text)) out.emplace_back(p);
  return out;
}

/// A byte-level tokenizer.json: the 256 byte symbols (ids 0..255 in byte order), then one token
/// per merge, then the added tokens.
json tiny_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges,
                    const std::vector<std::string>& added = {}) {
  ByteLevelAlphabet alphabet;
  json vocab = json::object();
  uint32_t next = 0;
  for (int b = 0; b < 256; ++b) vocab[alphabet.spell(std::string(1, char(b)))] = next++;
  json merge_list = json::array();
  for (const auto& [l, r] : merges) {
    const std::string left = alphabet.spell(l), right = alphabet.spell(r);
    if (!vocab.contains(left + right)) vocab[left + right] = next++;
    merge_list.push_back({left, right});
  }
  json added_tokens = json::array();
  for (const auto& a : added)
    added_tokens.push_back({{"id", next++},
                            {"content", a},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", true}});
  return {
      {"version", "1.0"},
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}}};
}

BpeTokenizer load(const json& j) {
  return BpeTokenizer::from_json(j.dump(), "tiny.json");
}

std::string refusal(const json& j) {
  try {
    load(j);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

// ---- UTF-8 -----------------------------------------------------------------------------------

TEST(Utf8, FindsTheFirstInvalidSequence) {
  EXPECT_EQ(utf8_invalid_at("plain ascii"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_at("ab\xC0\x80"), 2u);        // overlong NUL
  EXPECT_EQ(utf8_invalid_at("\xE0\x80\xAF"), 0u);      // overlong
  EXPECT_EQ(utf8_invalid_at("x\xED\xA0\x80"), 1u);     // surrogate
  EXPECT_EQ(utf8_invalid_at("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(utf8_invalid_at("\xE4\xB8"), 0u);          // truncated
  EXPECT_EQ(utf8_invalid_at("ok\x80"), 2u);            // stray continuation
  EXPECT_EQ(utf8_invalid_at("\xF5\x80\x80\x80"), 0u);
  EXPECT_EQ(utf8_decode("\xC3\xA9x"), std::u32string(U"\u00e9x"));
  EXPECT_THROW(utf8_decode("a\xFF", "file.txt"), Error);
  EXPECT_EQ(utf8_encode(U"\u00e9\u4e2d\U0001F600"), "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80");
}

TEST(Utf8, LossyReplacesEachMaximalSubpartOnce) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xE2\x82"), fffd);  // one unfinished sequence
  EXPECT_EQ(utf8_lossy("\xE2\x82"
                       "A"),
            fffd + "A");
  EXPECT_EQ(utf8_lossy("\xE0\x80"), fffd + fffd);  // E0 80 is no valid prefix: two
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), fffd);
  EXPECT_EQ(utf8_lossy("\xFF\xFE"), fffd + fffd);
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate bytes one by one
}

// ---- Unicode classes and pre-tokenization --------------------------------------------------

TEST(UnicodeClass, KnownCodePoints) {
  EXPECT_EQ(char_class(U'a'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'7'), CharClass::kNumber);
  EXPECT_EQ(char_class(U' '), CharClass::kSpace);
  EXPECT_EQ(char_class(U'\n'), CharClass::kSpace);
  EXPECT_EQ(char_class(U'!'), CharClass::kOther);
  EXPECT_EQ(char_class(U'\u00df'), CharClass::kLetter);  // ß
  EXPECT_EQ(char_class(U'\u4e2d'), CharClass::kLetter);  // 中
  EXPECT_EQ(char_class(U'\u0663'), CharClass::kNumber);  // Arabic-Indic three
  EXPECT_EQ(char_class(U'\u00bd'), CharClass::kNumber);  // ½ (No)
  EXPECT_EQ(char_class(U'\u216b'), CharClass::kNumber);  // Ⅻ (Nl)
  EXPECT_EQ(char_class(U'\u00a0'), CharClass::kSpace);
  EXPECT_EQ(char_class(U'\u3000'), CharClass::kSpace);
  EXPECT_EQ(char_class(U'\u0301'), CharClass::kOther);  // combining mark: not a letter
  EXPECT_EQ(char_class(U'\u3002'), CharClass::kOther);  // 。
  EXPECT_EQ(char_class(U'\U0001F600'), CharClass::kOther);
  EXPECT_EQ(char_class(U'\U0010FFFF'), CharClass::kOther);
}

TEST(Gpt2Split, FollowsTheRegexAlternatives) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello  world!"), (V{"Hello", " ", " world", "!"}));
  EXPECT_EQ(split("don't DON'T"), (V{"don", "'t", " DON", "'", "T"}));
  EXPECT_EQ(split("I'll've"), (V{"I", "'ll", "'ve"}));
  EXPECT_EQ(split("''s"), (V{"''", "s"}));
  EXPECT_EQ(split("x  "), (V{"x", "  "}));          // trailing spaces stay together
  EXPECT_EQ(split("x   y"), (V{"x", "  ", " y"}));  // the last space leads the next word
  EXPECT_EQ(split("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("a\xC2\xA0"
                  "b"),
            (V{"a", "\xC2\xA0", "b"}));  // NBSP is no prefix space
  EXPECT_EQ(split("abc123 456"), (V{"abc", "123", " 456"}));
  EXPECT_EQ(split(" ?!x"), (V{" ?!", "x"}));
  EXPECT_EQ(split(""), V{});
  EXPECT_THROW(gpt2_split("bad \xFF"), Error);
}

TEST(ByteLevelAlphabet, IsGpt2BytesToUnicode) {
  ByteLevelAlphabet a;
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    seen.insert(a.char_of(static_cast<unsigned char>(b)));
    EXPECT_EQ(a.byte_of(a.char_of(static_cast<unsigned char>(b))), b);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(a.char_of('A'), U'A');
  EXPECT_EQ(a.char_of(' '), U'\u0120');   // Ġ
  EXPECT_EQ(a.char_of('\n'), U'\u010a');  // Ċ
  EXPECT_EQ(a.byte_of(U'\u4e2d'), -1);
  EXPECT_EQ(a.spell(" a"),
            "\xC4\xA0"
            "a");
}

// ---- BPE on hand-made vocabularies ---------------------------------------------------------

TEST(BpeTokenizer, MergesByRankLeftmostFirst) {
  // ids: bytes 0..255, then ab=256, abc=257, aa=258
  const auto tok = load(tiny_tokenizer({{"a", "b"}, {"ab", "c"}, {"a", "a"}}));
  EXPECT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.encode("abc"), (std::vector<uint32_t>{257}));
  EXPECT_EQ(tok.encode("aaa"), (std::vector<uint32_t>{258, 'a'}));  // leftmost pair first
  EXPECT_EQ(tok.encode("aab"), (std::vector<uint32_t>{'a', 256}));  // ab outranks aa
  // " abc" is one piece; the space byte's symbol is id 32 like any other byte.
  EXPECT_EQ(tok.encode("x abc"), (std::vector<uint32_t>{'x', ' ', 257}));
  EXPECT_EQ(tok.decode(tok.encode("x abc aaa")), "x abc aaa");
}

TEST(BpeTokenizer, AddedTokensAreCutOutLongestFirst) {
  const auto tok = load(tiny_tokenizer({}, {"<s>", "<s>x", "<pad>"}));
  const uint32_t s = 256, sx = 257, pad = 258;
  EXPECT_EQ(tok.encode("a<s>x<s>"), (std::vector<uint32_t>{'a', sx, s}));
  EXPECT_EQ(tok.encode("<pad><pad>"), (std::vector<uint32_t>{pad, pad}));
  EXPECT_EQ(tok.encode("<pa"), (std::vector<uint32_t>{'<', 'p', 'a'}));
  EXPECT_TRUE(tok.is_special(pad));
  EXPECT_FALSE(tok.is_special('a'));
  EXPECT_EQ(tok.decode(std::vector<uint32_t>{'a', pad, 'b'}), "ab");
  EXPECT_EQ(tok.decode(std::vector<uint32_t>{'a', pad, 'b'}, /*skip_special=*/false), "a<pad>b");
  EXPECT_EQ(tok.require_id("<s>x"), sx);
  EXPECT_THROW(tok.require_id("<unk>"), ConfigError);
  EXPECT_THROW(tok.decode(std::vector<uint32_t>{999}), Error);
}

TEST(BpeTokenizer, DecodesPartialCharactersLikeTokenizers) {
  const auto tok = load(tiny_tokenizer({}));
  const std::vector<uint32_t> ids = tok.encode("\xE4\xB8\xAD");  // 中 as three byte ids
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(tok.decode(ids), "\xE4\xB8\xAD");
  EXPECT_EQ(tok.decode(std::span(ids).first(2)), "\xEF\xBF\xBD");
  EXPECT_THROW(tok.encode("bad \xFF"), Error);
}

TEST(BpeTokenizer, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  json j = tiny_tokenizer({{"a", "b"}});
  j["model"]["vocab"]["abc"] = 300;  // reachable by no merge
  j["model"]["ignore_merges"] = true;
  const auto tok = load(j);
  EXPECT_EQ(tok.encode("abc"), (std::vector<uint32_t>{300}));
  EXPECT_EQ(tok.encode("abd"), (std::vector<uint32_t>{256, 'd'}));
}

TEST(BpeTokenizer, AcceptsTheOlderMergeStrings) {
  json j = tiny_tokenizer({{"a", "b"}});
  j["model"]["merges"] = json::array({"a b"});
  EXPECT_EQ(load(j).encode("ab"), (std::vector<uint32_t>{256}));
}

TEST(BpeTokenizer, RefusesWhatItWouldReadDifferently) {
  const json base = tiny_tokenizer({{"a", "b"}});
  auto with = [&](const std::function<void(json&)>& edit) {
    json j = base;
    edit(j);
    return refusal(j);
  };
  EXPECT_EQ(with([](json&) {}), "(accepted)");
  EXPECT_NE(with([](json& j) {
              j["normalizer"] = {{"type", "NFC"}};
            }).find("has a normalizer"),
            std::string::npos);
  EXPECT_NE(with([](json& j) { j["model"]["type"] = "WordPiece"; }).find("model.type"),
            std::string::npos);
  EXPECT_NE(
      with([](json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; }).find("pre_tokenizer"),
      std::string::npos);
  EXPECT_NE(with([](json& j) {
              j["pre_tokenizer"] = {{"type", "Whitespace"}};
            }).find("pre_tokenizer"),
            std::string::npos);
  EXPECT_NE(with([](json& j) { j["model"]["dropout"] = 0.1; }).find("dropout"), std::string::npos);
  EXPECT_NE(with([](json& j) { j["model"]["vocab"].erase("a"); }).find("byte 0x61 has no token"),
            std::string::npos);
  EXPECT_NE(with([](json& j) {
              j["model"]["merges"].push_back({"a", "zz"});
            }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(with([](json& j) {
              j["model"]["merges"].push_back({"a", "b"});
            }).find("repeated"),
            std::string::npos);
  EXPECT_NE(with([](json& j) {
              j["decoder"] = {{"type", "WordPiece"}};
            }).find("decoder"),
            std::string::npos);
  EXPECT_NE(with([](json& j) { j["decoder"] = nullptr; }).find("decoder"), std::string::npos);
  EXPECT_NE(with([](json& j) {
              j["added_tokens"] = json::array(
                  {{{"id", 400}, {"content", "<x>"}, {"lstrip", true}, {"special", true}}});
            }).find("lstrip"),
            std::string::npos);
  EXPECT_NE(with([](json& j) { j["model"]["vocab"] = 3; }).find("model.vocab is not an object"),
            std::string::npos);
  EXPECT_NE(with([](json& j) { j["model"]["vocab"]["a"] = "x"; }).find("unexpected structure"),
            std::string::npos);
  auto refusal = [](const std::string& text) {
    try {
      BpeTokenizer::from_json(text, "broken.json");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string not_json = refusal("{oops");
  EXPECT_EQ(not_json.rfind("broken.json: not JSON", 0), 0u) << not_json;
  // A number beyond double's range (found by fuzz_tokenizer: it escaped as an uncaught
  // out_of_range): the same one-line refusal.
  const std::string too_big = refusal("{\"model\": {\"dropout\": 412e490}}");
  EXPECT_EQ(too_big.rfind("broken.json: not JSON", 0), 0u) << too_big;
  for (const std::string& message : {not_json, with([](json& j) { j["normalizer"] = 1; })})
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_THROW(BpeTokenizer::from_file("/no/such/tokenizer.json"), ConfigError);
}

// ---- the committed tokenizer ---------------------------------------------------------------

TEST(BpeTokenizer, CommittedTokenizerLoadsAndRoundTrips) {
  const auto tok = BpeTokenizer::from_file(SWITCHYARD_SOURCE_DIR "/data/tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), 8192);
  EXPECT_EQ(tok.require_id("<|endoftext|>"), 0u);
  EXPECT_EQ(tok.require_id("<pad>"), 1u);
  EXPECT_EQ(tok.require_id("<cls>"), 2u);
  EXPECT_EQ(tok.require_id("<mask>"), 3u);
  for (uint32_t id = 0; id < 4; ++id) EXPECT_TRUE(tok.is_special(id));
  EXPECT_FALSE(tok.is_special(4));
  EXPECT_EQ(tok.encode("<|endoftext|>"), (std::vector<uint32_t>{0}));
  for (const std::string text :
       {"The quick brown fox.", "Der frühe Vogel fängt den Wurm.", "Лучше поздно, чем никогда.",
        "千里之行，始于足下。", "  indented\n\tcode();  ", "emoji \xF0\x9F\x98\x80 ok"}) {
    const auto ids = tok.encode(text);
    EXPECT_LT(ids.size(), text.size()) << text;  // merges learned on the corpus apply
    EXPECT_EQ(tok.decode(ids), text);
  }
}
