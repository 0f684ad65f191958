// Parsing is strict: a stray character is an error at its line, never a silently shorter input.
#include "data/token_lines.h"

#include <charconv>
#include <fstream>
#include <vector>

#include "common/errors.h"

namespace switchyard {

TokenBatch read_token_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open token file");
  std::vector<std::vector<int64_t>> rows;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    std::vector<int64_t> ids;
    const char* p = line.data();
    const char* end = p + line.size();
    while (p < end) {
      if (*p == ' ' || *p == '\t' || *p == '\r') {
        ++p;
        continue;
      }
      int64_t id = 0;
      auto [next, ec] = std::from_chars(p, end, id);
      if (ec != std::errc() || id < 0 ||
          (next < end && !std::isspace(static_cast<unsigned char>(*next))))
        throw ConfigError(detail::concat(path, ":", line_no, ":", (p - line.data()) + 1,
                                         ": not a token id (non-negative integer)"));
      ids.push_back(id);
      p = next;
    }
    if (!ids.empty()) rows.push_back(std::move(ids));
  }
  if (rows.empty()) throw ConfigError(path + ": no sequences (one line of token ids per sequence)");
  size_t longest = 0;
  for (const auto& r : rows) longest = std::max(longest, r.size());
  TokenBatch b;
  b.input_ids = torch::zeros({int64_t(rows.size()), int64_t(longest)}, torch::kLong);
  b.attention_mask = torch::zeros_like(b.input_ids);
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto n = int64_t(rows[i].size());
    b.input_ids[int64_t(i)].narrow(0, 0, n).copy_(torch::tensor(rows[i], torch::kLong));
    b.attention_mask[int64_t(i)].narrow(0, 0, n).fill_(1);
  }
  return b;
}

}  // namespace switchyard
