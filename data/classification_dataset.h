// Sequence classification data (e.g. BERT-MoE on the fortune corpus): each text tokenized once,
// truncated, padded to a fixed length with an attention mask, and labelled by its category or
// its language.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/text_record.h"
#include "data/token_documents.h"

namespace switchyard {

enum class LabelField {
  kLanguage,  ///< "de"
  kCategory,  ///< "de/witze": language/category (file names repeat across languages), or
              ///< the category alone for records without a language
};

/// The label a record carries under `field` (see LabelField).
std::string label_of(const TextRecord& record, LabelField field);

/// Label names, their ids their positions: sorted when built from a corpus (so every split
/// numbers labels the same way), or a model's own order (in_id_order).
///   usage: LabelSet labels = LabelSet::from_records(all_records, LabelField::kLanguage);
class LabelSet {
 public:
  LabelSet() = default;
  /// Sorts and removes duplicates.
  explicit LabelSet(std::vector<std::string> names);
  static LabelSet from_records(const std::vector<TextRecord>& records, LabelField field);
  /// A model's labels (config.json id2label) in id order, kept as given; `where` names the
  /// model in the error for repeated names.
  static LabelSet in_id_order(std::vector<std::string> names, const std::string& where);

  int64_t size() const { return int64_t(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  const std::string& name(int64_t id) const;
  /// Throws ConfigError for a label outside the set.
  int64_t id(const std::string& name) const;

 private:
  std::vector<std::string> names_;
};

struct ClassificationOptions {
  int64_t max_len = 128;  ///< ids per row, the <cls> token included; longer texts are cut
  LabelField label = LabelField::kLanguage;
  std::string cls_token = "<cls>";  ///< put first (BERT pools position 0); empty: none
  std::string pad_token = "<pad>";
};

/// input_ids and attention_mask are int64 [b, max_len] (mask 1 on real tokens), labels int64 [b].
struct ClassificationBatch {
  torch::Tensor input_ids, attention_mask, labels;
};

///   usage: ClassificationDataset train(train_records, tokenizer, labels, {.max_len = 64});
///          ClassificationBatch b = train.batch(sampler.next().indices);
class ClassificationDataset {
 public:
  /// Tokenizes every record. Throws ConfigError when the tokenizer lacks the <cls> or <pad>
  /// token, max_len leaves no room for text, or a record's label is not in `labels`.
  ClassificationDataset(const std::vector<TextRecord>& records, const BpeTokenizer& tokenizer,
                        const LabelSet& labels, const ClassificationOptions& options);

  int64_t size() const { return int64_t(labels_.size()); }
  /// Record i's ids as rows hold them: <cls>, then the text's ids cut to max_len.
  std::span<const uint32_t> ids(int64_t i) const { return ids_.document(i); }
  int64_t label(int64_t i) const { return labels_.at(size_t(i)); }
  ClassificationBatch batch(std::span<const int64_t> indices) const;

 private:
  ClassificationOptions options_;
  uint32_t pad_ = 0;
  TokenDocuments ids_;
  std::vector<int64_t> labels_;
};

}  // namespace switchyard
