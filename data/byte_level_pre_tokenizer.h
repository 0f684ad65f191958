// The GPT-2 byte-level pre-tokenizer of Hugging Face `tokenizers` (ByteLevel, use_regex, no
// prefix space): text is cut into pieces by GPT-2's regex, each piece spelled in the 256
// printable stand-ins for bytes that byte-level BPE vocabularies are written in.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard {

/// Pieces of valid UTF-8 `text` as GPT-2's regex finds them (views into `text`), i.e.
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// matched leftmost-first at each position; the pieces cover the text. Throws on invalid UTF-8.
///   usage: gpt2_split("Hello  world!") == {"Hello", " ", " world", "!"}
std::vector<std::string_view> gpt2_split(std::string_view text);

/// GPT-2's map from bytes to printable code points (bytes_to_unicode), both ways.
class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  char32_t char_of(unsigned char byte) const { return char_of_[byte]; }
  /// The byte a stand-in character spells, or -1 for a character outside the alphabet.
  int byte_of(char32_t c) const { return c < byte_of_.size() ? byte_of_[c] : -1; }
  /// `bytes` spelled in stand-ins, as UTF-8.
  std::string spell(std::string_view bytes) const;

 private:
  std::array<char32_t, 256> char_of_{};
  std::array<int, 324> byte_of_{};  // stand-ins are all below U+0144
};

}  // namespace switchyard
