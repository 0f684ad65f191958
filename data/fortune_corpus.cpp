// Reading rules mirrored by scripts/fortune_corpus.py (the tokenizer is trained on what that
// reads, and the parity test compares the two record by record).
#include "data/fortune_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_set>

#include "common/errors.h"
#include "data/utf8.h"

namespace switchyard {
namespace fs = std::filesystem;

std::vector<FortuneSource> debian_fortune_sources() {
  return {
      {"en", ".", "fortunes"},
      {"de", "de", "fortunes-de"},
      {"es", "es", "fortunes-es"},
      {"it", "it", "fortunes-it"},
      {"ru", "ru", "fortunes-ru"},
      {"zh", "chinese", "fortunes-zh"},
      {"zh", "song100", "fortunes-zh"},
      {"zh", "tang300", "fortunes-zh"},
      {"pl", "pl", "fortunes-pl"},
      {"cs", "cs", "fortunes-cs"},
      {"sk", "cs/klasik-sk", "fortunes-cs"},
      {"pt", "brasil", "fortunes-br"},
      {"bg", "bg", "fortunes-bg"},
      {"eo", "eo", "fortunes-eo"},
      {"ga", "ga", "fortunes-ga"},
  };
}

namespace {

std::string category_of(const fs::path& file) {
  std::string name = file.filename().string();
  if (name.ends_with(".fortunes")) name.resize(name.size() - std::string_view(".fortunes").size());
  return name;
}

/// Files of all sources, each with its language, in reading order.
std::vector<std::pair<std::string, fs::path>> source_files(const FortuneCorpusOptions& o) {
  std::set<fs::path> claimed;
  for (const auto& s : o.sources) claimed.insert((fs::path(o.root) / s.path).lexically_normal());
  std::vector<std::pair<std::string, fs::path>> files;
  for (const auto& s : o.sources) {
    const fs::path path = (fs::path(o.root) / s.path).lexically_normal();
    std::error_code ec;
    if (!fs::exists(path, ec))
      throw ConfigError(path.string() + ": missing (Debian package " + s.package +
                        "; launch/setup.sh installs it)");
    if (!fs::is_directory(path)) {
      files.emplace_back(s.language, path);
      continue;
    }
    std::vector<fs::path> names;
    for (const auto& entry : fs::directory_iterator(path)) {
      const fs::path& p = entry.path();
      const std::string name = p.filename().string();
      if (entry.is_symlink() || !entry.is_regular_file() || name.ends_with(".dat") ||
          name.ends_with(".u8") || claimed.count(p.lexically_normal()))
        continue;
      names.push_back(p);
    }
    std::sort(names.begin(), names.end(), [](const fs::path& a, const fs::path& b) {
      return a.filename().string() < b.filename().string();
    });
    for (auto& p : names) files.emplace_back(s.language, std::move(p));
  }
  return files;
}

/// Length of an ANSI CSI sequence (ESC [ parameters intermediates final) at text[i], or 0.
size_t csi_length(std::string_view text, size_t i) {
  if (text[i] != '\x1b' || i + 1 >= text.size() || text[i + 1] != '[') return 0;
  size_t j = i + 2;
  while (j < text.size() && text[j] >= 0x30 && text[j] <= 0x3F) ++j;
  while (j < text.size() && text[j] >= 0x20 && text[j] <= 0x2F) ++j;
  if (j < text.size() && text[j] >= 0x40 && text[j] <= 0x7E) return j + 1 - i;
  return 0;
}

/// The 1-based line of byte `offset`, for error messages.
size_t line_of(std::string_view text, size_t offset) {
  return size_t(std::count(text.begin(), text.begin() + std::ptrdiff_t(offset), '\n')) + 1;
}

}  // namespace

std::string clean_fortune_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (const size_t n = csi_length(text, i)) {
      i += n;
      continue;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\b') {
      // Delete the previous character (a whole UTF-8 sequence), never a newline.
      if (!out.empty() && out.back() != '\n') {
        size_t k = out.size() - 1;
        while (k > 0 && (static_cast<unsigned char>(out[k]) & 0xC0) == 0x80) --k;
        out.resize(k);
      }
    } else if (!((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F)) {
      out.push_back(char(c));
    }
    ++i;
  }
  return out;
}

std::vector<std::string> parse_fortune_records(std::string_view cleaned) {
  std::vector<std::string> records;
  auto finish = [&](std::string_view r) {
    const size_t begin = r.find_first_not_of('\n');
    if (begin == std::string_view::npos) return;
    const size_t end = r.find_last_not_of(" \t\n");
    if (end == std::string_view::npos || end < begin) return;
    records.emplace_back(r.substr(begin, end + 1 - begin));
  };
  size_t record_start = 0;
  for (size_t line_start = 0; line_start <= cleaned.size();) {
    size_t line_end = cleaned.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = cleaned.size();
    if (cleaned.substr(line_start, line_end - line_start) == "%") {
      // The record is the text before this line, less the newline that ends its last line.
      finish(cleaned.substr(record_start,
                            line_start > record_start ? line_start - 1 - record_start : 0));
      record_start = line_end + 1;
    }
    line_start = line_end + 1;
  }
  if (record_start < cleaned.size()) finish(cleaned.substr(record_start));
  return records;
}

std::vector<TextRecord> read_fortune_corpus(const FortuneCorpusOptions& options) {
  std::vector<TextRecord> records;
  std::unordered_set<std::string> seen;
  for (const auto& [language, path] : source_files(options)) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot open");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    const std::string raw = buffer.str();
    const size_t bad = utf8_invalid_at(raw);
    if (bad != std::string_view::npos)
      throw Error(detail::concat(path.string(), ":", line_of(raw, bad), ": not UTF-8"));
    const std::string category = category_of(path);
    for (auto& text : parse_fortune_records(clean_fortune_text(raw))) {
      if (options.drop_duplicates && !seen.insert(text).second) continue;
      records.push_back({std::move(text), category, language});
    }
  }
  return records;
}

}  // namespace switchyard
