// `switchyard data stats|prepare`: the training corpus (the fortune cookies setup.sh installs,
// or the user's plain text / JSONL files) tokenized, counted per split and language, and for
// prepare written as token files DIR/{train,valid,test}.tok and labelled texts .jsonl.
#include <iostream>

#include "common/errors.h"
#include "common/table.h"
#include "data/bpe_tokenizer.h"
#include "data/corpus_prepare.h"
#include "data/data_options.h"
#include "data/fortune_corpus.h"
#include "data/text_corpus.h"
#include "launch/cli.h"

namespace switchyard {
namespace {

std::vector<std::string> strings(const CommandArgs& args, const char* name) {
  return args.vars.count(name) ? args.vars[name].as<std::vector<std::string>>()
                               : std::vector<std::string>{};
}

std::vector<TextRecord> read_records(const CommandArgs& args) {
  const auto texts = strings(args, "text"), jsonls = strings(args, "jsonl");
  if (texts.empty() && jsonls.empty()) {
    FortuneCorpusOptions o;
    o.root = args.vars["fortunes"].as<std::string>();
    return read_fortune_corpus(o);
  }
  std::vector<TextRecord> records;
  PlainTextOptions plain;
  if (args.vars.count("one-per-line")) plain.layout = PlainTextLayout::kOnePerLine;
  for (const auto& path : texts)
    for (auto& r : read_plain_text(path, plain)) records.push_back(std::move(r));
  for (const auto& path : jsonls)
    for (auto& r : read_jsonl(path, {})) records.push_back(std::move(r));
  if (records.empty()) throw ConfigError("data: the input files hold no documents");
  return records;
}

int run_data(const CommandArgs& args) {
  const std::string action = args.vars["action"].as<std::string>();
  if (action != "stats" && action != "prepare")
    throw ConfigError("data: unknown action '" + action + "' (stats or prepare)");
  PrepareOptions options;
  if (action == "prepare") {
    if (!args.vars.count("out")) throw ConfigError("data prepare: --out DIR is required");
    options.out_dir = args.vars["out"].as<std::string>();
  }
  const BpeTokenizer tokenizer = BpeTokenizer::from_file(args.vars["tokenizer"].as<std::string>());
  const std::vector<TextRecord> records = read_records(args);
  const std::vector<CorpusCount> counts = prepare_corpus(records, tokenizer, options);

  Table table({"split", "language", "records", "bytes", "tokens", "bytes_per_token"});
  for (const auto& c : counts)
    table.add({split_name(c.split), c.total ? "all" : c.language, c.records, c.bytes, c.tokens,
               Cell(c.tokens ? double(c.bytes) / double(c.tokens) : 0.0, 2)});
  if (args.vars.count("json")) {
    table.print_json(std::cout);
  } else {
    std::cout << records.size() << " records, tokenizer vocab " << tokenizer.vocab_size() << "\n";
    table.print(std::cout);
  }
  if (!options.out_dir.empty())
    std::cerr << "wrote " << options.out_dir << "/{train,valid,test}.{tok,jsonl}\n";
  return 0;
}

}  // namespace

Subcommand data_command() {
  Subcommand c;
  c.name = "data";
  c.summary = "corpus statistics (stats) or token files per split (prepare --out DIR)";
  c.add_options = [](po::options_description& opts, po::positional_options_description& pos) {
    opts.add_options()("action", po::value<std::string>()->required()->value_name("ACTION"),
                       "stats or prepare")(
        "tokenizer", po::value<std::string>()->default_value(default_tokenizer_path()),
        "tokenizer.json (byte-level BPE)")(
        "fortunes", po::value<std::string>()->default_value("/usr/share/games/fortunes"),
        "fortune corpus root, read when no --text or --jsonl is given")(
        "text", po::value<std::vector<std::string>>()->composing()->value_name("FILE"),
        "plain text, documents separated by blank lines (repeatable)")(
        "one-per-line", "plain text: every non-blank line is a document")(
        "jsonl", po::value<std::vector<std::string>>()->composing()->value_name("FILE"),
        "JSON Lines of {\"text\": ..., \"label\": ..., \"language\": ...} (repeatable)")(
        "out", po::value<std::string>()->value_name("DIR"),
        "prepare: write DIR/{train,valid,test}.tok and the labelled texts as .jsonl")(
        "json", "one JSON object per row");
    pos.add("action", 1);
  };
  c.run = run_data;
  return c;
}

}  // namespace switchyard
