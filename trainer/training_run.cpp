// See training_run.h. Validation runs on data.valid_path before the first step, every
// train.eval_interval steps, after router distillation and at the end; while distilling it
// measures the original gates' routing (they route then).
#include "trainer/training_run.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/errors.h"
#include "common/phase_clock.h"
#include "eval/model_eval.h"
#include "models/switchyard_checkpoint.h"
#include "parallel/collective_watchdog.h"
#include "trainer/checkpoint.h"
#include "trainer/resume_fingerprint.h"
#include "trainer/training_model.h"

namespace switchyard {

namespace fs = std::filesystem;

namespace {

// Everything checked before any work: one clear line per problem. Returns the options with the
// run folder filled in.
TrainingRunOptions checked(const RunConfig& config, TrainingRunOptions options) {
  const auto& model = config.model();
  if (model.has_init_config()) {
    if (!model.checkpoint().empty())
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
  } else if (model.checkpoint().empty()) {
    throw ConfigError(
        "model.checkpoint: required (a Hugging Face folder, a Switchyard checkpoint or a run "
        "folder), or model.init_config",
        "model.checkpoint");
  } else if (!fs::is_directory(model.checkpoint())) {
    throw ConfigError("model.checkpoint = " + model.checkpoint() + ": no such folder",
                      "model.checkpoint");
  }
  if (config.train().distill_steps() > 0 && model.checkpoint().empty())
    throw ConfigError(
        "train.distill_steps: distillation needs the original gates of "
        "model.checkpoint",
        "train.distill_steps");
  const ModelArchitecture& arch = model_architecture(model.arch());  // explicit or default
  if (config.train().distill_steps() > 0)
    arch.require(ArchFeature::kRouterDistillation, "train.distill_steps");
  // (A checkpoint's architecture is known once its manifest is read; the message covers both.)
  const std::string kind = model.has_arch() || model.has_init_config()
                               ? TrainingData::file_kind(arch.task())
                               : "token file or labelled JSONL file";
  const std::string& train = config.data().train_path();
  if (train.empty() || !fs::is_regular_file(train))
    throw ConfigError(
        "data.train_path = " + train + ": not a " + kind + " (switchyard data prepare writes them)",
        "data.train_path");
  const std::string& valid = config.data().valid_path();
  if (!valid.empty() && !fs::is_regular_file(valid))
    throw ConfigError("data.valid_path = " + valid + ": no such " + kind, "data.valid_path");
  if (!options.export_hf.empty()) {
    if (fs::exists(options.export_hf))
      throw ConfigError("--export-hf " + options.export_hf + ": already exists");
    if (model.has_arch()) arch.require(ArchFeature::kHfExport, "--export-hf");
  }
  if (options.run_dir.empty()) options.run_dir = config.logging().run_dir();
  return options;
}

}  // namespace

bool redraw_progress(const std::string& mode) {
  if (mode == "bar") return true;
  if (mode == "lines") return false;
  if (mode != "auto") throw ConfigError("--progress " + mode + ": expected auto, bar or lines");
  const bool launched =
      std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("SLURM_PROCID");
  return !launched && isatty(STDOUT_FILENO);
}

TrainingRun::TrainingRun(const RunConfig& config, TrainingRunOptions options)
    : config_(config),
      options_(checked(config, std::move(options))),
      // The launch and the device (its GPU, NCCL or MPI) before any work.
      compute_(compute_world(config.parallel().device())) {
  // A stalled collective from here on ends the run with its flight record in rank<r>.log.
  start_collective_watchdog(*compute_.world, config_.parallel(), options_.run_dir);
  const auto& t = config_.train();
  // The data first: a classifier built for the data takes its labels from it.
  const config::ModelArch arch_id = training_arch(config_);
  const ModelArchitecture& arch = model_architecture(arch_id);
  data_ = TrainingData::read(config_, arch.task());
  const auto load_start = std::chrono::steady_clock::now();
  model_ = load_training_model(config_, options_.dtype, data_->data_labels());
  // Said in the header: on a full-size model loading is minutes of a short GPU slot.
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  data_->bind(model_);
  task_ = model_.task_model();
  const ProcessGroups& groups = model_.groups;
  const int rank = groups.world->rank(), world = groups.world->size();
  sampler_ = std::make_unique<BatchSampler>(
      BatchSamplerOptions{.num_samples = data_->size(),
                          .global_batch = int64_t(t.micro_batch_size()) * world,
                          .world_size = world,
                          .rank = rank,
                          .seed = t.seed()});
  if (rank == 0) fs::create_directories(options_.run_dir);
  groups.world->barrier();

  torch::manual_seed(t.seed());
  trainer_ = std::make_unique<Trainer>(task_, groups, t);
  if (t.distill_steps() > 0) {
    // A checkpoint whose architecture the config left unsaid is checked here.
    model_.architecture().require(ArchFeature::kRouterDistillation, "train.distill_steps");
    trainer_->set_distillation_teachers(model_.model->original_gates(config_.model().checkpoint()));
  }
  if (!options_.export_hf.empty())
    model_.architecture().require(ArchFeature::kHfExport, "--export-hf");
  if (config_.parallel().rebalance_interval() > 0)
    live_ =
        std::make_unique<LivePlacement>(config_.parallel().rebalance_interval(),
                                        config_.parallel().rebalance_min_gain(), *trainer_, groups);
  fingerprint_ = resume_fingerprint(config_, world);
  if (options_.resume) {
    std::string fallback;
    const auto folder = latest_checkpoint(options_.run_dir, &fallback);
    if (!folder)
      throw ConfigError("--resume: no complete checkpoint under " + options_.run_dir +
                        "/checkpoints" + (fallback.empty() ? "" : " (" + fallback + ")"));
    if (!fallback.empty()) print("--resume: " + fallback);
    const CheckpointState state = load_checkpoint(*folder, *trainer_, groups);
    check_resume_fingerprint(state.fingerprint, fingerprint_, *folder,
                             options_.allow_resume_changes);
    sampler_->set_position(state.data);
    if (live_) resume_live_placement(state, *folder);
    last_saved_step_ = state.step;
    print("resumed from " + *folder + " (step " + std::to_string(state.step) + ")");
  }
  std::vector<LayerPlacement> placements;
  for (const auto& moe : trainer_->model().moe_blocks())
    placements.push_back(moe->dispatcher().placement());
  metrics_ = std::make_unique<MetricsLog>(options_.run_dir + "/metrics.jsonl", groups,
                                          config_.logging().tensorboard(), std::move(placements));
  rank_log_ = std::make_unique<std::ofstream>(
      options_.run_dir + "/rank" + std::to_string(rank) + ".log", std::ios::app);
  *rank_log_ << compute_.env.describe() << "; computes on " << compute_.describe() << std::endl;
  progress_ = std::make_unique<TrainProgress>(options_.out ? *options_.out : std::cout,
                                              trainer_->optimizer().steps(), t.steps(),
                                              options_.redraw_progress);
  print(detail::concat("training ", trainer_->trainable().size(), " tensors (",
                       t.routers_only() ? "routers only" : "all parameters", ") on ", world,
                       " rank(s), EP ", groups.ep_size(), ", ", data_->describe(), ", on ",
                       compute_.describe(), trainer_->bf16_autocast() ? ", bf16 autocast" : "",
                       "; model ", config_.model().has_init_config() ? "built" : "loaded", " in ",
                       detail::seconds_text(load_s)));
}

TrainingRun::~TrainingRun() = default;

void TrainingRun::resume_live_placement(const CheckpointState& state, const std::string& folder) {
  live_->restore_counts(state.rebalance_counts, state.step);
  if (state.expert_placement_json.empty()) return;
  const auto blocks = trainer_->model().moe_blocks();
  try {
    // Every rank reads the same manifest, so every rank reaches the same verdict.
    const Placement saved = Placement::from_json(nlohmann::json::parse(state.expert_placement_json),
                                                 folder + "'s expert placement");
    saved.check_fits(int64_t(blocks.size()), blocks.front()->dispatcher().num_experts(),
                     model_.groups.ep_size(), folder + "'s expert placement");
    if (int64_t(trainer_->expert_placements().front().slots.front().size()) != saved.slots_per_rank)
      throw ConfigError(detail::concat(folder, "'s expert placement has ", saved.slots_per_rank,
                                       " slots per rank, this run's has another count"));
    trainer_->set_expert_placements(saved.layers);
    print("--resume: experts placed as at step " + std::to_string(state.step));
  } catch (const ConfigError& e) {
    print(std::string("--resume: ") + e.what() +
          "; the configured placement holds until the next re-placement");
  }
}

void TrainingRun::replace_experts(int64_t step) {
  const PlacementChange change = live_->rebalance(*trainer_, step);
  metrics_->write_placement(change);
  double before = 0, after = 0;
  int64_t slots = 0;
  for (const auto& l : change.layers)
    before += l.before, after += l.after, slots += l.slots_changed;
  const double n = double(change.layers.size());
  char buf[240];
  std::snprintf(buf, sizeof buf,
                "step %ld: experts re-placed in %ld of %ld MoE layers (%ld slots changed, %.2f s); "
                "predicted rank max/mean %.3f -> %.3f (mean over layers, loads of steps %ld-%ld)",
                long(step), long(change.layers_moved()), long(change.layers.size()), long(slots),
                change.seconds, before / n, after / n, long(change.first_step), long(step));
  print(buf);
  *rank_log_ << buf << std::endl;
}

void TrainingRun::print(const std::string& line) {
  if (model_.groups.world->rank() != 0) return;
  if (progress_)
    progress_->message(line);
  else
    (options_.out ? *options_.out : std::cout) << line << "\n";
}

void TrainingRun::validate(const std::string& phase) {
  if (!data_->valid()) return;
  trainer_->prepare_routing();
  EvalReport v = evaluate_model(task_, model_.groups, *data_->valid(),
                                {.time_moe = false, .bf16_autocast = trainer_->bf16_autocast()});
  const int64_t step = trainer_->optimizer().steps();
  metrics_->write_validation(step, {.phase = phase,
                                    .loss = v.mean_nll,
                                    .targets = v.predicted,
                                    .classification = v.classification(),
                                    .perplexity = v.perplexity,
                                    .accuracy = v.accuracy,
                                    .macro_f1 = v.macro_f1});
  char buf[200];
  if (v.classification())
    std::snprintf(buf, sizeof buf,
                  "valid accuracy %.4f, macro-F1 %.4f (loss %.4f, %ld texts) at step %ld: %s",
                  v.accuracy, v.macro_f1, v.mean_nll, long(v.predicted), long(step), phase.c_str());
  else
    std::snprintf(buf, sizeof buf, "valid ppl %.2f (loss %.4f, %ld tokens) at step %ld: %s",
                  v.perplexity, v.mean_nll, long(v.predicted), long(step), phase.c_str());
  print(buf);
  last_validation_ = std::move(v);
}

std::string TrainingRun::checkpoint() {
  const int64_t step = trainer_->optimizer().steps();
  if (step == last_saved_step_ && !last_saved_.empty()) return last_saved_;  // already on disk
  const auto dtype = model_.module().parameters().front().scalar_type();
  CheckpointMeta meta{.data = sampler_->position(),
                      .model_config_json = model_.model->config_json(dtype),
                      .fingerprint = fingerprint_};
  if (live_) {
    meta.expert_placement_json = live_->placement_json(*trainer_, step);
    meta.rebalance_counts = live_->global_counts();  // collective, like the save
  }
  last_saved_ = save_checkpoint(options_.run_dir, *trainer_, model_.groups, config_, meta);
  last_saved_step_ = step;
  print("checkpoint " + last_saved_);
  return last_saved_;
}

void TrainingRun::skipped_in_a_row(const StepMetrics& m) {
  ++consecutive_skips_;
  metrics_->write_skip(m, consecutive_skips_);
  *rank_log_ << "step " << m.step << " skipped: " << m.skip_reason << std::endl;
  print(detail::concat("step ", m.step, " skipped (", consecutive_skips_,
                       " in a row): ", m.skip_reason));
  const int limit = config_.train().max_skipped_steps();
  if (consecutive_skips_ < limit) return;
  const auto last = latest_checkpoint(options_.run_dir);
  throw Error(detail::concat(
      "train: ", limit, " steps skipped in a row (train.max_skipped_steps)", ", the last at step ",
      m.step, ": ", m.skip_reason,
      last ? "; the last checkpoint, " + *last + ", is untouched" : "; no checkpoint was written"));
}

bool TrainingRun::must_read_after(int64_t next, int64_t first_step) const {
  const auto& t = config_.train();
  const int64_t log_every = std::max(1, config_.logging().log_interval());
  const int64_t profile_every = config_.logging().phase_profile_interval();
  auto every = [next](int64_t interval) { return interval > 0 && next % interval == 0; };
  return every(log_every) || next >= t.steps() || every(t.checkpoint_interval()) ||
         every(t.eval_interval()) || next == trainer_->distill_steps() ||
         (live_ && live_->due(next)) ||
         (options_.stop_after > 0 && next - first_step >= options_.stop_after) ||
         every(profile_every) || (profile_every > 0 && (next + 1) % profile_every == 0);
}

void TrainingRun::finish_step(const StepMetrics& m, double seconds, TrainingRunResult& result) {
  const auto& t = config_.train();
  if (m.skipped) {
    skipped_in_a_row(m);
    return;
  }
  consecutive_skips_ = 0;
  const auto records = metrics_->write(m, seconds);
  *rank_log_ << "step " << m.step << " loss " << m.loss << " tokens " << m.tokens << " seconds "
             << seconds << std::endl;
  if (live_) {
    live_->record(m);
    // Before the checkpoint of this step, which then keeps the new placement.
    if (live_->due(m.step) && m.step < t.steps()) replace_experts(m.step);
  }
  const int64_t every = t.checkpoint_interval();
  if (every > 0 && m.step % every == 0 && m.step < t.steps()) result.checkpoint = checkpoint();
  if (model_.groups.world->rank() == 0) {
    const double world_tokens_per_s = double(m.tokens) * model_.groups.world->size() / seconds;
    const int64_t log_every = std::max(1, config_.logging().log_interval());
    if (m.step % log_every == 0 || m.step == t.steps())
      progress_->log(m, world_tokens_per_s, records);
    else
      progress_->update(m, world_tokens_per_s);
  }
  if (m.step == trainer_->distill_steps())
    validate("after router distillation");
  else if (t.eval_interval() > 0 && m.step % t.eval_interval() == 0 && m.step < t.steps())
    validate("step " + std::to_string(m.step));
}

TrainingRunResult TrainingRun::run() {
  const auto& t = config_.train();
  const int64_t first_step = trainer_->optimizer().steps();
  const int64_t vocab = model_.model->vocab_size();
  TrainingRunResult result;
  if (first_step == 0) validate(trainer_->distilling() ? "start, original gates routing" : "start");
  // Steps are launched without reading their numbers and read together where the host must act
  // (must_read_after), so a GPU's queue does not drain between steps. Every action then falls on
  // the last step read: each read happens at an action's step, and a skipped step only moves the
  // next read to the same step one launch later.
  std::vector<std::vector<double>> phase_seconds;  ///< per pending step; empty unless profiled
  auto window_start = std::chrono::steady_clock::now();
  while (trainer_->optimizer().steps() < t.steps()) {
    if (trainer_->pending_steps() == 0) {
      if (options_.stop_after > 0 &&
          trainer_->optimizer().steps() - first_step >= options_.stop_after) {
        result.checkpoint = checkpoint();
        print(detail::concat("stopped after ", options_.stop_after, " steps (--stop-after)"));
        result.step = trainer_->optimizer().steps();
        result.stopped_early = true;
        result.validation = last_validation_;
        return result;
      }
      window_start = std::chrono::steady_clock::now();
    }
    std::vector<TaskBatch> micro;
    for (int i = 0; i < t.grad_accumulation(); ++i) {
      micro.push_back(data_->batch(sampler_->next()));
      const int64_t max_id = micro.back().input_ids.max().item<int64_t>();
      SY_CHECK(max_id < vocab, config_.data().train_path(), ": token id ", max_id,
               " is outside the model's vocabulary (", vocab, ")");
    }
    const int64_t next = trainer_->projected_steps() + 1;
    const int64_t profile_every = config_.logging().phase_profile_interval();
    const bool profiled = profile_every > 0 && next % profile_every == 0;
    if (profiled) start_phase_clock(trainer_->model().device());
    try {
      trainer_->launch(micro);
    } catch (...) {
      if (profiled) stop_phase_clock();  // the clock is process-wide: leave it stopped
      throw;
    }
    phase_seconds.emplace_back();
    if (profiled) {
      const PhaseSeconds phases = stop_phase_clock().seconds;
      phase_seconds.back().assign(phases.begin(), phases.end());
    }
    if (!must_read_after(next, first_step)) continue;
    std::vector<StepMetrics> steps = trainer_->resolve();
    // The steps read together share their wall time (on a GPU no step's own end is seen).
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count() /
        double(steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      steps[i].phase_seconds = std::move(phase_seconds[i]);
      finish_step(steps[i], seconds, result);
    }
    phase_seconds.clear();
  }
  if (model_.groups.world->rank() == 0) progress_->finish();
  validate("end");
  result.checkpoint = checkpoint();
  if (!options_.export_hf.empty()) {
    model_.model->export_hf(options_.export_hf, model_.module().parameters().front().scalar_type());
    print("exported " + options_.export_hf + " (Hugging Face layout)");
  }
  result.step = trainer_->optimizer().steps();
  result.validation = last_validation_;
  return result;
}

}  // namespace switchyard
