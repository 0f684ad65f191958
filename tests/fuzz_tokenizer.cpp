// libFuzzer target: tokenizer.json (data/bpe_tokenizer.h). The input is the JSON, optionally
// followed by a NUL and a text. BpeTokenizer::from_json throws switchyard::Error, or gives a
// tokenizer that encodes the text and a few fixed strings to ids below vocab_size(), refuses
// invalid UTF-8 with Error, and decodes the ids back to the text (byte-level BPE is lossless)
// unless the text contains an added token, which decoding may render differently.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.h"
#include "data/bpe_tokenizer.h"
#include "data/utf8.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

namespace {

// The added tokens' contents, read here independently of the tokenizer under test.
std::vector<std::string> added_contents(std::string_view json_text) {
  std::vector<std::string> out;
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object() || !j.contains("added_tokens") || !j["added_tokens"].is_array()) return out;
  for (const auto& a : j["added_tokens"])
    if (a.is_object() && a.contains("content") && a["content"].is_string())
      out.push_back(a["content"].get<std::string>());
  return out;
}

void check_text(const BpeTokenizer& tok, std::string_view text,
                const std::vector<std::string>& added) {
  std::vector<uint32_t> ids;
  try {
    ids = tok.encode(text);
  } catch (const Error&) {
    FUZZ_CHECK(utf8_invalid_at(text) != std::string_view::npos, "valid UTF-8 refused\n");
    return;
  }
  FUZZ_CHECK(utf8_invalid_at(text) == std::string_view::npos, "invalid UTF-8 encoded\n");
  for (uint32_t id : ids) FUZZ_CHECK(int64_t(id) < tok.vocab_size());
  const std::string decoded = tok.decode(ids, /*skip_special=*/false);
  tok.decode(ids, /*skip_special=*/true);
  for (const auto& a : added)
    if (!a.empty() && text.find(a) != std::string_view::npos) return;
  FUZZ_CHECK(decoded == text, "decode(encode(s)) != s for %zu bytes\n", text.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json_text = input.substr(0, nul);
  const std::string_view text = nul == input.npos ? "" : input.substr(nul + 1);
  std::optional<BpeTokenizer> tok;
  try {
    tok = BpeTokenizer::from_json(json_text, "fuzz.json");
  } catch (const Error&) {
    return 0;
  }
  // From here on an Error is a finding too: a loaded tokenizer encodes and decodes any text.
  const auto added = added_contents(json_text);
  for (std::string_view s : {"Hello, world!", "  two  spaces\n\ttab",
                             "caf\xc3\xa9 \xe4\xb8\xad 123", "<|endoftext|>x", "\xff bad"})
    check_text(*tok, s, added);
  check_text(*tok, text, added);
  return 0;
}
