// One table-free decoder serves all three uses: it reports how far a prefix of a sequence was
// valid, which is exactly what the lossy decoder needs to find maximal subparts.
#include "data/utf8.h"

#include "common/errors.h"

namespace switchyard {
namespace {

/// Length of the valid sequence at text[i] (its code point in *cp), or 0 with *prefix set to
/// how many bytes form a valid but unfinished start of one (at least 1: the lead byte itself).
size_t decode(std::string_view text, size_t i, char32_t* cp, size_t* prefix) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  *prefix = 1;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  char32_t value = b0 & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= text.size()) return 0;
    const auto b = static_cast<unsigned char>(text[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return 0;
    value = (value << 6) | (b & 0x3F);
    *prefix = k + 1;
  }
  *cp = value;
  return len;
}

}  // namespace

size_t utf8_decode_at(std::string_view text, size_t i, char32_t* cp) {
  size_t prefix;
  return decode(text, i, cp, &prefix);
}

size_t utf8_invalid_at(std::string_view text) {
  char32_t cp;
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_decode_at(text, i, &cp);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::u32string utf8_decode(std::string_view text, std::string_view what) {
  std::u32string out;
  out.reserve(text.size());
  char32_t cp;
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_decode_at(text, i, &cp);
    if (n == 0) throw Error(detail::concat(what, ": invalid UTF-8 at byte ", i));
    out.push_back(cp);
    i += n;
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_encode(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) utf8_append(out, cp);
  return out;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  char32_t cp;
  size_t prefix;
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = decode(bytes, i, &cp, &prefix);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal subpart
      i += prefix;
    }
  }
  return out;
}

}  // namespace switchyard
