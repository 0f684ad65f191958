// See train_model.h.
#include "launch/train_model.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "launch/compute_device.h"
#include "launch/model_architecture.h"
#include "models/safetensors.h"
#include "models/switchyard_checkpoint.h"
#include "trainer/weight_init.h"

namespace switchyard {

namespace {

// config.json with the classifier's labels set from the data: id2label, label2id, num_labels.
std::string with_labels(const std::string& text, const std::vector<std::string>& labels,
                        const std::string& where) {
  if (labels.empty()) throw ConfigError(where + ": no labels in the training data");
  nlohmann::json j = nlohmann::json::parse(text);
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (size_t i = 0; i < labels.size(); ++i) {
    id2label[std::to_string(i)] = labels[i];
    label2id[labels[i]] = i;
  }
  j["id2label"] = id2label;
  j["label2id"] = label2id;
  j["num_labels"] = labels.size();
  return j.dump(2);
}

bool is_hf_folder(const std::string& dir) {
  return std::filesystem::exists(std::filesystem::path(dir) / "config.json") &&
         !is_switchyard_checkpoint(dir);
}

// A BERT-MoE from a Hugging Face folder: as it is when its id2label names every label of the
// data, else with the data's labels and a new head.
LoadedModel load_bert_for_labels(const RunConfig& config, const std::string& dtype,
                                 const std::vector<std::string>& data_labels) {
  const std::string dir = config.model().checkpoint();
  const std::string file = dir + "/config.json";
  const std::string json = read_text_file(file);
  const auto& names = BertConfig::from_json(json, file).labels;
  const bool covered = std::all_of(data_labels.begin(), data_labels.end(), [&](const auto& l) {
    return std::find(names.begin(), names.end(), l) != names.end();
  });
  if (covered) return load_model(dir, config, dtype);
  return load_hf_model(dir, config, dtype, with_labels(json, data_labels, file));
}

}  // namespace

bool model_needs_data_labels(const RunConfig& config) {
  const auto& model = config.model();
  return model.has_init_config() ||
         (model.arch() == config::BERT_MOE && is_hf_folder(model.checkpoint()));
}

LoadedModel load_training_model(const RunConfig& config, const std::string& dtype,
                                const std::vector<std::string>& data_labels) {
  if (!config.model().has_init_config()) {
    if (config.model().arch() == config::BERT_MOE && is_hf_folder(config.model().checkpoint()))
      return load_bert_for_labels(config, dtype, data_labels);
    return load_model(config.model().checkpoint(), config, dtype);
  }
  const std::string& path = config.model().init_config();
  std::string json = read_text_file(path);
  const auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw ConfigError(path + ": not JSON", "model.init_config");
  if (config.model().arch() == config::BERT_MOE) json = with_labels(json, data_labels, path);
  LoadedModel m;
  m.config = config;
  m.arch = config.model().arch();
  const ModelArchitecture& a = model_architecture(m.arch);
  m.groups = make_process_groups(compute_world(config.parallel().device()).world,
                                 config.parallel().expert_parallel());
  a.build(m, json, path);
  const double std = parsed.value("initializer_range", 0.02);
  init_for_pretraining(a.task_model(m), m.groups, std, config.train().seed());
  m.module().to(parse_dtype(dtype, a.checkpoint_dtype(m)));
  place_on_compute_device(m);
  return m;
}

std::vector<torch::Tensor> checkpoint_gates(const Qwen2MoeForCausalLMImpl& model,
                                            const std::string& dir) {
  const SafetensorsCheckpoint ckpt(dir);
  std::vector<torch::Tensor> gates;
  const auto& layers = model.layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i]->moe) continue;
    const std::string name = "model.layers." + std::to_string(i) + ".mlp.gate.weight";
    SY_CHECK(ckpt.contains(name), dir, ": no ", name, " to distil the router from");
    gates.push_back(ckpt.get(name).to(torch::kFloat));
  }
  return gates;
}

}  // namespace switchyard
