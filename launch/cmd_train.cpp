// `switchyard train`: fine-tunes a checkpoint's routers (or the whole model), or trains one from
// a config.json: a Qwen2-MoE causal LM on a packed token file, or a BERT-MoE sequence classifier
// on labelled JSON Lines; single-process or under mpirun with experts sharded across ranks.
// Validation (perplexity, or accuracy and macro-F1) on data.valid_path before the first step,
// every train.eval_interval steps, after router distillation and at the end.
// Every rank reads its own share of each global batch; rank 0 prints progress and the load
// table and writes RUN_DIR/metrics.jsonl; every rank writes RUN_DIR/rank<r>.log. Checkpoints go
// to RUN_DIR/checkpoints every train.checkpoint_interval steps and at the end; --resume
// continues from the newest.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "common/errors.h"
#include "configs/run_config.h"
#include "eval/model_eval.h"
#include "launch/cli.h"
#include "launch/compute_device.h"
#include "launch/model_architecture.h"
#include "launch/train_data.h"
#include "launch/train_model.h"
#include "launch/train_progress.h"
#include "trainer/batch_sampler.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics_log.h"
#include "trainer/trainer.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;

struct TrainInputs {
  std::string model_dir, train_path, valid_path, run_dir, export_hf;
};

// Everything checked before any work: one clear line per problem.
TrainInputs check_inputs(const CommandArgs& args, const RunConfig& config) {
  TrainInputs in;
  const auto& model = config.model();
  in.model_dir = model.checkpoint();
  if (model.has_init_config()) {
    if (!in.model_dir.empty())
      throw ConfigError("model.init_config: pretraining from scratch; drop model.checkpoint",
                        "model.init_config");
    if (!fs::is_regular_file(model.init_config()))
      throw ConfigError("model.init_config = " + model.init_config() + ": no such file",
                        "model.init_config");
    if (model.quant().experts() != config::QUANT_NONE)
      throw ConfigError("model.quant: pretraining from scratch trains full-precision experts",
                        "model.quant");
    if (config.train().routers_only())
      throw ConfigError("train.routers_only: a model built from scratch must train everything",
                        "train.routers_only");
  } else if (in.model_dir.empty()) {
    throw ConfigError(
        "model.checkpoint: required (a Hugging Face folder, a Switchyard checkpoint or a run "
        "folder), or model.init_config",
        "model.checkpoint");
  } else if (!fs::is_directory(in.model_dir)) {
    throw ConfigError("model.checkpoint = " + in.model_dir + ": no such folder", "model.checkpoint");
  }
  if (config.train().distill_steps() > 0 && in.model_dir.empty())
    throw ConfigError("train.distill_steps: distillation needs the original gates of "
                      "model.checkpoint",
                      "train.distill_steps");
  const ModelArchitecture& arch = model_architecture(model.arch());  // explicit or default
  if (config.train().distill_steps() > 0 && !arch.has_gates_to_distil)
    throw ConfigError("train.distill_steps: router distillation reads Hugging Face gates "
                      "(mlp.gate.weight), which " + arch.name + " checkpoints do not have",
                      "train.distill_steps");
  // Causal LMs read token files, classifiers labelled JSON Lines: both from `data prepare`.
  // (A checkpoint's architecture is known once it is loaded; the message covers both.)
  const char* kind = model.arch() == config::BERT_MOE ? "labelled JSONL file"
                     : model.has_arch()               ? "token file"
                                                      : "token file or labelled JSONL file";
  in.train_path = config.data().train_path();
  if (in.train_path.empty() || !fs::is_regular_file(in.train_path))
    throw ConfigError("data.train_path = " + in.train_path + ": not a " + kind +
                          " (switchyard data prepare writes them)",
                      "data.train_path");
  in.valid_path = config.data().valid_path();
  if (!in.valid_path.empty() && !fs::is_regular_file(in.valid_path))
    throw ConfigError("data.valid_path = " + in.valid_path + ": no such " + kind,
                      "data.valid_path");
  if (args.vars.count("export-hf")) {
    in.export_hf = args.vars["export-hf"].as<std::string>();
    if (fs::exists(in.export_hf))
      throw ConfigError("--export-hf " + in.export_hf + ": already exists");
    if (model.arch() == config::BERT_MOE)
      throw ConfigError("--export-hf: BERT-MoE has no Hugging Face layout (its FFNs are MoE "
                        "blocks); its run folder is its checkpoint");
  }
  in.run_dir = args.vars.count("run-dir") ? args.vars["run-dir"].as<std::string>()
                                          : config.logging().run_dir();
  return in;
}

// Whether the progress line is redrawn in place. mpirun hands rank 0 a pseudo-terminal even
// when mpirun's own output goes to a file, so under a launcher "auto" prints whole lines.
bool redraw_progress(const std::string& mode) {
  if (mode == "bar") return true;
  if (mode == "lines") return false;
  if (mode != "auto") throw ConfigError("--progress " + mode + ": expected auto, bar or lines");
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
                        std::getenv("SLURM_PROCID");
  return !launched && isatty(STDOUT_FILENO);
}

int run_train(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  const TrainInputs in = check_inputs(args, config);
  const bool redraw = redraw_progress(args.vars["progress"].as<std::string>());
  const auto& t = config.train();

  // The launch and the device (its GPU, NCCL or MPI) before any work.
  const ComputeWorld& compute = compute_world(config.parallel().device());
  // A classifier whose labels may come from the data reads the data first; any other
  // checkpoint names its own architecture (its manifest), so its data comes after.
  std::optional<TrainingData> read_first;
  if (model_needs_data_labels(config))
    read_first = TrainingData::read(config, config.model().arch());
  LoadedModel loaded = load_training_model(config, args.vars["dtype"].as<std::string>(),
                                           read_first ? read_first->data_labels()
                                                      : std::vector<std::string>{});
  TrainingData data = read_first ? std::move(*read_first) : TrainingData::read(config, loaded.arch);
  data.bind(loaded);
  const ModelArchitecture& arch = model_architecture(loaded.arch);
  const TaskModel model = arch.task_model(loaded);
  const ProcessGroups& groups = loaded.groups;
  const int rank = groups.world->rank(), world = groups.world->size();
  BatchSampler sampler(BatchSamplerOptions{.num_samples = data.size(),
                                           .global_batch = int64_t(t.micro_batch_size()) * world,
                                           .world_size = world,
                                           .rank = rank,
                                           .seed = t.seed()});
  if (rank == 0) fs::create_directories(in.run_dir);
  groups.world->barrier();

  torch::manual_seed(t.seed());
  Trainer trainer(model, groups, t);
  if (t.distill_steps() > 0) {
    if (!arch.has_gates_to_distil)  // a checkpoint whose architecture the config left unsaid
      throw ConfigError("train.distill_steps: router distillation reads Hugging Face gates "
                        "(mlp.gate.weight), which " + arch.name + " checkpoints do not have",
                        "train.distill_steps");
    trainer.set_distillation_teachers(checkpoint_gates(*loaded.model, in.model_dir));
  }
  if (args.vars.count("resume")) {
    const auto folder = latest_checkpoint(in.run_dir);
    if (!folder) throw ConfigError("--resume: no checkpoint under " + in.run_dir + "/checkpoints");
    const CheckpointState state = load_checkpoint(*folder, trainer, groups);
    sampler.set_position(state.data);
    if (rank == 0) std::cout << "resumed from " << *folder << " (step " << state.step << ")\n";
  }
  MetricsLog metrics(in.run_dir + "/metrics.jsonl", groups, config.logging().tensorboard());
  std::ofstream rank_log(in.run_dir + "/rank" + std::to_string(rank) + ".log", std::ios::app);
  rank_log << compute.env.describe() << "; computes on " << compute.describe() << std::endl;
  TrainProgress progress(std::cout, trainer.optimizer().steps(), t.steps(), redraw);
  // Validation while distilling measures the original gates' routing (they route then).
  auto validate = [&](const std::string& phase) {
    if (!data.valid()) return;
    trainer.prepare_routing();
    const EvalReport v = evaluate_model(
        model, groups, *data.valid(),
        {.time_moe = false, .bf16_autocast = trainer.bf16_autocast()});
    metrics.write_validation(trainer.optimizer().steps(),
                             {.phase = phase,
                              .loss = v.mean_nll,
                              .targets = v.predicted,
                              .classification = v.classification(),
                              .perplexity = v.perplexity,
                              .accuracy = v.accuracy,
                              .macro_f1 = v.macro_f1});
    if (rank == 0) {
      char buf[200];
      if (v.classification())
        std::snprintf(buf, sizeof buf,
                      "valid accuracy %.4f, macro-F1 %.4f (loss %.4f, %ld texts) at step %ld: %s",
                      v.accuracy, v.macro_f1, v.mean_nll, long(v.predicted),
                      long(trainer.optimizer().steps()), phase.c_str());
      else
        std::snprintf(buf, sizeof buf, "valid ppl %.2f (loss %.4f, %ld tokens) at step %ld: %s",
                      v.perplexity, v.mean_nll, long(v.predicted),
                      long(trainer.optimizer().steps()), phase.c_str());
      progress.message(buf);
    }
  };
  if (rank == 0)
    std::cout << "training " << trainer.trainable().size() << " tensors ("
              << (t.routers_only() ? "routers only" : "all parameters") << ") on " << world
              << " rank(s), EP " << groups.ep_size() << ", " << data.describe() << ", on "
              << compute.describe() << (trainer.bf16_autocast() ? ", bf16 autocast" : "") << "\n";

  const int64_t log_every = std::max(1, config.logging().log_interval());
  const int64_t stop_after = args.vars["stop-after"].as<int64_t>();
  const int64_t first_step = trainer.optimizer().steps();
  if (first_step == 0)
    validate(trainer.distilling() ? "start, original gates routing" : "start");
  auto checkpoint = [&] {
    const auto folder = save_checkpoint(in.run_dir, trainer, groups, config, sampler.position(),
                                        arch.checkpoint_config_json(
                                            loaded, model.module().parameters().front().scalar_type()));
    if (rank == 0) std::cout << "checkpoint " << folder << "\n";
  };
  while (trainer.optimizer().steps() < t.steps()) {
    if (stop_after > 0 && trainer.optimizer().steps() - first_step >= stop_after) {
      checkpoint();
      if (rank == 0) std::cout << "stopped after " << stop_after << " steps (--stop-after)\n";
      return 0;
    }
    const auto start = std::chrono::steady_clock::now();
    std::vector<TaskBatch> micro;
    for (int i = 0; i < t.grad_accumulation(); ++i) {
      micro.push_back(data.batch(sampler.next()));
      const int64_t max_id = micro.back().input_ids.max().item<int64_t>();
      SY_CHECK(max_id < arch.vocab_size(loaded), in.train_path, ": token id ", max_id,
               " is outside the model's vocabulary (", arch.vocab_size(loaded), ")");
    }
    const StepMetrics m = trainer.step(micro);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto records = metrics.write(m, seconds);
    rank_log << "step " << m.step << " loss " << m.loss << " tokens " << m.tokens << " seconds "
             << seconds << std::endl;
    const int64_t every = t.checkpoint_interval();
    if (every > 0 && m.step % every == 0 && m.step < t.steps()) checkpoint();
    if (rank == 0) {
      const double world_tokens_per_s = double(m.tokens) * world / seconds;
      if (m.step % log_every == 0 || m.step == t.steps())
        progress.log(m, world_tokens_per_s, records);
      else
        progress.update(m, world_tokens_per_s);
    }
    if (m.step == trainer.distill_steps())
      validate("after router distillation");
    else if (t.eval_interval() > 0 && m.step % t.eval_interval() == 0 && m.step < t.steps())
      validate("step " + std::to_string(m.step));
  }
  if (rank == 0) progress.finish();
  validate("end");
  checkpoint();
  if (!in.export_hf.empty()) {
    arch.export_hf(loaded, in.export_hf, model.module().parameters().front().scalar_type());
    if (rank == 0) std::cout << "exported " << in.export_hf << " (Hugging Face layout)\n";
  }
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
        "stop-after", po::value<int64_t>()->default_value(0)->value_name("N"),
        "checkpoint and stop after N steps of this invocation (time-sliced jobs); 0: run on")(
        "export-hf", po::value<std::string>()->value_name("DIR"),
        "at the end, also write the model to DIR in the Hugging Face layout (a new folder)");
  };
  c.run = run_train;
  return c;
}

}  // namespace switchyard
