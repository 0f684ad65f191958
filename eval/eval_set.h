// The evaluation set of a causal language model (rows of input ids with their next-token
// targets: a packed token file, token-id lines, or JSONL / plain text tokenized and packed) or
// of a sequence classifier (labelled JSONL texts, tokenized and padded).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/classification_dataset.h"

namespace switchyard {

/// N rows of S positions. Causal LM: position s of row n predicts targets[n][s] from
/// input_ids[n][..s]. Classification: row n is labelled targets[n].
struct EvalSet {
  torch::Tensor input_ids;               ///< [N, S] int64
  torch::Tensor attention_mask;          ///< [N, S] int64, 1 on real tokens (0: padding)
  torch::Tensor targets;                 ///< [N, S] next token ids (-1: none), or [N] label ids
  std::string source;                    ///< the file, for reports
  std::string format;                    ///< "token file", "token lines" or "labelled jsonl"
  std::vector<std::string> label_names;  ///< classification: the labels in id order

  bool classification() const { return targets.dim() == 1; }

  int64_t rows() const { return input_ids.size(0); }
  int64_t real_tokens() const { return attention_mask.sum().item<int64_t>(); }
  int64_t predicted_tokens() const { return targets.ge(0).sum().item<int64_t>(); }
};

struct EvalSetOptions {
  int64_t seq_len = 128;                    ///< S for packed documents: blocks of S + 1 tokens
  int64_t max_sequences = 0;                ///< keep the first rows only; 0: all
  const BpeTokenizer* tokenizer = nullptr;  ///< for text files (JSONL, plain text)
};

/// What an evaluation file holds, from its first bytes: a token file (its magic), JSON Lines
/// (the first non-blank line opens an object), token-id lines (digits and spaces) or plain
/// text (documents separated by blank lines).
enum class EvalFileKind { kTokenFile, kTokenLines, kJsonl, kPlainText };
EvalFileKind eval_file_kind(const std::string& path);

/// Reads PATH for a causal LM: a token file, or JSONL / plain text tokenized with
/// options.tokenizer, is packed in document order, documents joined by EOS, into blocks of S + 1
/// tokens overlapping by one, so every token but the first is predicted exactly once; token-id
/// lines are one row each. Throws ConfigError naming PATH for an unreadable or empty set.
///   usage: EvalSet set = read_eval_set("data/valid.tok", {.seq_len = 256});
EvalSet read_eval_set(const std::string& path, const EvalSetOptions& options);

/// Reads a JSON Lines file of labelled texts (`switchyard data prepare` writes DIR/valid.jsonl)
/// as a classification set: each text tokenized into one row as `rows` says, its label
/// (language or category) numbered by `labels`, the model's; with max_sequences > 0, that many
/// records evenly spaced through the file (it is ordered by source). Throws ConfigError naming PATH
/// for an unreadable or empty file and for a label the model does not have.
///   usage: EvalSet set = read_classification_set("data/valid.jsonl", tokenizer, labels,
///                                                {.max_len = 64}, 0);
EvalSet read_classification_set(const std::string& path, const BpeTokenizer& tokenizer,
                                const LabelSet& labels, const ClassificationOptions& rows,
                                int64_t max_sequences);

/// Throws ConfigError naming the set's file when an input or target id is not below vocab_size.
void check_vocabulary(const EvalSet& set, int64_t vocab_size);

}  // namespace switchyard
