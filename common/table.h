// Plain-text tables for terminals (benchmarks, eval reports) and the JSON-lines twin that
// scripts read: one row, one object.
#pragma once

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace switchyard {

/// A cell keeps its text for the table and its JSON form (quoted string or bare number).
struct Cell {
  Cell(const std::string& s);  // NOLINT: implicit on purpose, rows read like literals
  Cell(const char* s);         // NOLINT
  Cell(double v, int precision = 3);
  Cell(int64_t v);
  Cell(int v) : Cell(int64_t(v)) {}
  std::string text;
  std::string json;
};

/// usage: Table t({"router", "params"}); t.add({"linear", int64_t(122880)}); t.print(std::cout);
class Table {
 public:
  explicit Table(std::vector<std::string> columns) : columns_(std::move(columns)) {}
  void add(std::vector<Cell> row);
  void print(std::ostream& os) const;       ///< aligned, numbers right-justified
  void print_json(std::ostream& os) const;  ///< one JSON object per row
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<Cell>> rows_;
};

/// JSON string literal with escapes.
std::string json_quote(const std::string& s);

}  // namespace switchyard
