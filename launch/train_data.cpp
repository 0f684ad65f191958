// See train_data.h. Token files are read once; classification texts are tokenized at bind(),
// when the model's label numbering is known.
#include "launch/train_data.h"

#include "common/errors.h"
#include "launch/model_architecture.h"
#include "trainer/text_corpus.h"
#include "trainer/token_file.h"

namespace switchyard {

LabelField label_field(const config::DataConfig& data) {
  return data.label() == config::LABEL_CATEGORY ? LabelField::kCategory : LabelField::kLanguage;
}

BpeTokenizer data_tokenizer(const config::DataConfig& data) {
  return BpeTokenizer::from_file(data.tokenizer_path().empty()
                                     ? SWITCHYARD_SOURCE_DIR "/trainer/tokenizer.json"
                                     : data.tokenizer_path());
}

LabelSet model_labels(const LoadedModel& m) {
  SY_CHECK(m.bert, "model_labels: not a classifier");
  const auto& names = m.bert->options().model().labels;
  if (names.empty())
    throw ConfigError("model.checkpoint: the classifier's config.json has no id2label, so its "
                      "outputs cannot be matched to the data's labels",
                      "model.checkpoint");
  return LabelSet::in_id_order(names, "config.json id2label");
}

namespace {

std::vector<TextRecord> read_labelled(const std::string& path) {
  std::vector<TextRecord> records = read_jsonl(path, {});
  if (records.empty()) throw ConfigError(path + ": no labelled texts");
  return records;
}

}  // namespace

TrainingData TrainingData::read(const RunConfig& config, config::ModelArch arch) {
  TrainingData d;
  d.config_ = config;
  const auto& data = config.data();
  const auto& t = config.train();
  d.classification_ = arch == config::BERT_MOE;
  if (!d.classification_) {
    d.packed_ = std::make_shared<PackedSequences>(
        read_token_file(data.train_path()),
        PackedSequencesOptions{.seq_len = t.seq_len(), .seed = t.seed()});
    if (!data.valid_path().empty())
      d.valid_ = read_eval_set(data.valid_path(),
                               {.seq_len = t.seq_len(), .max_sequences = t.eval_blocks()});
    return d;
  }
  d.train_records_ = read_labelled(data.train_path());
  std::vector<TextRecord> all = d.train_records_;
  if (!data.valid_path().empty())
    for (auto& r : read_labelled(data.valid_path())) all.push_back(std::move(r));
  d.data_labels_ = LabelSet::from_records(all, label_field(data)).names();
  return d;
}

void TrainingData::bind(const LoadedModel& m) {
  const int64_t vocab = model_architecture(m.arch).vocab_size(m);
  if (!classification_) {
    if (valid_) check_vocabulary(*valid_, vocab);
    return;
  }
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
  if (tokenizer.vocab_size() > vocab)
    throw ConfigError(detail::concat("data.tokenizer_path: the tokenizer has ",
                                     tokenizer.vocab_size(), " ids, the model's vocabulary ", vocab),
                      "data.tokenizer_path");
  if (!data.valid_path().empty())
    valid_ = read_classification_set(data.valid_path(), tokenizer, labels, rows,
                                     config_.train().eval_blocks());
}

int64_t TrainingData::size() const {
  return classification_ ? (rows_ ? rows_->size() : 0) : packed_->size();
}

TaskBatch TrainingData::batch(const BatchSampler::ShardBatch& shard) const {
  if (!classification_) {
    auto blocks = packed_->batch(shard.epoch, shard.indices);
    return causal_lm_batch(blocks);
  }
  SY_CHECK(rows_, "TrainingData::batch before bind");
  const ClassificationBatch b = rows_->batch(shard.indices);
  return {b.input_ids, b.attention_mask, b.labels};
}

std::string TrainingData::describe() const {
  if (!classification_)
    return detail::concat(packed_->size(), " blocks of ", packed_->seq_len() + 1, " tokens");
  return detail::concat(size(), " labelled texts of up to ", config_.data().max_len(),
                        " tokens (", num_labels_, " labels)");
}

}  // namespace switchyard
