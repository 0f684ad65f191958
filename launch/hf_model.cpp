// See hf_model.h.
#include "launch/hf_model.h"

#include <filesystem>

#include "common/errors.h"

namespace switchyard {

torch::Dtype parse_dtype(const std::string& name, torch::Dtype checkpoint_dtype) {
  if (name == "checkpoint") return checkpoint_dtype;
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  throw ConfigError("--dtype " + name + ": expected checkpoint, float32, bfloat16 or float16");
}

LoadedModel load_hf_model(const std::string& dir, const RunConfig& config,
                          const std::string& dtype) {
  if (!std::filesystem::is_directory(dir))
    throw ConfigError("--model " + dir + ": not a Hugging Face checkpoint folder");
  const Qwen2MoeConfig model_config = Qwen2MoeConfig::from_file(dir + "/config.json");
  const torch::Dtype compute = parse_dtype(dtype, model_config.dtype);
  LoadedModel m;
  m.groups = make_process_groups(make_world_communicator(), config.parallel().expert_parallel());
  m.model = Qwen2MoeForCausalLM(Qwen2MoeOptions(model_config, m.groups)
                                    .router(config.router())
                                    .quant(config.model().quant()));
  load_hf_weights(*m.model, SafetensorsCheckpoint(dir));
  m.model->to(compute);
  return m;
}

}  // namespace switchyard
