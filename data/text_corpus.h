// Corpora users bring: plain text files and JSON Lines files of {"text": ..., "label": ...}.
#pragma once

#include <string>
#include <vector>

#include "data/text_record.h"

namespace switchyard {

enum class PlainTextLayout {
  kBlankLineSeparated,  ///< documents are runs of lines separated by blank lines (paragraphs)
  kOnePerLine,          ///< every non-blank line is a document
};

/// Records of a plain-text file take `category` (default: the file's name) and `language`.
struct PlainTextOptions {
  PlainTextLayout layout = PlainTextLayout::kBlankLineSeparated;
  std::string category;
  std::string language;
};

/// Documents of a UTF-8 text file. A line holding only spaces and tabs counts as blank; a CR
/// before a newline is dropped; a document keeps its inner newlines, with leading newlines and
/// trailing spaces, tabs and newlines stripped, as for fortunes. Throws ConfigError naming
/// FILE:LINE for text that is not UTF-8.
///   usage: auto docs = read_plain_text("book.txt", {});
std::vector<TextRecord> read_plain_text(const std::string& path, const PlainTextOptions& options);

/// Field names of a JSON Lines corpus.
struct JsonlOptions {
  std::string text_key = "text";          ///< required, a string
  std::string label_key = "label";        ///< optional, a string or an integer: the category
  std::string language_key = "language";  ///< optional, a string
};

/// One object per non-blank line. Throws ConfigError naming FILE:LINE for a line that is not a
/// JSON object, lacks the text string, or has a label that is neither string nor integer.
///   usage: auto docs = read_jsonl("reviews.jsonl", {});
std::vector<TextRecord> read_jsonl(const std::string& path, const JsonlOptions& options);

}  // namespace switchyard
