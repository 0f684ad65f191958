// Sequence-classification training data: labelled JSON Lines read at once (their labels may name
// a new classifier's outputs), tokenized and numbered at bind(), when the model's label
// numbering is known.
#include "common/errors.h"
#include "data/data_options.h"
#include "data/text_corpus.h"
#include "trainer/training_data.h"

namespace switchyard {
namespace {

std::vector<TextRecord> read_labelled(const std::string& path) {
  std::vector<TextRecord> records = read_jsonl(path, {});
  if (records.empty()) throw ConfigError(path + ": no labelled texts");
  return records;
}

class ClassificationData final : public TrainingData {
 public:
  explicit ClassificationData(const RunConfig& config) : config_(config) {
    const auto& data = config.data();
    train_records_ = read_labelled(data.train_path());
    std::vector<TextRecord> all = train_records_;
    if (!data.valid_path().empty())
      for (auto& r : read_labelled(data.valid_path())) all.push_back(std::move(r));
    data_labels_ = LabelSet::from_records(all, label_field(data)).names();
  }

  const std::vector<std::string>& data_labels() const override { return data_labels_; }

  void bind(const LoadedModel& m) override {
    const auto& data = config_.data();
    const LabelSet labels = model_labels(m);
    num_labels_ = labels.size();
    const BpeTokenizer tokenizer = data_tokenizer(data);
    const ClassificationOptions rows{.max_len = data.max_len(), .label = label_field(data)};
    try {
      rows_ = std::make_shared<ClassificationDataset>(train_records_, tokenizer, labels, rows);
    } catch (const ConfigError& e) {
      throw ConfigError(data.train_path() + ": " + e.what(), "data.train_path");
    }
    train_records_.clear();
    const int64_t vocab = m.model->vocab_size();
    if (tokenizer.vocab_size() > vocab)
      throw ConfigError(
          detail::concat("data.tokenizer_path: the tokenizer has ", tokenizer.vocab_size(),
                         " ids, the model's vocabulary ", vocab),
          "data.tokenizer_path");
    if (!data.valid_path().empty())
      valid_ = read_classification_set(data.valid_path(), tokenizer, labels, rows,
                                       config_.train().eval_blocks());
  }

  int64_t size() const override { return rows_ ? rows_->size() : 0; }
  TaskBatch batch(const BatchSampler::ShardBatch& shard) const override {
    SY_CHECK(rows_, "TrainingData::batch before bind");
    const ClassificationBatch b = rows_->batch(shard.indices);
    return {b.input_ids, b.attention_mask, b.labels};
  }
  std::string describe() const override {
    return detail::concat(size(), " labelled texts of up to ", config_.data().max_len(),
                          " tokens (", num_labels_, " labels)");
  }

 private:
  RunConfig config_;
  std::vector<TextRecord> train_records_;  ///< until bind
  std::vector<std::string> data_labels_;
  std::shared_ptr<ClassificationDataset> rows_;  ///< after bind
  int64_t num_labels_ = 0;
};

}  // namespace

std::unique_ptr<TrainingData> read_classification_data(const RunConfig& config) {
  return std::make_unique<ClassificationData>(config);
}

}  // namespace switchyard
