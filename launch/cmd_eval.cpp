// `switchyard eval`: runs a model (Hugging Face folder, Switchyard checkpoint or run folder; any
// router, any EP size under mpirun) on an evaluation set and reports perplexity (causal LM) or
// accuracy and macro-F1 (classifier, on labelled JSON Lines), routing
// statistics per layer and expert, load and time per rank, router latency and parameter counts
// (tables, or --json); or writes the logits of token-id lines (--dump-logits, the parity path).
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/errors.h"
#include "configs/run_config.h"
#include "data/data_options.h"
#include "data/token_lines.h"
#include "eval/eval_set.h"
#include "eval/model_eval.h"
#include "launch/cli.h"
#include "models/load_model.h"
#include "trainer/training_data.h"

namespace switchyard {
namespace {

std::string optional_arg(const CommandArgs& args, const char* name) {
  return args.vars.count(name) ? args.vars[name].as<std::string>() : "";
}

void dump_logits(LoadedModel& m, const TokenBatch& batch, const std::string& dir,
                 const std::string& path) {
  // Every rank runs every sequence: the EP group shares the experts, and rank 0 writes.
  // Causal LMs give [sequences, positions, vocab], classifiers (BERT) [sequences, labels].
  const auto device = m.module().parameters().front().device();
  auto logits = m.model->logits(batch.input_ids.to(device), batch.attention_mask.to(device))
                    .to(torch::kFloat);
  if (m.groups.world->rank() == 0) {
    save_safetensors(path, {{"logits", logits}, {"attention_mask", batch.attention_mask}},
                     {{"model", dir}, {"writer", "switchyard eval"}});
    std::cerr << "wrote logits " << logits.sizes() << " to " << path << "\n";
  }
}

void write_json(const EvalReport& report, const std::string& path) {
  const std::string text = report.to_json().dump(2) + "\n";
  if (path == "-") {
    std::cout << text;
    return;
  }
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial);
    out << text;
    if (!out.flush()) throw Error(partial + ": write failed");
  }
  std::filesystem::rename(partial, path);
  std::cerr << "wrote " << path << "\n";
}

int run_eval(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  const std::string dir = resolve_model_path(args.vars["model"].as<std::string>());
  const std::string dump = optional_arg(args, "dump-logits");
  const std::string tokens = optional_arg(args, "tokens");
  const std::string json = optional_arg(args, "json");
  // The evaluation set: --data, else the --tokens lines when no logits are asked for.
  const std::string data =
      args.vars.count("data") ? optional_arg(args, "data") : (dump.empty() ? tokens : "");
  if (dump.empty() && data.empty())
    throw ConfigError(
        "eval: nothing to do; pass --data FILE (report) or --tokens FILE "
        "--dump-logits OUT.safetensors");
  if (!dump.empty() && tokens.empty()) throw ConfigError("eval: --dump-logits needs --tokens FILE");

  // Inputs are read before the model so that bad input fails in a second, not after loading.
  TokenBatch batch;
  if (!dump.empty()) batch = read_token_lines(tokens);
  EvalSet set;
  EvalSetOptions set_options{.seq_len = args.vars["seq-len"].as<int64_t>(),
                             .max_sequences = args.vars["max-sequences"].as<int64_t>()};
  // Token ids are read now; texts once the model says how to tokenize and label them.
  const EvalFileKind kind = data.empty() ? EvalFileKind::kTokenLines : eval_file_kind(data);
  const bool text = kind == EvalFileKind::kJsonl || kind == EvalFileKind::kPlainText;
  if (!data.empty() && !text) set = read_eval_set(data, set_options);

  LoadedModel m = load_model(dir, config, args.vars["dtype"].as<std::string>());
  const auto& groups = m.groups;
  const int64_t vocab = m.model->vocab_size();
  if (!dump.empty()) {
    const int64_t max_id = batch.input_ids.max().item<int64_t>();
    if (max_id >= vocab)
      throw ConfigError(detail::concat(tokens, ": token id ", max_id,
                                       " is outside the vocabulary (", vocab, ")"));
  }
  const TaskModel task = m.task_model();
  if (!data.empty()) {
    const auto& d = m.config.data();
    if (task.task() == Task::kSequenceClassification) {
      if (kind != EvalFileKind::kJsonl)
        throw ConfigError("--data " + data +
                          ": a classifier evaluates labelled JSON Lines (switchyard data prepare "
                          "writes DIR/valid.jsonl)");
      set = read_classification_set(data, data_tokenizer(d), model_labels(m),
                                    {.max_len = d.max_len(), .label = label_field(d)},
                                    set_options.max_sequences);
    } else if (text) {
      const BpeTokenizer tokenizer = data_tokenizer(d);
      set_options.tokenizer = &tokenizer;
      set = read_eval_set(data, set_options);
    }
    check_vocabulary(set, vocab);
  }

  m.module().eval();
  torch::NoGradGuard no_grad;
  if (!dump.empty()) dump_logits(m, batch, dir, dump);
  if (!data.empty()) {
    EvalReport report =
        evaluate_model(task, groups, set, {.batch_size = args.vars["batch-size"].as<int64_t>()});
    report.model = dir;
    report.dtype = c10::toString(task.module().parameters().front().scalar_type());
    report.device = task.device().str();
    if (groups.world->rank() == 0) {
      if (json != "-") report.print(std::cout);
      if (!json.empty()) write_json(report, json);
    }
  }
  groups.world->barrier();
  return 0;
}

}  // namespace

Subcommand eval_command() {
  Subcommand c;
  c.name = "eval";
  c.summary = "evaluate a checkpoint: perplexity, expert load, routing, latency (or dump logits)";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("model", po::value<std::string>()->required()->value_name("DIR"),
                       "Hugging Face folder, Switchyard checkpoint or run folder")(
        "data", po::value<std::string>()->value_name("FILE"),
        "evaluation set. Causal LMs: a token file (switchyard data prepare), JSON Lines or "
        "plain text (tokenized with data.tokenizer_path), all packed into --seq-len blocks, or "
        "token-id lines. Classifiers: labelled JSON Lines (DIR/valid.jsonl), tokenized and "
        "labelled as the model was trained (data.*)")(
        "tokens", po::value<std::string>()->value_name("FILE"),
        "token ids, one sequence per line (shorter lines are padded and masked)")(
        "dump-logits", po::value<std::string>()->value_name("OUT"),
        "write F32 `logits` [sequences, positions, vocab] of --tokens as safetensors")(
        "json", po::value<std::string>()->value_name("PATH"),
        "also write the report as JSON to PATH (- : stdout, instead of the tables)")(
        "seq-len", po::value<int64_t>()->default_value(128), "positions per row of a token file")(
        "batch-size", po::value<int64_t>()->default_value(4), "rows per forward on each rank")(
        "max-sequences", po::value<int64_t>()->default_value(0),
        "evaluate the first N rows only (0: all)")(
        "dtype", po::value<std::string>()->default_value("checkpoint"),
        "compute dtype: checkpoint, float32, bfloat16 or float16");
  };
  c.run = run_eval;
  return c;
}

}  // namespace switchyard
