// Table rendering.
#include "common/table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "common/errors.h"

namespace switchyard {

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

Cell::Cell(const std::string& s) : text(s), json(json_quote(s)) {}
Cell::Cell(const char* s) : Cell(std::string(s)) {}
Cell::Cell(int64_t v) : text(std::to_string(v)), json(std::to_string(v)) {}
Cell::Cell(double v, int precision) {
  if (!std::isfinite(v)) {
    text = "nan";
    json = "null";
    return;
  }
  std::ostringstream t, j;
  t << std::fixed << std::setprecision(precision) << v;
  j << std::setprecision(8) << v;
  text = t.str();
  json = j.str();
}

void Table::add(std::vector<Cell> row) {
  SY_CHECK(row.size() == columns_.size(), "table row has ", row.size(), " cells, expected ",
           columns_.size());
  rows_.push_back(std::move(row));
}

void Table::print(std::ostream& os) const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].size();
    for (const auto& r : rows_) width[c] = std::max(width[c], r[c].text.size());
  }
  auto line = [&](auto cell_text, auto is_number) {
    for (size_t c = 0; c < columns_.size(); ++c) {
      os << (c ? "  " : "") << (is_number(c) ? std::right : std::left) << std::setw(int(width[c]))
         << cell_text(c);
    }
    os << "\n";
  };
  line([&](size_t c) { return columns_[c]; }, [&](size_t c) { return c > 0; });
  size_t total = 0;
  for (auto w : width) total += w + 2;
  os << std::string(total - 2, '-') << "\n";
  for (const auto& r : rows_)
    line([&](size_t c) { return r[c].text; }, [&](size_t c) { return r[c].json[0] != '"'; });
}

void Table::print_json(std::ostream& os) const {
  for (const auto& r : rows_) {
    os << "{";
    for (size_t c = 0; c < columns_.size(); ++c)
      os << (c ? "," : "") << json_quote(columns_[c]) << ":" << r[c].json;
    os << "}\n";
  }
}

}  // namespace switchyard
