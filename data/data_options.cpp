// See data_options.h.
#include "data/data_options.h"

namespace switchyard {

LabelField label_field(const config::DataConfig& data) {
  return data.label() == config::LABEL_CATEGORY ? LabelField::kCategory : LabelField::kLanguage;
}

std::string default_tokenizer_path() {
  return SWITCHYARD_SOURCE_DIR "/data/tokenizer.json";
}

BpeTokenizer data_tokenizer(const config::DataConfig& data) {
  return BpeTokenizer::from_file(data.tokenizer_path().empty() ? default_tokenizer_path()
                                                               : data.tokenizer_path());
}

}  // namespace switchyard
