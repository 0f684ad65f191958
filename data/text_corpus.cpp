// Both readers are strict: a line they cannot read is an error at that line, never a document
// silently dropped.
#include "data/text_corpus.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "data/utf8.h"

namespace switchyard {
namespace {

std::ifstream open_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open");
  return in;
}

bool blank(const std::string& line) {
  return line.find_first_not_of(" \t") == std::string::npos;
}

void check_utf8(const std::string& line, const std::string& path, int64_t line_no) {
  const size_t bad = utf8_invalid_at(line);
  if (bad != std::string::npos)
    throw ConfigError(detail::concat(path, ":", line_no, ":", bad + 1, ": not UTF-8"));
}

std::string trimmed(const std::string& doc) {
  const size_t begin = doc.find_first_not_of('\n');
  const size_t end = doc.find_last_not_of(" \t\n");
  if (begin == std::string::npos || end == std::string::npos) return {};
  return doc.substr(begin, end + 1 - begin);
}

}  // namespace

std::vector<TextRecord> read_plain_text(const std::string& path, const PlainTextOptions& options) {
  std::ifstream in = open_text(path);
  const std::string category =
      options.category.empty() ? std::filesystem::path(path).filename().string() : options.category;
  std::vector<TextRecord> records;
  std::string doc, line;
  auto finish = [&] {
    std::string text = trimmed(doc);
    if (!text.empty()) records.push_back({std::move(text), category, options.language});
    doc.clear();
  };
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    check_utf8(line, path, line_no);
    if (blank(line)) {
      finish();
      continue;
    }
    if (options.layout == PlainTextLayout::kOnePerLine) {
      doc = line;
      finish();
      continue;
    }
    if (!doc.empty()) doc.push_back('\n');
    doc += line;
  }
  finish();
  return records;
}

std::vector<TextRecord> read_jsonl(const std::string& path, const JsonlOptions& options) {
  using nlohmann::json;
  std::ifstream in = open_text(path);
  std::vector<TextRecord> records;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (blank(line) || line == "\r") continue;
    auto fail = [&](const std::string& why) {
      return ConfigError(detail::concat(path, ":", line_no, ": ", why));
    };
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {  // a syntax error, or a number out of double's range
      throw fail(std::string("not JSON: ") + e.what());
    }
    if (!j.is_object()) throw fail("not a JSON object");
    if (!j.contains(options.text_key) || !j[options.text_key].is_string())
      throw fail("no \"" + options.text_key + "\" string");
    TextRecord r;
    r.text = j[options.text_key].get<std::string>();
    if (j.contains(options.label_key)) {
      const json& label = j[options.label_key];
      if (label.is_string())
        r.category = label.get<std::string>();
      else if (label.is_number_integer())
        r.category = std::to_string(label.get<int64_t>());
      else
        throw fail("\"" + options.label_key + "\" is neither a string nor an integer");
    }
    if (j.contains(options.language_key)) {
      if (!j[options.language_key].is_string())
        throw fail("\"" + options.language_key + "\" is not a string");
      r.language = j[options.language_key].get<std::string>();
    }
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace switchyard
