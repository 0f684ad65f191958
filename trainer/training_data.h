// What a training run reads, as its model's task needs it: packed token files for causal LMs,
// labelled JSON Lines for sequence classifiers; the micro-batches the sampler asks for and the
// validation set. One implementation per task (trainer/causal_lm_data.cpp,
// trainer/classification_data.cpp), chosen by the task the architecture names.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "data/batch_sampler.h"
#include "data/classification_dataset.h"
#include "eval/eval_set.h"
#include "models/load_model.h"

namespace switchyard {

/// A classifier's labels in id order, from its config.json id2label. Throws ConfigError when the
/// model does not name its labels.
LabelSet model_labels(const LoadedModel& m);

///   usage: auto data = TrainingData::read(config, Task::kSequenceClassification);
///          LoadedModel m = load_training_model(config, dtype, data->data_labels());
///          data->bind(m);
///          TaskBatch b = data->batch(sampler.next());
class TrainingData {
 public:
  virtual ~TrainingData() = default;

  /// Reads data.train_path (and data.valid_path) as `task` trains. Throws ConfigError naming the
  /// file for unreadable or empty data.
  static std::unique_ptr<TrainingData> read(const RunConfig& config, Task task);
  /// What a file of `task`'s data is called in messages: "token file", "labelled JSONL file".
  static std::string file_kind(Task task);

  /// Classification: the labels the training and validation records carry, sorted (what a
  /// classifier built from scratch gets as id2label); empty for tasks without labels.
  virtual const std::vector<std::string>& data_labels() const { return no_labels_; }
  /// Ties the data to the loaded model: classification rows are numbered by the model's labels
  /// and tokenized; token ids are checked against the vocabulary. Throws ConfigError naming the
  /// file for a label or token the model does not know.
  virtual void bind(const LoadedModel& m) = 0;
  /// Samples per epoch: packed blocks or labelled records.
  virtual int64_t size() const = 0;
  /// This rank's micro-batch for the sampler's shard (after bind).
  virtual TaskBatch batch(const BatchSampler::ShardBatch& shard) const = 0;
  /// "1234 blocks of 129 tokens", "5000 labelled texts of up to 64 tokens (12 labels)".
  virtual std::string describe() const = 0;

  /// The validation set (after bind), when data.valid_path is set.
  const std::optional<EvalSet>& valid() const { return valid_; }

 protected:
  std::optional<EvalSet> valid_;

 private:
  std::vector<std::string> no_labels_;
};

std::unique_ptr<TrainingData> read_causal_lm_data(const RunConfig& config);  // causal_lm_data.cpp
std::unique_ptr<TrainingData> read_classification_data(
    const RunConfig& config);  // classification_data.cpp

}  // namespace switchyard
