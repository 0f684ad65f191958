// The model a training run starts from: a checkpoint (fine-tuning) or a config.json with fresh
// weights (training from scratch), labelled for the data where its task has labels.
#pragma once

#include <string>
#include <vector>

#include "models/load_model.h"

namespace switchyard {

/// model.checkpoint (a Hugging Face folder, a Switchyard checkpoint or a run folder) loaded as
/// the run config asks, or model.init_config built from scratch with transformers'
/// initialisation drawn from train.seed (the same weights at every EP size). A model built from
/// scratch gets `data_labels` as its outputs where its task has labels (TrainingData::
/// data_labels); so does one fine-tuned from a Hugging Face folder whose outputs do not cover
/// them, with a new head seeded by model.init_seed (ModelArchitecture::covers_data_labels).
LoadedModel load_training_model(const RunConfig& config, const std::string& dtype,
                                const std::vector<std::string>& data_labels);

/// The architecture the run trains: model.arch for a model built from scratch or a Hugging Face
/// folder, the checkpoint's own otherwise (models/load_model.h model_arch_at).
config::ModelArch training_arch(const RunConfig& config);

}  // namespace switchyard
