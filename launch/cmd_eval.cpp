// `switchyard eval`: runs a Hugging Face Qwen2-MoE checkpoint (any router, any EP size under
// mpirun) on token-id lines and writes the logits. The evaluation-tool issue grows this into
// perplexity, accuracy and load reports; today it is the parity path.
#include <filesystem>
#include <iostream>

#include "common/errors.h"
#include "configs/run_config.h"
#include "launch/cli.h"
#include "launch/hf_model.h"
#include "launch/model_architecture.h"
#include "models/qwen2_moe.h"
#include "trainer/token_lines.h"

namespace switchyard {
namespace {

int run_eval(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  const std::string dir = resolve_model_path(args.vars["model"].as<std::string>());
  const std::string dump =
      args.vars.count("dump-logits") ? args.vars["dump-logits"].as<std::string>() : "";
  if (dump.empty()) throw ConfigError("eval: nothing to do; pass --dump-logits OUT.safetensors");
  const TokenBatch batch = read_token_lines(args.vars["tokens"].as<std::string>());

  LoadedModel m = load_model(dir, config, args.vars["dtype"].as<std::string>());
  const ModelArchitecture& arch = model_architecture(m.arch);
  const auto& groups = m.groups;
  const int64_t vocab = arch.vocab_size(m), max_id = batch.input_ids.max().item<int64_t>();
  if (max_id >= vocab)
    throw ConfigError(detail::concat(args.vars["tokens"].as<std::string>(), ": token id ", max_id,
                                     " is outside the vocabulary (", vocab, ")"));
  m.module().eval();
  torch::NoGradGuard no_grad;
  // Every rank runs every sequence: the EP group shares the experts, and rank 0 writes.
  // Causal LMs give [sequences, positions, vocab], classifiers (BERT) [sequences, labels].
  auto logits = arch.logits(m, batch.input_ids, batch.attention_mask).to(torch::kFloat);
  if (groups.world->rank() == 0) {
    save_safetensors(dump, {{"logits", logits}, {"attention_mask", batch.attention_mask}},
                     {{"model", dir}, {"writer", "switchyard eval"}});
    std::cerr << "wrote logits " << logits.sizes() << " to " << dump << "\n";
  }
  groups.world->barrier();
  return 0;
}

}  // namespace

Subcommand eval_command() {
  Subcommand c;
  c.name = "eval";
  c.summary = "run a checkpoint on token ids and dump its logits (any router, any EP size)";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("model", po::value<std::string>()->required()->value_name("DIR"),
                       "Hugging Face folder, Switchyard checkpoint or run folder")(
        "tokens", po::value<std::string>()->required()->value_name("FILE"),
        "token ids, one sequence per line (shorter lines are padded and masked)")(
        "dump-logits", po::value<std::string>()->value_name("OUT"),
        "write F32 `logits` [sequences, positions, vocab] as safetensors")(
        "dtype", po::value<std::string>()->default_value("checkpoint"),
        "compute dtype: checkpoint, float32, bfloat16 or float16");
  };
  c.run = run_eval;
  return c;
}

}  // namespace switchyard
