// A hand-written matcher for GPT-2's regex (no regex engine: the character classes come from
// data/unicode_class.h, whose table agrees with the engine `tokenizers` uses).
#include "data/byte_level_pre_tokenizer.h"

#include "common/errors.h"
#include "data/unicode_class.h"
#include "data/utf8.h"

namespace switchyard {
namespace {

/// Length in code points of the match at cps[i] (the regex's alternatives tried in order).
size_t match_at(const std::u32string& cps, const std::vector<CharClass>& cls, size_t i) {
  const size_t n = cps.size();
  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
  if (cps[i] == U'\'' && i + 1 < n) {
    const char32_t a = cps[i + 1];
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
    if (i + 2 < n) {
      const char32_t b = cps[i + 2];
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
        return 3;
    }
  }
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": one optional ASCII space, then a run of one
  // class. The space is only taken when the run can follow it.
  const size_t start = (cps[i] == U' ' && i + 1 < n && cls[i + 1] != CharClass::kSpace) ? i + 1 : i;
  if (cls[start] != CharClass::kSpace) {
    size_t j = start + 1;
    while (j < n && cls[j] == cls[start]) ++j;
    return j - i;
  }
  // "\s+(?!\S)|\s+": a run of spaces, less its last one when a non-space follows (that one
  // then leads the next piece), unless the run is a single space.
  size_t j = i + 1;
  while (j < n && cls[j] == CharClass::kSpace) ++j;
  if (j < n && j - i >= 2) --j;
  return j - i;
}

}  // namespace

std::vector<std::string_view> gpt2_split(std::string_view text) {
  // Code points with the byte offset of each, so pieces can be views into `text`.
  std::u32string cps;
  std::vector<size_t> offset;
  cps.reserve(text.size());
  offset.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    const size_t len = utf8_decode_at(text, i, &cp);
    if (len == 0) throw Error(detail::concat("pre-tokenizer: invalid UTF-8 at byte ", i));
    cps.push_back(cp);
    offset.push_back(i);
    i += len;
  }
  offset.push_back(text.size());
  std::vector<CharClass> cls(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) cls[i] = char_class(cps[i]);

  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < cps.size();) {
    const size_t len = match_at(cps, cls, i);
    pieces.push_back(text.substr(offset[i], offset[i + len] - offset[i]));
    i += len;
  }
  return pieces;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_.fill(-1);
  // Printable Latin-1 bytes stand for themselves; the rest take U+0100 onwards, in byte order.
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    char_of_[b] = printable ? char32_t(b) : next++;
    byte_of_[char_of_[b]] = b;
  }
}

std::string ByteLevelAlphabet::spell(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8_append(out, char_of_[b]);
  return out;
}

}  // namespace switchyard
