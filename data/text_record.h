// One document of a text corpus and the labels it carries: what every corpus reader returns and
// what tokenization, splitting and classification consume.
#pragma once

#include <string>

namespace switchyard {

/// `text` is valid UTF-8. For the fortune corpus `category` is the file a record came from and
/// `language` its folder's language ("de"); JSONL inputs set them from their fields.
struct TextRecord {
  std::string text;
  std::string category;
  std::string language;
};

}  // namespace switchyard
