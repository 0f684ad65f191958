// `switchyard train`: fine-tunes a checkpoint's routers (or the whole model), or trains one from
// a config.json, single-process or under mpirun (trainer/training_run.h does the run).
#include "configs/run_config.h"
#include "launch/cli.h"
#include "trainer/training_run.h"

namespace switchyard {
namespace {

int run_train(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  TrainingRunOptions options;
  if (args.vars.count("run-dir")) options.run_dir = args.vars["run-dir"].as<std::string>();
  if (args.vars.count("export-hf")) options.export_hf = args.vars["export-hf"].as<std::string>();
  options.dtype = args.vars["dtype"].as<std::string>();
  options.resume = args.vars.count("resume") > 0;
  options.stop_after = args.vars["stop-after"].as<int64_t>();
  if (args.vars.count("allow-resume-change"))
    options.allow_resume_changes = args.vars["allow-resume-change"].as<std::vector<std::string>>();
  options.redraw_progress = redraw_progress(args.vars["progress"].as<std::string>());
  TrainingRun(config, options).run();
  return 0;
}

}  // namespace

Subcommand train_command() {
  Subcommand c;
  c.name = "train";
  c.summary = "fine-tune the routers (or all parameters) of a checkpoint, or train from scratch";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("run-dir", po::value<std::string>()->value_name("DIR"),
                       "metrics.jsonl and per-rank logs go here (default: logging.run_dir)")(
        "dtype", po::value<std::string>()->default_value("float32"),
        "compute dtype: checkpoint, float32, bfloat16 or float16")(
        "progress", po::value<std::string>()->default_value("auto"),
        "progress line: bar (redrawn in place), lines (one per log interval) or auto")(
        "resume", "continue from the newest checkpoint in the run folder (any EP size)")(
        "allow-resume-change", po::value<std::vector<std::string>>()->value_name("ITEM"),
        "resume although ITEM changed since the checkpoint: base, data, global_batch, seq_len, "
        "seed or router (repeatable)")(
        "stop-after", po::value<int64_t>()->default_value(0)->value_name("N"),
        "checkpoint and stop after N steps of this invocation (time-sliced jobs); 0: run on")(
        "export-hf", po::value<std::string>()->value_name("DIR"),
        "at the end, also write the model to DIR in the Hugging Face layout (a new folder)");
  };
  c.run = run_train;
  return c;
}

}  // namespace switchyard
