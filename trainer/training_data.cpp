// See training_data.h: the reader of each task's data, one line per task.
#include "trainer/training_data.h"

#include <functional>
#include <map>

#include "common/errors.h"

namespace switchyard {
namespace {

struct TaskDataEntry {
  std::string file_kind;
  std::function<std::unique_ptr<TrainingData>(const RunConfig&)> read;
};

const TaskDataEntry& task_data_entry(Task task) {
  static const std::map<Task, TaskDataEntry> entries = {
      {Task::kCausalLm, {"token file", read_causal_lm_data}},
      {Task::kSequenceClassification, {"labelled JSONL file", read_classification_data}},
  };
  auto it = entries.find(task);
  SY_CHECK(it != entries.end(), "no training data reader for task ", int(task));
  return it->second;
}

}  // namespace

LabelSet model_labels(const LoadedModel& m) {
  const auto names = m.model->labels();
  if (names.empty())
    throw ConfigError(
        "model.checkpoint: the classifier's config.json has no id2label, so its "
        "outputs cannot be matched to the data's labels",
        "model.checkpoint");
  return LabelSet::in_id_order(names, "config.json id2label");
}

std::unique_ptr<TrainingData> TrainingData::read(const RunConfig& config, Task task) {
  return task_data_entry(task).read(config);
}

std::string TrainingData::file_kind(Task task) {
  return task_data_entry(task).file_kind;
}

}  // namespace switchyard
