// See train_model.h.
#include "launch/train_model.h"

#include "common/errors.h"
#include "models/safetensors.h"
#include "trainer/weight_init.h"

namespace switchyard {

LoadedModel load_training_model(const RunConfig& config, const std::string& dtype) {
  if (!config.model().has_init_config()) {
    LoadedModel m = load_model(config.model().checkpoint(), config, dtype);
    if (!m.model)
      throw ConfigError("model.arch: `switchyard train` trains Qwen2-MoE models; BERT-MoE "
                        "classification training is not there yet",
                        "model.arch");
    return m;
  }
  const Qwen2MoeConfig model_config = Qwen2MoeConfig::from_file(config.model().init_config());
  LoadedModel m;
  m.groups = make_process_groups(make_world_communicator(), config.parallel().expert_parallel());
  m.model = Qwen2MoeForCausalLM(Qwen2MoeOptions(model_config, m.groups)
                                    .router(config.router())
                                    .quant(config.model().quant()));
  init_for_pretraining(m.model, m.groups, model_config.initializer_range, config.train().seed());
  m.model->to(parse_dtype(dtype, model_config.dtype));
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
