// Records stream straight into the three token writers: memory stays at one record's ids. The
// labelled JSONL copies are text the records already hold in memory, written once at the end.
#include "data/corpus_prepare.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "data/token_file.h"
#include "models/safetensors.h"

namespace switchyard {

std::vector<CorpusCount> prepare_corpus(const std::vector<TextRecord>& records,
                                        const BpeTokenizer& tokenizer,
                                        const PrepareOptions& options) {
  const Split splits[] = {Split::kTrain, Split::kValid, Split::kTest};
  std::unique_ptr<TokenFileWriter> writers[3];
  if (!options.out_dir.empty()) {
    std::filesystem::create_directories(options.out_dir);
    const auto eos = tokenizer.token_to_id("<|endoftext|>");
    for (Split s : splits)
      writers[int(s)] = std::make_unique<TokenFileWriter>(
          (std::filesystem::path(options.out_dir) / (std::string(split_name(s)) + ".tok")).string(),
          uint32_t(tokenizer.vocab_size()), eos);
  }
  std::map<std::pair<int, std::string>, CorpusCount> counts;
  std::string labelled[3];
  for (const auto& r : records) {
    const Split s = split_of(r.text, options.split);
    const std::vector<uint32_t> ids = tokenizer.encode(r.text);
    if (writers[int(s)]) {
      writers[int(s)]->add(ids);
      // text_corpus.h's read_jsonl field names: the category is "label".
      labelled[int(s)] +=
          nlohmann::json{{"text", r.text}, {"label", r.category}, {"language", r.language}}.dump() +
          "\n";
    }
    for (const bool total : {false, true}) {
      CorpusCount& c = counts[{int(s) * 2 + int(total), total ? std::string() : r.language}];
      c.split = s;
      c.total = total;
      c.language = total ? std::string() : r.language;
      c.records += 1;
      c.bytes += int64_t(r.text.size());
      c.tokens += int64_t(ids.size());
    }
  }
  for (auto& w : writers)
    if (w) w->finish();
  if (!options.out_dir.empty())
    for (Split s : splits)
      write_text_file_atomic(
          (std::filesystem::path(options.out_dir) / (std::string(split_name(s)) + ".jsonl"))
              .string(),
          labelled[int(s)]);
  std::vector<CorpusCount> out;
  for (auto& [key, c] : counts) out.push_back(std::move(c));
  return out;
}

}  // namespace switchyard
