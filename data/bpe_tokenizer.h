// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the one
// scripts/train_tokenizer.py writes, data/tokenizer.json): encode gives the ids
// `tokenizers` gives, decode its text.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/byte_level_pre_tokenizer.h"

namespace switchyard {

/// Supported: no normalizer; a ByteLevel pre-tokenizer (use_regex, no prefix space); a BPE model
/// over byte symbols (no dropout, unknown token, subword prefix/suffix or byte fallback;
/// ignore_merges either way); added tokens without strip/single-word flags; a ByteLevel
/// decoder. Anything else is refused when loading, naming the file and the field.
/// Post-processors are ignored: encode never adds special tokens.
///   usage: auto tok = BpeTokenizer::from_file("data/tokenizer.json");
///          std::vector<uint32_t> ids = tok.encode("Hello, world");
///          std::string text = tok.decode(ids);
class BpeTokenizer {
 public:
  static BpeTokenizer from_file(const std::string& path);
  /// `json_text` is the file's content; `what` names it in errors.
  static BpeTokenizer from_json(std::string_view json_text, const std::string& what);

  /// `tokenizers`' `encode(text, add_special_tokens=False).ids`: added tokens (e.g.
  /// <|endoftext|>) written in the text become their ids. Throws on invalid UTF-8.
  std::vector<uint32_t> encode(std::string_view text) const;
  /// `tokenizers`' `decode(ids, skip_special_tokens)`; throws on an id outside the vocabulary
  /// (which `tokenizers` would silently drop).
  std::string decode(std::span<const uint32_t> ids, bool skip_special = true) const;

  /// Number of ids: one past the largest of the model's and the added tokens'.
  int64_t vocab_size() const { return int64_t(id_to_token_.size()); }
  std::optional<uint32_t> token_to_id(std::string_view token) const;
  /// Like token_to_id, but throws Error naming the tokenizer when `token` is absent.
  uint32_t require_id(std::string_view token) const;
  const std::string& id_to_token(uint32_t id) const;
  bool is_special(uint32_t id) const;

 private:
  struct AddedToken {
    std::string content;
    uint32_t id;
    bool special;
  };
  struct Merge {
    uint32_t rank, id;
  };
  BpeTokenizer() = default;
  void encode_piece(std::string_view piece, std::vector<uint32_t>& out) const;
  void encode_segment(std::string_view text, std::vector<uint32_t>& out) const;

  std::string what_;
  std::unordered_map<std::string, uint32_t> vocab_;  // model vocabulary and added tokens
  std::vector<std::string> id_to_token_;             // "" for an unused id
  std::vector<std::string> id_bytes_;                // what decoding an id yields, by id
  std::vector<char> special_;                        // by id
  std::unordered_map<uint64_t, Merge> merges_;       // (left id << 32 | right id)
  std::vector<AddedToken> added_;
  std::array<uint32_t, 256> byte_id_{};  // the symbol of each byte
  ByteLevelAlphabet alphabet_;
  bool ignore_merges_ = false;
};

}  // namespace switchyard
