// Loading is strict (a tokenizer.json we would read differently from `tokenizers` is refused);
// encoding is `tokenizers`' pipeline: added tokens split out, GPT-2 pieces, merges by rank.
#include "data/bpe_tokenizer.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/errors.h"
#include "data/utf8.h"

namespace switchyard {
namespace {

using nlohmann::json;

constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
// How many ids may go unused below the largest (ids past the tokens listed).
constexpr size_t kMaxUnusedIds = 1 << 16;

uint64_t pair_key(uint32_t a, uint32_t b) {
  return (uint64_t(a) << 32) | b;
}

bool null_or(const json& j, const char* key, const json& allowed) {
  return !j.contains(key) || j[key].is_null() || j[key] == allowed;
}

}  // namespace

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open tokenizer file");
  std::ostringstream text;
  text << in.rdbuf();
  return from_json(text.str(), path);
}

BpeTokenizer BpeTokenizer::from_json(std::string_view json_text, const std::string& what) {
  auto refuse = [&](const std::string& why) -> ConfigError {
    return ConfigError(what + ": " + why +
                       " (supported: byte-level BPE as "
                       "scripts/train_tokenizer.py writes it)");
  };
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {  // a syntax error, or a number out of double's range
    throw ConfigError(what + ": not JSON: " + e.what());
  }
  try {
    if (!j.is_object() || !j.contains("model")) throw refuse("no \"model\"");
    const json& model = j["model"];
    if (model.value("type", "") != "BPE") throw refuse("model.type is not \"BPE\"");
    if (!null_or(j, "normalizer", nullptr)) throw refuse("has a normalizer");
    const json& pre = j.value("pre_tokenizer", json());
    if (pre.value("type", "") != "ByteLevel" || pre.value("add_prefix_space", true) ||
        !pre.value("use_regex", true))
      throw refuse("pre_tokenizer is not ByteLevel with use_regex and no add_prefix_space");
    if (!j.contains("decoder") || !j["decoder"].is_object() ||
        j["decoder"].value("type", "") != "ByteLevel")
      throw refuse("decoder is not ByteLevel");
    if (!null_or(model, "dropout", nullptr) || !null_or(model, "unk_token", nullptr) ||
        !null_or(model, "continuing_subword_prefix", "") ||
        !null_or(model, "end_of_word_suffix", "") || !null_or(model, "byte_fallback", false))
      throw refuse("model uses dropout, unk_token, a subword prefix/suffix or byte_fallback");

    BpeTokenizer t;
    t.what_ = what;
    t.ignore_merges_ = model.value("ignore_merges", false);
    if (!model.contains("vocab") || !model["vocab"].is_object())
      throw refuse("model.vocab is not an object");
    if (!model.contains("merges") || !model["merges"].is_array())
      throw refuse("model.merges is not an array");
    const json added_tokens = j.value("added_tokens", json::array());
    // Ids index tables: one far past the tokens listed (4294967295, say) would allocate
    // gigabytes for nothing. Vocabularies number their tokens (nearly) densely.
    const size_t max_id = model["vocab"].size() + added_tokens.size() + kMaxUnusedIds;
    std::vector<char> used;
    auto add_id = [&](const std::string& token, const json& id_json) {
      // (A JSON literal reads as unsigned; a json built in C++ from an int is signed.)
      if (!id_json.is_number_unsigned() &&
          !(id_json.is_number_integer() && id_json.get<int64_t>() >= 0))
        throw refuse(detail::concat("unexpected structure: token ", json(token).dump(), " has id ",
                                    id_json.dump(), ", not a non-negative integer"));
      if (id_json.get<uint64_t>() >= max_id)
        throw refuse(detail::concat("token ", json(token).dump(), " has id ", id_json.dump(),
                                    ", more than ", kMaxUnusedIds, " past the ",
                                    max_id - kMaxUnusedIds, " tokens listed"));
      const uint32_t id = id_json.get<uint32_t>();
      if (id >= t.id_to_token_.size()) {
        t.id_to_token_.resize(size_t(id) + 1);
        used.resize(size_t(id) + 1);
      }
      // Two tokens on one id would decode as whichever was kept (tokenizers keeps either).
      if (used[id] && t.id_to_token_[id] != token)
        throw refuse(detail::concat("tokens ", json(t.id_to_token_[id]).dump(), " and ",
                                    json(token).dump(), " share id ", id));
      used[id] = 1;
      t.id_to_token_[id] = token;
      t.vocab_[token] = id;
      return id;
    };
    for (const auto& [token, id] : model["vocab"].items()) add_id(token, id);
    for (const json& a : added_tokens) {
      if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false))
        throw refuse("added token " + a.at("content").get<std::string>() +
                     " uses lstrip/rstrip/single_word");
      AddedToken added{a.at("content").get<std::string>(), 0, a.value("special", false)};
      if (added.content.empty()) throw refuse("an added token is empty");
      added.id = add_id(added.content, a.at("id"));
      t.added_.push_back(added);
    }
    t.special_.assign(t.id_to_token_.size(), 0);
    for (const auto& a : t.added_) t.special_[a.id] = a.special;

    // Decoding an id: its characters mapped back to bytes, or its own UTF-8 bytes when one of
    // them is not a byte stand-in (what the ByteLevel decoder does with e.g. added tokens).
    t.id_bytes_.resize(t.id_to_token_.size());
    for (size_t id = 0; id < t.id_to_token_.size(); ++id) {
      const std::string& token = t.id_to_token_[id];
      std::string bytes;
      for (char32_t c : utf8_decode(token, what)) {
        const int b = t.alphabet_.byte_of(c);
        if (b < 0) {
          bytes = token;
          break;
        }
        bytes.push_back(char(b));
      }
      t.id_bytes_[id] = bytes;
    }
    for (int b = 0; b < 256; ++b) {
      const std::string symbol = t.alphabet_.spell(std::string(1, char(b)));
      const auto it = t.vocab_.find(symbol);
      if (it == t.vocab_.end())
        throw refuse(detail::concat("byte 0x", std::hex, b, " has no token"));
      t.byte_id_[b] = it->second;
    }

    const json& merges = model.at("merges");
    t.merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string left, right;
      if (m.is_string()) {  // the older "left right" form
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) throw refuse("merge \"" + s + "\" has no space");
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      }
      const auto l = t.vocab_.find(left), r = t.vocab_.find(right),
                 merged = t.vocab_.find(left + right);
      if (l == t.vocab_.end() || r == t.vocab_.end() || merged == t.vocab_.end())
        throw refuse(detail::concat("merge ", rank, " (", left, " + ", right,
                                    ") names a token outside the vocabulary"));
      if (!t.merges_.emplace(pair_key(l->second, r->second), Merge{uint32_t(rank), merged->second})
               .second)
        throw refuse(detail::concat("merge ", rank, " (", left, " + ", right, ") is repeated"));
    }
    return t;
  } catch (const json::exception& e) {
    throw refuse(std::string("unexpected structure: ") + e.what());
  }
}

// ---- encoding ------------------------------------------------------------------------------

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<uint32_t>& out) const {
  if (ignore_merges_) {
    const auto it = vocab_.find(alphabet_.spell(piece));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<uint32_t> ids(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) ids[i] = byte_id_[static_cast<unsigned char>(piece[i])];
  // rank[p]: the merge of ids[p], ids[p+1]. Merging the lowest rank, leftmost first, is what
  // `tokenizers`' priority queue does; only the two neighbouring pairs change after a merge.
  auto lookup = [&](size_t p) -> Merge {
    const auto it = merges_.find(pair_key(ids[p], ids[p + 1]));
    return it == merges_.end() ? Merge{kNoMerge, 0} : it->second;
  };
  std::vector<Merge> pair(ids.size() > 1 ? ids.size() - 1 : 0);
  for (size_t p = 0; p < pair.size(); ++p) pair[p] = lookup(p);
  while (!pair.empty()) {
    size_t best = 0;
    for (size_t p = 1; p < pair.size(); ++p)
      if (pair[p].rank < pair[best].rank) best = p;
    if (pair[best].rank == kNoMerge) break;
    ids[best] = pair[best].id;
    ids.erase(ids.begin() + std::ptrdiff_t(best) + 1);
    pair.erase(pair.begin() + std::ptrdiff_t(best));
    if (best < pair.size()) pair[best] = lookup(best);
    if (best > 0) pair[best - 1] = lookup(best - 1);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

void BpeTokenizer::encode_segment(std::string_view text, std::vector<uint32_t>& out) const {
  for (std::string_view piece : gpt2_split(text)) encode_piece(piece, out);
}

std::vector<uint32_t> BpeTokenizer::encode(std::string_view text) const {
  const size_t bad = utf8_invalid_at(text);
  if (bad != std::string_view::npos)
    throw Error(detail::concat(what_, ": cannot encode text with invalid UTF-8 (byte ", bad, ")"));
  std::vector<uint32_t> out;
  out.reserve(text.size() / 3 + 1);
  // Added tokens are cut out first, leftmost and then longest, and the text between them is
  // pre-tokenized on its own.
  size_t segment = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* found = nullptr;
    for (const auto& a : added_)
      if (text.compare(i, a.content.size(), a.content) == 0 &&
          (!found || a.content.size() > found->content.size()))
        found = &a;
    if (!found) {
      ++i;
      continue;
    }
    encode_segment(text.substr(segment, i - segment), out);
    out.push_back(found->id);
    i += found->content.size();
    segment = i;
  }
  encode_segment(text.substr(segment), out);
  return out;
}

// ---- decoding and lookups -----------------------------------------------------------------

std::string BpeTokenizer::decode(std::span<const uint32_t> ids, bool skip_special) const {
  std::string bytes;
  for (uint32_t id : ids) {
    if (id >= id_to_token_.size() || id_to_token_[id].empty())
      throw Error(detail::concat(what_, ": cannot decode id ", id, " (vocabulary of ",
                                 id_to_token_.size(), ")"));
    if (skip_special && special_[id]) continue;
    bytes += id_bytes_[id];
  }
  return utf8_lossy(bytes);
}

std::optional<uint32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

uint32_t BpeTokenizer::require_id(std::string_view token) const {
  const auto id = token_to_id(token);
  if (!id) throw ConfigError(detail::concat(what_, ": no token ", token));
  return *id;
}

const std::string& BpeTokenizer::id_to_token(uint32_t id) const {
  SY_CHECK(id < id_to_token_.size(), what_, ": id ", id, " outside the vocabulary");
  return id_to_token_[id];
}

bool BpeTokenizer::is_special(uint32_t id) const {
  return id < special_.size() && special_[id];
}

}  // namespace switchyard
