// See training_model.h.
#include "trainer/training_model.h"

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "models/safetensors.h"
#include "trainer/weight_init.h"

namespace switchyard {

config::ModelArch training_arch(const RunConfig& config) {
  if (config.model().has_init_config()) return config.model().arch();
  return model_arch_at(config.model().checkpoint(), config);
}

LoadedModel load_training_model(const RunConfig& config, const std::string& dtype,
                                const std::vector<std::string>& data_labels) {
  const ModelArchitecture& arch = model_architecture(config.model().arch());
  if (!config.model().has_init_config()) {
    const std::string& dir = config.model().checkpoint();
    if (is_hf_folder(dir)) {
      const std::string file = dir + "/config.json";
      const std::string json = read_text_file(file);
      if (!arch.covers_data_labels(json, data_labels, file))
        return load_hf_model(dir, config, dtype, arch.with_data_labels(json, data_labels, file));
    }
    return load_model(dir, config, dtype);
  }
  const std::string& path = config.model().init_config();
  const std::string text = read_text_file(path);
  const auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw ConfigError(path + ": not JSON", "model.init_config");
  LoadedModel m = build_model(arch.with_data_labels(text, data_labels, path), path, config);
  const double std = parsed.value("initializer_range", 0.02);
  init_for_pretraining(m.task_model(), m.groups, std, config.train().seed());
  place_on_compute_device(m, parse_dtype(dtype, m.model->checkpoint_dtype()));
  return m;
}

}  // namespace switchyard
