// Rows are built at construction (ids truncated once), so a batch is a copy into a tensor.
#include "data/classification_dataset.h"

#include <algorithm>

#include "common/errors.h"

namespace switchyard {

std::string label_of(const TextRecord& record, LabelField field) {
  if (field == LabelField::kLanguage) return record.language;
  return record.language.empty() ? record.category : record.language + "/" + record.category;
}

LabelSet::LabelSet(std::vector<std::string> names) : names_(std::move(names)) {
  std::sort(names_.begin(), names_.end());
  names_.erase(std::unique(names_.begin(), names_.end()), names_.end());
}

LabelSet LabelSet::from_records(const std::vector<TextRecord>& records, LabelField field) {
  std::vector<std::string> names;
  names.reserve(records.size());
  for (const auto& r : records) names.push_back(label_of(r, field));
  return LabelSet(std::move(names));
}

LabelSet LabelSet::in_id_order(std::vector<std::string> names, const std::string& where) {
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw ConfigError(where + ": label names repeat");
  LabelSet set;
  set.names_ = std::move(names);
  return set;
}

const std::string& LabelSet::name(int64_t id) const {
  SY_CHECK(id >= 0 && id < size(), "label id ", id, " of ", size());
  return names_[size_t(id)];
}

int64_t LabelSet::id(const std::string& name) const {
  // Label sets are small (tens of names): a scan serves sorted and model-ordered sets alike.
  const auto it = std::find(names_.begin(), names_.end(), name);
  if (it == names_.end())
    throw ConfigError("label '" + name + "' is not among the " + std::to_string(size()) +
                      " labels" + (size() ? " (" + names_.front() + ", ...)" : std::string()));
  return it - names_.begin();
}

ClassificationDataset::ClassificationDataset(const std::vector<TextRecord>& records,
                                             const BpeTokenizer& tokenizer, const LabelSet& labels,
                                             const ClassificationOptions& options)
    : options_(options) {
  const bool has_cls = !options.cls_token.empty();
  if (options.max_len < (has_cls ? 2 : 1))
    throw ConfigError(
        detail::concat("classification: max_len ", options.max_len, " leaves no room for text"));
  pad_ = tokenizer.require_id(options.pad_token);
  const uint32_t cls = has_cls ? tokenizer.require_id(options.cls_token) : 0;
  std::vector<std::vector<uint32_t>> rows;
  rows.reserve(records.size());
  labels_.reserve(records.size());
  for (const auto& r : records) {
    std::vector<uint32_t> row;
    if (has_cls) row.push_back(cls);
    const std::vector<uint32_t> ids = tokenizer.encode(r.text);
    const size_t room = size_t(options.max_len) - row.size();
    row.insert(row.end(), ids.begin(), ids.begin() + std::ptrdiff_t(std::min(room, ids.size())));
    rows.push_back(std::move(row));
    labels_.push_back(labels.id(label_of(r, options.label)));
  }
  ids_ = TokenDocuments::from_vectors(rows, uint32_t(tokenizer.vocab_size()), std::nullopt);
}

ClassificationBatch ClassificationDataset::batch(std::span<const int64_t> indices) const {
  const int64_t b = int64_t(indices.size()), width = options_.max_len;
  ClassificationBatch out;
  out.input_ids = torch::full({b, width}, int64_t(pad_), torch::kLong);
  out.attention_mask = torch::zeros({b, width}, torch::kLong);
  out.labels = torch::empty({b}, torch::kLong);
  auto* ids = out.input_ids.data_ptr<int64_t>();
  auto* mask = out.attention_mask.data_ptr<int64_t>();
  auto* labels = out.labels.data_ptr<int64_t>();
  for (int64_t row = 0; row < b; ++row) {
    SY_CHECK(indices[size_t(row)] >= 0 && indices[size_t(row)] < size(), "record ",
             indices[size_t(row)], " of ", size());
    const auto src = ids_.document(indices[size_t(row)]);
    std::copy(src.begin(), src.end(), ids + row * width);
    std::fill_n(mask + row * width, src.size(), 1);
    labels[row] = labels_[size_t(indices[size_t(row)])];
  }
  return out;
}

}  // namespace switchyard
