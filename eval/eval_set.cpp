// Packing reuses the trainer's PackedSequences (epoch 0, documents in file order) so that eval
// sees the same blocks a training run over the same file would, minus the shuffling.
#include "eval/eval_set.h"

#include <array>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "common/errors.h"
#include "data/packed_sequences.h"
#include "data/text_corpus.h"
#include "data/token_file.h"
#include "data/token_lines.h"

namespace switchyard {
namespace {

bool is_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open evaluation set");
  std::array<char, sizeof(kTokenFileMagic)> magic{};
  in.read(magic.data(), magic.size());
  return in.gcount() == std::streamsize(magic.size()) &&
         std::memcmp(magic.data(), kTokenFileMagic, magic.size()) == 0;
}

// Documents packed in order, joined by EOS, into blocks of S + 1 that overlap by one token.
EvalSet pack_documents(const TokenDocuments& docs, const EvalSetOptions& options,
                       const std::string& path, const std::string& format) {
  if (docs.num_tokens() == 0) throw ConfigError(path + ": empty evaluation set (no tokens)");
  if (docs.num_tokens() < options.seq_len + 1)
    throw ConfigError(detail::concat(path, ": ", docs.num_tokens(),
                                     " tokens do not fill one block of --seq-len ", options.seq_len,
                                     " + 1"));
  PackedSequences packed(docs, {.seq_len = options.seq_len, .shuffle_documents = false});
  int64_t n = packed.size();
  if (options.max_sequences > 0) n = std::min(n, options.max_sequences);
  std::vector<int64_t> indices(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) indices[size_t(i)] = i;
  auto blocks = packed.batch(0, indices);  // [n, S + 1]
  const int64_t S = options.seq_len;
  EvalSet set;
  set.input_ids = blocks.narrow(1, 0, S).contiguous();
  set.targets = blocks.narrow(1, 1, S).contiguous();
  set.attention_mask = torch::ones_like(set.input_ids);
  set.format = format;
  return set;
}

// JSON Lines or plain text, tokenized: the documents a token file would have held.
EvalSet from_text(const std::string& path, EvalFileKind kind, const EvalSetOptions& options) {
  if (!options.tokenizer)
    throw ConfigError(path + ": a text evaluation set needs a tokenizer (data.tokenizer_path)");
  const std::vector<TextRecord> records =
      kind == EvalFileKind::kJsonl ? read_jsonl(path, {}) : read_plain_text(path, {});
  std::vector<std::vector<uint32_t>> ids;
  ids.reserve(records.size());
  for (const auto& r : records) ids.push_back(options.tokenizer->encode(r.text));
  const TokenDocuments docs =
      TokenDocuments::from_vectors(ids, uint32_t(options.tokenizer->vocab_size()),
                                   options.tokenizer->token_to_id("<|endoftext|>"));
  return pack_documents(docs, options, path,
                        kind == EvalFileKind::kJsonl ? "jsonl text" : "plain text");
}

EvalSet from_token_lines(const std::string& path, const EvalSetOptions& options) {
  TokenBatch batch = read_token_lines(path);
  if (options.max_sequences > 0 && batch.input_ids.size(0) > options.max_sequences) {
    batch.input_ids = batch.input_ids.narrow(0, 0, options.max_sequences);
    batch.attention_mask = batch.attention_mask.narrow(0, 0, options.max_sequences);
  }
  EvalSet set;
  set.input_ids = batch.input_ids.contiguous();
  set.attention_mask = batch.attention_mask.contiguous();
  // Right padding: position s has a target when position s + 1 is a real token.
  set.targets = torch::full_like(set.input_ids, -1);
  const int64_t S = set.input_ids.size(1);
  if (S > 1) {
    auto next = set.input_ids.narrow(1, 1, S - 1);
    auto has_next = set.attention_mask.narrow(1, 1, S - 1).to(torch::kBool);
    set.targets.narrow(1, 0, S - 1).copy_(torch::where(has_next, next, torch::full_like(next, -1)));
  }
  set.format = "token lines";
  return set;
}

}  // namespace

EvalFileKind eval_file_kind(const std::string& path) {
  if (is_token_file(path)) return EvalFileKind::kTokenFile;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;  // blank
    if (line[first] == '{') return EvalFileKind::kJsonl;
    const bool ids_only = line.find_first_not_of("0123456789 \t\r") == std::string::npos;
    return ids_only ? EvalFileKind::kTokenLines : EvalFileKind::kPlainText;
  }
  return EvalFileKind::kTokenLines;  // blank: reported as an empty set by its reader
}

EvalSet read_eval_set(const std::string& path, const EvalSetOptions& options) {
  if (options.seq_len < 1) throw ConfigError("--seq-len must be at least 1");
  const EvalFileKind kind = eval_file_kind(path);
  EvalSet set = kind == EvalFileKind::kTokenFile
                    ? pack_documents(read_token_file(path), options, path, "token file")
                : kind == EvalFileKind::kTokenLines ? from_token_lines(path, options)
                                                    : from_text(path, kind, options);
  set.source = path;
  if (set.predicted_tokens() == 0)
    throw ConfigError(path + ": empty evaluation set (no position has a next token to predict)");
  return set;
}

EvalSet read_classification_set(const std::string& path, const BpeTokenizer& tokenizer,
                                const LabelSet& labels, const ClassificationOptions& rows,
                                int64_t max_sequences) {
  std::vector<TextRecord> records = read_jsonl(path, {});
  if (records.empty()) throw ConfigError(path + ": empty evaluation set (no records)");
  // A labelled file is ordered by source (language, category): a cut keeps every k-th record,
  // so the subset spans all of them, where the first N would hold one or two languages.
  if (max_sequences > 0 && int64_t(records.size()) > max_sequences) {
    std::vector<TextRecord> every_kth;
    const size_t n = records.size();
    for (size_t i = 0; i < size_t(max_sequences); ++i)
      every_kth.push_back(std::move(records[i * n / size_t(max_sequences)]));
    records = std::move(every_kth);
  }
  std::unique_ptr<ClassificationDataset> data;
  try {
    data = std::make_unique<ClassificationDataset>(records, tokenizer, labels, rows);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
  std::vector<int64_t> all(records.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  const ClassificationBatch b = data->batch(all);
  EvalSet set;
  set.input_ids = b.input_ids;
  set.attention_mask = b.attention_mask;
  set.targets = b.labels;
  set.source = path;
  set.format = "labelled jsonl";
  set.label_names = labels.names();
  return set;
}

void check_vocabulary(const EvalSet& set, int64_t vocab_size) {
  // A classification set's targets are labels, not token ids.
  const int64_t max_id = set.classification() ? set.input_ids.max().item<int64_t>()
                                              : std::max(set.input_ids.max().item<int64_t>(),
                                                         set.targets.max().item<int64_t>());
  if (max_id >= vocab_size)
    throw ConfigError(detail::concat(set.source, ": token id ", max_id,
                                     " is outside the model's vocabulary (", vocab_size, ")"));
}

}  // namespace switchyard
