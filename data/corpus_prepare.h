// Corpus to token files: every record tokenized, routed to its split, and (optionally) written
// as DIR/{train,valid,test}.tok, with each split's texts and labels as DIR/{train,valid,test}.jsonl
// (for sequence classification); counts per split and language come back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/corpus_split.h"
#include "data/text_record.h"

namespace switchyard {

struct PrepareOptions {
  SplitOptions split;
  std::string out_dir;  ///< created if missing; empty: count only, write nothing
};

/// One row of corpus statistics: a split's records in one language, or in all (total).
struct CorpusCount {
  Split split = Split::kTrain;
  bool total = false;
  std::string language;  ///< empty in total rows
  int64_t records = 0, bytes = 0, tokens = 0;
};

/// Rows per (split, language) sorted by split then language, then one total row per split.
/// Documents are stored without separators; the token files name the tokenizer's <|endoftext|>
/// as their EOS id when it has one.
///   usage: auto counts = prepare_corpus(records, tokenizer, {.out_dir = "data/fortunes"});
std::vector<CorpusCount> prepare_corpus(const std::vector<TextRecord>& records,
                                        const BpeTokenizer& tokenizer,
                                        const PrepareOptions& options);

}  // namespace switchyard
