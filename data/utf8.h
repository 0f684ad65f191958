// UTF-8 for the text pipeline: strict decoding for inputs (a bad byte is an error naming where),
// and the lossy decoding Hugging Face's decoders use for outputs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace switchyard {

/// Byte offset of the first invalid UTF-8 sequence in `text` (overlong forms, surrogates and
/// code points past U+10FFFF count as invalid), or std::string_view::npos when it is valid.
size_t utf8_invalid_at(std::string_view text);

/// Decodes the valid sequence starting at text[i], storing its code point; returns its length,
/// or 0 when no valid sequence starts there.
size_t utf8_decode_at(std::string_view text, size_t i, char32_t* cp);

/// Code points of `text`. Throws Error "WHAT: invalid UTF-8 at byte N" for invalid input.
std::u32string utf8_decode(std::string_view text, std::string_view what = "text");

void utf8_append(std::string& out, char32_t cp);
std::string utf8_encode(std::u32string_view cps);

/// Bytes to valid UTF-8, each maximal invalid subpart replaced by U+FFFD: the rule of Unicode
/// §3.9 that Rust's String::from_utf8_lossy (and so the tokenizers decoders) follows.
///   usage: utf8_lossy("\xE2\x82") == "\uFFFD"
std::string utf8_lossy(std::string_view bytes);

}  // namespace switchyard
