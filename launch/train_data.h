// What `switchyard train` reads, as its model's task needs it: packed token files for causal
// LMs, labelled JSON Lines for sequence classifiers; the micro-batches the sampler asks for and
// the validation set.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "eval/eval_set.h"
#include "launch/hf_model.h"
#include "models/task_model.h"
#include "trainer/batch_sampler.h"
#include "trainer/bpe_tokenizer.h"
#include "trainer/classification_dataset.h"
#include "trainer/packed_sequences.h"

namespace switchyard {

/// The classification label field data.label names.
LabelField label_field(const config::DataConfig& data);

/// The tokenizer data.tokenizer_path names (default: the bundled trainer/tokenizer.json).
BpeTokenizer data_tokenizer(const config::DataConfig& data);

/// A classifier's labels in id order, from its config.json id2label. Throws ConfigError when the
/// model does not name its labels.
LabelSet model_labels(const LoadedModel& m);

///   usage: TrainingData data = TrainingData::read(config, config::BERT_MOE);
///          LoadedModel m = load_training_model(config, dtype, data.data_labels());
///          data.bind(m);
///          TaskBatch b = data.batch(sampler.next());
class TrainingData {
 public:
  /// Reads data.train_path (and data.valid_path) as `arch` trains: token files for QWEN2_MOE,
  /// labelled JSONL for BERT_MOE. Throws ConfigError naming the file for unreadable or empty
  /// data.
  static TrainingData read(const RunConfig& config, config::ModelArch arch);

  /// Classification: the labels the training and validation records carry, sorted (what a
  /// classifier built from scratch gets as id2label); empty for causal LMs.
  const std::vector<std::string>& data_labels() const { return data_labels_; }
  /// Ties the data to the loaded model: classification rows are numbered by the model's labels
  /// and tokenized; token ids are checked against the vocabulary. Throws ConfigError naming the
  /// file for a label or token the model does not know.
  void bind(const LoadedModel& m);

  /// Samples per epoch: packed blocks or labelled records.
  int64_t size() const;
  /// This rank's micro-batch for the sampler's shard (after bind).
  TaskBatch batch(const BatchSampler::ShardBatch& shard) const;
  /// The validation set (after bind), when data.valid_path is set.
  const std::optional<EvalSet>& valid() const { return valid_; }
  /// "1234 blocks of 129 tokens", "5000 labelled texts of up to 64 tokens (12 labels)".
  std::string describe() const;

 private:
  RunConfig config_;
  bool classification_ = false;
  std::shared_ptr<PackedSequences> packed_;  ///< causal LM
  std::vector<TextRecord> train_records_;    ///< classification, until bind
  std::vector<std::string> data_labels_;
  std::shared_ptr<ClassificationDataset> rows_;  ///< classification, after bind
  int64_t num_labels_ = 0;
  std::optional<EvalSet> valid_;
};

}  // namespace switchyard
