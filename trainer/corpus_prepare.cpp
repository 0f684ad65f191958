// Records stream straight into the three writers: memory stays at one record's ids.
#include "trainer/corpus_prepare.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "trainer/token_file.h"

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
  for (const auto& r : records) {
    const Split s = split_of(r.text, options.split);
    const std::vector<uint32_t> ids = tokenizer.encode(r.text);
    if (writers[int(s)]) writers[int(s)]->add(ids);
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
  std::vector<CorpusCount> out;
  for (auto& [key, c] : counts) out.push_back(std::move(c));
  return out;
}

}  // namespace switchyard
