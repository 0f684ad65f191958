// The BERT-MoE entry of the architecture registry: a Hugging Face BERT encoder whose FFNs are
// upcycled into MoE blocks (model.num_experts experts every model.moe_layer_step layers, none
// when that is 0), with the sequence-classification head; eval logits are [sequences, labels].
// Its labels may come from the training data (a new head); it has no hub layout and no original
// gates.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "common/errors.h"
#include "models/bert_moe.h"
#include "models/model_architecture.h"

namespace switchyard {
namespace {

class BertMoeModel final : public ArchitectureModel {
 public:
  BertMoeModel(BertMoeForSequenceClassification model, std::string config_json)
      : model_(std::move(model)), config_json_(std::move(config_json)) {}

  torch::nn::Module& module() const override { return *model_.ptr(); }
  TaskModel task_model() const override { return TaskModel::sequence_classification(model_); }
  void load_hf_weights(const SafetensorsCheckpoint& ckpt) override {
    // A classifier whose config names other labels than the checkpoint's head was trained for
    // (switchyard train gave it the data's) keeps its fresh, seeded head: the encoder only.
    const int64_t labels = model_->options().model().num_labels;
    const bool new_head =
        ckpt.contains("classifier.weight") && ckpt.entry("classifier.weight").shape.at(0) != labels;
    if (new_head)
      switchyard::load_hf_weights(*model_->bert, ckpt);
    else
      switchyard::load_hf_weights(*model_, ckpt);
  }
  torch::Dtype checkpoint_dtype() const override { return model_->options().model().dtype; }
  std::string config_json(torch::Dtype dtype) const override {
    nlohmann::json j = nlohmann::json::parse(config_json_);
    const std::string name = dtype == torch::kFloat      ? "float32"
                             : dtype == torch::kBFloat16 ? "bfloat16"
                                                         : "float16";
    j["torch_dtype"] = name;
    j["dtype"] = name;
    return j.dump(2);
  }
  void export_hf(const std::string&, torch::Dtype) const override {
    throw Error("BERT-MoE has no Hugging Face layout");  // refused before: ArchFeature::kHfExport
  }
  torch::Tensor logits(const torch::Tensor& ids, const torch::Tensor& mask) override {
    return model_->forward(ids, mask).logits;
  }
  int64_t vocab_size() const override { return model_->options().model().vocab_size; }
  std::vector<std::string> labels() const override { return model_->options().model().labels; }

 private:
  BertMoeForSequenceClassification model_;
  std::string config_json_;  ///< as read: config_json() keeps every field transformers wrote
};

class BertMoeArchitecture final : public ModelArchitecture {
 public:
  std::string name() const override { return "bert_moe"; }
  Task task() const override { return Task::kSequenceClassification; }

  std::unique_ptr<ArchitectureModel> build(const std::string& json, const std::string& where,
                                           RunConfig& config,
                                           const ProcessGroups& groups) const override {
    const auto& model = config.model();
    if (model.quant().experts() != config::QUANT_NONE)
      throw ConfigError("model.quant.experts: quantized experts are not implemented for BERT_MOE",
                        "model.quant.experts");
    if (config.train().recompute_layers())
      throw ConfigError(
          "train.recompute_layers: layer recomputation is not implemented for BERT_MOE",
          "train.recompute_layers");
    if (model.moe_layer_step() < 0)
      throw ConfigError("model.moe_layer_step: must be >= 0", "model.moe_layer_step");
    const bool moe = model.moe_layer_step() > 0;
    BertMoeForSequenceClassification bert(
        BertMoeOptions(BertConfig::from_json(json, where), groups)
            .num_experts(moe ? model.num_experts() : 0)
            .moe_layer_step(moe ? model.moe_layer_step() : 1)
            .router(config.router())
            .top_k(config.router().top_k())
            .upcycle_noise(model.upcycle_noise())
            .placement(placement_from_config(config.parallel().placement()))
            .seed(model.init_seed()));
    return std::make_unique<BertMoeModel>(std::move(bert), json);
  }
  torch::Dtype declared_dtype(const std::string& json, const std::string& where) const override {
    return BertConfig::from_json(json, where).dtype;
  }
  // Its routers, pooler and new heads, which no checkpoint holds, are drawn from the seeded
  // stream of model.init_seed after the banks' draws: built without those draws, or in another
  // dtype, a run's untrained pooler would differ between training and a later eval.
  bool builds_for_loading() const override { return false; }

  std::optional<std::string> refusal(ArchFeature feature) const override {
    switch (feature) {
      case ArchFeature::kRouterDistillation:
        return "router distillation reads Hugging Face gates (mlp.gate.weight), which BERT-MoE "
               "checkpoints do not have";
      case ArchFeature::kHfExport:
        return "BERT-MoE has no Hugging Face layout (its FFNs are MoE blocks); its Switchyard "
               "checkpoint (convert --format switchyard, or the run folder) is its checkpoint";
    }
    return std::nullopt;
  }

  std::string with_data_labels(const std::string& json, const std::vector<std::string>& labels,
                               const std::string& where) const override {
    if (labels.empty()) throw ConfigError(where + ": no labels in the training data");
    nlohmann::json j = nlohmann::json::parse(json);
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

  bool covers_data_labels(const std::string& json, const std::vector<std::string>& data_labels,
                          const std::string& where) const override {
    const auto names = BertConfig::from_json(json, where).labels;
    return std::all_of(data_labels.begin(), data_labels.end(), [&](const auto& l) {
      return std::find(names.begin(), names.end(), l) != names.end();
    });
  }

  bool heads_follow_run() const override { return true; }
};

}  // namespace

std::unique_ptr<ModelArchitecture> bert_moe_architecture() {
  return std::make_unique<BertMoeArchitecture>();
}

}  // namespace switchyard
