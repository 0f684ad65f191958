// What the run config's data section means to the data pipeline: the tokenizer it names and the
// field a classifier learns (shared by training and `eval`).
#pragma once

#include "configs/run_config.h"
#include "data/bpe_tokenizer.h"
#include "data/classification_dataset.h"

namespace switchyard {

/// The classification label field data.label names.
LabelField label_field(const config::DataConfig& data);

/// The tokenizer data.tokenizer_path names (default: the bundled data/tokenizer.json).
BpeTokenizer data_tokenizer(const config::DataConfig& data);

/// The bundled tokenizer's path in this source tree.
std::string default_tokenizer_path();

}  // namespace switchyard
