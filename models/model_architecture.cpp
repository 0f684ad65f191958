// See model_architecture.h. The registry and the defaults of architectures without labels.
#include "models/model_architecture.h"

#include <map>

#include "common/errors.h"

namespace switchyard {

std::vector<torch::Tensor> ArchitectureModel::original_gates(const std::string& dir) const {
  throw Error("checkpoint " + dir + ": this architecture has no original gates to distil from");
}

std::optional<std::string> ModelArchitecture::refusal(ArchFeature) const {
  return std::nullopt;
}

std::string ModelArchitecture::with_data_labels(const std::string& json,
                                                const std::vector<std::string>&,
                                                const std::string&) const {
  return json;
}

bool ModelArchitecture::covers_data_labels(const std::string&, const std::vector<std::string>&,
                                           const std::string&) const {
  return true;
}

void ModelArchitecture::require(ArchFeature feature, const std::string& option) const {
  if (auto why = refusal(feature)) throw ConfigError(option + ": " + *why, option);
}

const ModelArchitecture& model_architecture(config::ModelArch arch) {
  // One line per architecture; built once, never destroyed (used until exit).
  static const auto* registry =
      new std::map<config::ModelArch, std::unique_ptr<ModelArchitecture>>([] {
        std::map<config::ModelArch, std::unique_ptr<ModelArchitecture>> r;
        r[config::QWEN2_MOE] = qwen2_moe_architecture();
        r[config::BERT_MOE] = bert_moe_architecture();
        return r;
      }());
  auto it = registry->find(arch);
  if (it == registry->end()) {
    std::string known;
    for (const auto& [a, entry] : *registry)
      known += (known.empty() ? "" : " or ") + config::ModelArch_Name(a);
    throw ConfigError("model.arch = " + config::ModelArch_Name(arch) + ": expected " + known,
                      "model.arch");
  }
  return *it->second;
}

}  // namespace switchyard
