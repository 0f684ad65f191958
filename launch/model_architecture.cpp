// See model_architecture.h.
#include "launch/model_architecture.h"

#include <map>

#include "common/errors.h"

namespace switchyard {

const ModelArchitecture& model_architecture(config::ModelArch arch) {
  static const std::map<config::ModelArch, ModelArchitecture> registry = {
      {config::QWEN2_MOE, qwen2_moe_architecture()},
      {config::BERT_MOE, bert_moe_architecture()},
  };
  auto it = registry.find(arch);
  if (it == registry.end())
    throw ConfigError(
        "model.arch = " + config::ModelArch_Name(arch) + ": expected QWEN2_MOE or BERT_MOE",
        "model.arch");
  return it->second;
}

}  // namespace switchyard
