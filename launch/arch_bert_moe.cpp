// The BERT-MoE entry of the architecture registry: a Hugging Face BERT encoder whose FFNs are
// upcycled into MoE blocks (model.num_experts experts every model.moe_layer_step layers, none
// when that is 0), with the sequence-classification head; eval logits are [sequences, labels].
#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "launch/model_architecture.h"

namespace switchyard {

ModelArchitecture bert_moe_architecture() {
  ModelArchitecture a;
  a.name = "bert_moe";
  a.build = [](LoadedModel& m, const std::string& json, const std::string& where) {
    const auto& model = m.config.model();
    if (model.quant().experts() != config::QUANT_NONE)
      throw ConfigError("model.quant.experts: quantized experts are not implemented for BERT_MOE",
                        "model.quant.experts");
    if (model.moe_layer_step() < 0)
      throw ConfigError("model.moe_layer_step: must be >= 0", "model.moe_layer_step");
    const bool moe = model.moe_layer_step() > 0;
    m.bert = BertMoeForSequenceClassification(
        BertMoeOptions(BertConfig::from_json(json, where), m.groups)
            .num_experts(moe ? model.num_experts() : 0)
            .moe_layer_step(moe ? model.moe_layer_step() : 1)
            .router(m.config.router())
            .top_k(m.config.router().top_k())
            .upcycle_noise(model.upcycle_noise())
            .seed(model.init_seed()));
    m.config_json = json;
  };
  a.load_hf_weights = [](LoadedModel& m, const SafetensorsCheckpoint& ckpt) {
    // A classifier whose config names other labels than the checkpoint's head was trained for
    // (switchyard train gave it the data's) keeps its fresh, seeded head: the encoder only.
    const int64_t labels = m.bert->options().model().num_labels;
    const bool new_head = ckpt.contains("classifier.weight") &&
                          ckpt.entry("classifier.weight").shape.at(0) != labels;
    if (new_head)
      load_hf_weights(*m.bert->bert, ckpt);
    else
      load_hf_weights(*m.bert, ckpt);
  };
  a.checkpoint_dtype = [](const LoadedModel& m) { return m.bert->options().model().dtype; };
  a.checkpoint_config_json = [](const LoadedModel& m, torch::Dtype dtype) {
    nlohmann::json j = nlohmann::json::parse(m.config_json);
    const std::string name = dtype == torch::kFloat      ? "float32"
                             : dtype == torch::kBFloat16 ? "bfloat16"
                                                         : "float16";
    j["torch_dtype"] = name;
    j["dtype"] = name;
    return j.dump(2);
  };
  a.export_hf = [](const LoadedModel&, const std::string&, torch::Dtype) {
    throw Error(
        "convert: BERT-MoE has no Hugging Face layout (its FFNs are MoE blocks); use --format "
        "switchyard");
  };
  a.logits = [](LoadedModel& m, const torch::Tensor& ids, const torch::Tensor& mask) {
    return m.bert->forward(ids, mask).logits;
  };
  a.vocab_size = [](const LoadedModel& m) { return m.bert->options().model().vocab_size; };
  a.task_model = [](const LoadedModel& m) { return TaskModel::sequence_classification(m.bert); };
  a.heads_follow_run = true;
  return a;
}

}  // namespace switchyard
