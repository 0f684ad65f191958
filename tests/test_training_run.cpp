// The training run and load_model as a library, without the command line: pretraining a tiny
// Qwen2-MoE and a tiny BERT-MoE classifier from scratch, --stop-after and --resume against the
// uninterrupted run, the run folder loaded back by load_model, the Hugging Face export and the
// Switchyard checkpoint round trip, and the one-line refusals. (Multi-rank runs are the `train`
// and `train_bert` ctests'.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "configs/run_config.h"
#include "data/token_file.h"
#include "models/load_model.h"
#include "models/switchyard_checkpoint.h"
#include "tests/test_support.h"
#include "trainer/checkpoint.h"
#include "trainer/training_run.h"
#include "trainer/weight_init.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

using namespace switchyard::test;

constexpr const char* kTinyBert = R"({
  "model_type": "bert", "vocab_size": 8192, "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
  "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 1,
  "position_embedding_type": "absolute", "initializer_range": 0.02, "torch_dtype": "float32"})";

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

// Documents of a repeating pattern plus noise: something a tiny model can learn.
void write_tokens(const fs::path& path, int documents, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint32_t>> docs;
  for (int d = 0; d < documents; ++d) {
    std::vector<uint32_t> doc;
    for (int i = 0; i < 40; ++i) doc.push_back(i % 5 == 4 ? rng() % 63 : uint32_t(i % 7 + 1));
    doc.push_back(63);  // eos
    docs.push_back(doc);
  }
  write_token_file(path.string(), TokenDocuments::from_vectors(docs, 64, 63));
}

// Texts whose language is told by their letters.
void write_labelled(const fs::path& path, int per_label) {
  std::ofstream out(path);
  const std::vector<std::pair<std::string, std::string>> langs = {
      {"de", "über größer schön äußerst"},
      {"en", "the and the of the"},
      {"fr", "été où être français"}};
  for (int i = 0; i < per_label; ++i)
    for (const auto& [lang, words] : langs)
      out << nlohmann::json{{"text", words + " " + std::to_string(i)}, {"language", lang}}.dump()
          << "\n";
}

struct Lm {
  fs::path dir;
  RunConfig config;
};

Lm causal_lm_setup(int steps) {
  Lm s;
  s.dir = temp_dir();
  write_file(s.dir / "config.json", kTinyQwen);
  write_tokens(s.dir / "train.tok", 40, 1);
  write_tokens(s.dir / "valid.tok", 6, 2);
  std::ostringstream text;
  text << "model { init_config: '" << (s.dir / "config.json").string() << "' }\n"
       << "router { top_k: 2 }\n"
       << "parallel { device: 'cpu' }\n"
       << "train { steps: " << steps << " learning_rate: 3e-3 warmup_steps: 2 "
       << "micro_batch_size: 2 seq_len: 16 routers_only: false eval_blocks: 4 "
       << "checkpoint_interval: 2 }\n"
       << "data { train_path: '" << (s.dir / "train.tok").string() << "' valid_path: '"
       << (s.dir / "valid.tok").string() << "' }\n"
       << "logging { log_interval: 100 tensorboard: false }\n";
  s.config = parse_run_config(text.str(), "test");
  return s;
}

std::map<std::string, torch::Tensor> parameters(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

double max_difference(const std::map<std::string, torch::Tensor>& a,
                      const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(b.count(name)) << name;
    if (b.count(name))
      worst = std::max(
          worst, (t.to(torch::kFloat) - b.at(name).to(torch::kFloat)).abs().max().item<double>());
  }
  return worst;
}

std::vector<nlohmann::json> records(const fs::path& metrics, const std::string& kind) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == kind) out.push_back(j);
  }
  return out;
}

TrainingRunOptions quiet(const fs::path& run_dir) {
  static std::ostringstream sink;
  return {.run_dir = run_dir.string(), .out = &sink};
}

// ---- the training run ---------------------------------------------------------------------------

TEST(TrainingRun, PretrainsACausalLmFromScratchAndLeavesACompleteRunFolder) {
  Lm s = causal_lm_setup(6);
  TrainingRun run(s.config, quiet(s.dir / "run"));
  const TrainingRunResult r = run.run();
  EXPECT_EQ(r.step, 6);
  EXPECT_FALSE(r.stopped_early);
  ASSERT_TRUE(r.validation);
  EXPECT_GT(r.validation->predicted, 0);
  const auto losses = records(s.dir / "run/metrics.jsonl", "loss");
  ASSERT_EQ(losses.size(), 6u);
  EXPECT_LT(losses.back()["loss"].get<double>(), losses.front()["loss"].get<double>());
  // Validation at the start and the end, each with a perplexity.
  const auto valid = records(s.dir / "run/metrics.jsonl", "valid");
  ASSERT_EQ(valid.size(), 2u);
  EXPECT_LT(valid.back()["loss"].get<double>(), valid.front()["loss"].get<double>());
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string()), r.checkpoint);
  EXPECT_TRUE(fs::exists(s.dir / "run/rank0.log"));
}

TEST(TrainingRun, StopAfterThenResumeEqualsTheUninterruptedRun) {
  Lm s = causal_lm_setup(6);
  TrainingRun straight(s.config, quiet(s.dir / "straight"));
  const TrainingRunResult a = straight.run();

  auto first = quiet(s.dir / "sliced");
  first.stop_after = 3;
  TrainingRun part(s.config, first);
  const TrainingRunResult stopped = part.run();
  EXPECT_TRUE(stopped.stopped_early);
  EXPECT_EQ(stopped.step, 3);

  auto second = quiet(s.dir / "sliced");
  second.resume = true;
  TrainingRun resumed(s.config, second);
  const TrainingRunResult b = resumed.run();
  EXPECT_EQ(b.step, 6);
  EXPECT_LT(
      max_difference(parameters(straight.model().module()), parameters(resumed.model().module())),
      1e-6);
  ASSERT_TRUE(a.validation && b.validation);
  EXPECT_NEAR(a.validation->mean_nll, b.validation->mean_nll, 1e-6);
  const auto la = records(s.dir / "straight/metrics.jsonl", "loss");
  const auto lb = records(s.dir / "sliced/metrics.jsonl", "loss");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(), 1e-6) << "step " << i + 1;
}

// Steps are read to the host where the loop must act (here every third step: the log
// interval), not one by one; the log is the step-by-step run's, number for number, with fewer
// reads.
TEST(TrainingRun, ReadingStepsTogetherLogsWhatAStepByStepRunLogs) {
  Lm s = causal_lm_setup(6);
  s.config.mutable_train()->set_checkpoint_interval(0);
  s.config.mutable_train()->set_grad_clip(1e-3);  // clipping decided on the device too
  auto by_step = s.config;
  by_step.mutable_logging()->set_log_interval(1);
  TrainingRun a(by_step, quiet(s.dir / "by_step"));
  a.run();
  auto together = s.config;
  together.mutable_logging()->set_log_interval(3);
  TrainingRun b(together, quiet(s.dir / "together"));
  b.run();
  const auto la = records(s.dir / "by_step/metrics.jsonl", "loss");
  const auto lb = records(s.dir / "together/metrics.jsonl", "loss");
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), 6u);
  int64_t reads_a = 0, reads_b = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    SCOPED_TRACE(i);
    for (const char* key : {"step", "loss", "task_loss", "router_loss", "lr", "grad_norm"})
      EXPECT_EQ(la[i][key], lb[i][key]) << key;
    reads_a += la[i]["host_reads"].get<int64_t>();
    reads_b += lb[i]["host_reads"].get<int64_t>();
  }
  EXPECT_EQ(reads_a - reads_b, 6 - 2);  // a read per step against a read per three steps
  EXPECT_EQ(max_difference(parameters(a.model().module()), parameters(b.model().module())), 0.0);
}

TEST(TrainingRun, TrainsABertMoeClassifierOnTheDatasLabels) {
  const fs::path dir = temp_dir();
  write_file(dir / "bert.json", kTinyBert);
  write_labelled(dir / "train.jsonl", 30);
  write_labelled(dir / "valid.jsonl", 4);
  std::ostringstream text;
  text << "model { arch: BERT_MOE init_config: '" << (dir / "bert.json").string()
       << "' num_experts: 4 moe_layer_step: 1 }\n"
       << "router { top_k: 2 }\nparallel { device: 'cpu' }\n"
       << "train { steps: 60 learning_rate: 1e-2 warmup_steps: 2 micro_batch_size: 8 "
       << "routers_only: false }\n"
       << "data { train_path: '" << (dir / "train.jsonl").string() << "' valid_path: '"
       << (dir / "valid.jsonl").string() << "' label: LABEL_LANGUAGE max_len: 16 }\n"
       << "logging { tensorboard: false }\n";
  TrainingRun run(parse_run_config(text.str(), "test"), quiet(dir / "run"));
  EXPECT_EQ(run.model().model->labels(), (std::vector<std::string>{"de", "en", "fr"}));
  const TrainingRunResult r = run.run();
  ASSERT_TRUE(r.validation);
  EXPECT_TRUE(r.validation->classification());
  EXPECT_GT(r.validation->accuracy, 0.9);

  // The run folder loads back as the same classifier, architecture from its manifest.
  EXPECT_EQ(model_arch_at((dir / "run").string(), RunConfig()), config::BERT_MOE);
  RunConfig cpu;
  cpu.mutable_parallel()->set_device("cpu");
  const LoadedModel loaded = load_model((dir / "run").string(), cpu, "float32");
  EXPECT_EQ(loaded.model->labels(), run.model().model->labels());
  EXPECT_EQ(max_difference(parameters(run.model().module()), parameters(loaded.module())), 0.0);
}

// ---- non-finite steps
// ----------------------------------------------------------------------------

std::map<std::string, torch::Tensor> snapshot(const NamedTensors& tensors) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : tensors) out[name] = t.detach().clone();
  return out;
}

TEST(NonFiniteSteps, ASkippedStepChangesNoParameterAndNoMomentAndSaysWhy) {
  const fs::path dir = temp_dir();
  RunConfig config;
  config.mutable_parallel()->set_device("cpu");
  LoadedModel m = build_model(kTinyQwen, "tiny", config);
  init_for_pretraining(m.task_model(), m.groups, 0.02, 7);
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_learning_rate(1e30);  // one step makes every weight huge; the next forward overflows
  Trainer trainer(m.task_model(), m.groups, t);
  torch::manual_seed(3);
  auto batch = [] { return causal_lm_batch(torch::randint(0, 63, {2, 17}, torch::kLong)); };
  const StepMetrics first = trainer.step({batch()});
  ASSERT_FALSE(first.skipped) << first.skip_reason;
  const auto params = parameters(m.module());
  const auto moments = snapshot(trainer.optimizer().state());
  const StepMetrics second = trainer.step({batch()});
  ASSERT_TRUE(second.skipped);
  EXPECT_EQ(second.step, 2);
  EXPECT_EQ(trainer.optimizer().steps(), 1);
  EXPECT_NE(second.skip_reason.find("non-finite loss"), std::string::npos) << second.skip_reason;
  EXPECT_NE(second.skip_reason.find("rank(s) 0"), std::string::npos) << second.skip_reason;
  EXPECT_EQ(second.skip_rank, 0);
  EXPECT_EQ(max_difference(params, parameters(m.module())), 0.0);
  const auto after = snapshot(trainer.optimizer().state());
  ASSERT_EQ(after.size(), moments.size());
  for (const auto& [name, v] : moments) EXPECT_TRUE(torch::equal(v, after.at(name))) << name;
}

TEST(NonFiniteSteps, TheRunSkipsThenStopsWithOneLineAndItsCheckpointIntact) {
  Lm s = causal_lm_setup(20);
  s.config.mutable_train()->set_learning_rate(1e30);
  s.config.mutable_train()->set_checkpoint_interval(1);
  s.config.mutable_train()->set_max_skipped_steps(3);
  s.config.mutable_logging()->set_tensorboard(true);
  TrainingRun run(s.config, quiet(s.dir / "run"));
  const std::string e = error_of([&] { run.run(); });
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_NE(e.find("3 steps skipped in a row (train.max_skipped_steps), the last at step 2: "
                   "non-finite loss"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("step-00000001, is untouched"), std::string::npos) << e;
  const auto skips = records(s.dir / "run/metrics.jsonl", "skip");
  ASSERT_EQ(skips.size(), 3u);
  for (size_t i = 0; i < skips.size(); ++i) {
    EXPECT_EQ(skips[i]["step"], 2);
    EXPECT_EQ(skips[i]["rank"], 0);
    EXPECT_EQ(skips[i]["consecutive"], int(i) + 1);
    EXPECT_NE(skips[i]["reason"].get<std::string>().find("non-finite"), std::string::npos);
  }
  // The skips changed nothing: the model equals its step-1 checkpoint, which is finite.
  RunConfig cpu;
  cpu.mutable_parallel()->set_device("cpu");
  const LoadedModel saved = load_model((s.dir / "run").string(), cpu, "float32");
  const auto now = parameters(run.model().module());
  EXPECT_EQ(max_difference(now, parameters(saved.module())), 0.0);
  for (const auto& [name, t] : now) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
}

// Without a checkpoint or a log line due, the skips are read ten steps at a time: the run still
// stops at the third skip in a row, saying the same.
TEST(NonFiniteSteps, SkipsReadTogetherStopTheRunAtTheSameStep) {
  Lm s = causal_lm_setup(20);
  s.config.mutable_train()->set_learning_rate(1e30);
  s.config.mutable_train()->set_checkpoint_interval(0);
  s.config.mutable_train()->set_max_skipped_steps(3);
  s.config.mutable_logging()->set_log_interval(10);
  TrainingRun run(s.config, quiet(s.dir / "run"));
  const std::string e = error_of([&] { run.run(); });
  EXPECT_NE(e.find("3 steps skipped in a row (train.max_skipped_steps), the last at step 2: "
                   "non-finite loss"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("no checkpoint was written"), std::string::npos) << e;
  ASSERT_EQ(records(s.dir / "run/metrics.jsonl", "loss").size(), 1u);
  EXPECT_EQ(records(s.dir / "run/metrics.jsonl", "skip").size(), 3u);
  EXPECT_EQ(run.trainer().optimizer().steps(), 1);
}

TEST(NonFiniteSteps, ACheckpointIsNeverWrittenWithANan) {
  Lm s = causal_lm_setup(2);
  TrainingRun run(s.config, quiet(s.dir / "run"));
  run.run();
  {
    torch::NoGradGuard no_grad;
    run.model().module().parameters().front().view(-1)[0] = std::nan("");
  }
  auto config = s.config;
  const std::string e = error_of([&] {
    save_checkpoint((s.dir / "run").string(), run.trainer(), run.model().groups, config,
                    {.model_config_json = "{}"});
  });
  EXPECT_NE(e.find("holds non-finite values; not saved"), std::string::npos) << e;
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string()),
            (s.dir / "run/checkpoints/step-00000002").string());
}

// ---- load_model ---------------------------------------------------------------------------------

TEST(LoadModel, ARunFolderTheHubExportAndASwitchyardCheckpointAllGiveTheTrainedWeights) {
  Lm s = causal_lm_setup(4);
  auto options = quiet(s.dir / "run");
  options.export_hf = (s.dir / "hf").string();
  TrainingRun run(s.config, options);
  run.run();
  const auto trained = parameters(run.model().module());
  RunConfig cpu;
  cpu.mutable_parallel()->set_device("cpu");

  const LoadedModel from_run = load_model((s.dir / "run").string(), cpu, "float32");
  EXPECT_EQ(from_run.arch, config::QWEN2_MOE);
  EXPECT_EQ(max_difference(trained, parameters(from_run.module())), 0.0);

  const LoadedModel from_hf = load_model((s.dir / "hf").string(), cpu, "float32");
  EXPECT_EQ(max_difference(trained, parameters(from_hf.module())), 0.0);

  save_switchyard_checkpoint(from_hf, (s.dir / "sy").string(), torch::kFloat, "test");
  const LoadedModel from_sy = load_model((s.dir / "sy").string(), cpu, "float32");
  EXPECT_EQ(max_difference(trained, parameters(from_sy.module())), 0.0);
  // A checkpoint folder is never overwritten.
  EXPECT_NE(error_of([&] {
              save_switchyard_checkpoint(from_hf, (s.dir / "sy").string(), torch::kFloat, "x");
            }).find("already exists"),
            std::string::npos);
}

TEST(LoadModel, RefusesPathsThatHoldNoModelInOneLine) {
  const fs::path dir = temp_dir();
  RunConfig cpu;
  cpu.mutable_parallel()->set_device("cpu");
  const std::string none = error_of([&] { load_model((dir / "none").string(), cpu, "float32"); });
  EXPECT_NE(none.find(": not a folder"), std::string::npos) << none;
  const std::string empty = error_of([&] { load_model(dir.string(), cpu, "float32"); });
  EXPECT_NE(empty.find("no config.json, manifest.pb or checkpoints/"), std::string::npos) << empty;
  fs::create_directories(dir / "checkpoints");
  const std::string run = error_of([&] { load_model(dir.string(), cpu, "float32"); });
  EXPECT_NE(run.find("a run folder without a complete checkpoint"), std::string::npos) << run;
  EXPECT_NE(error_of([] { parse_dtype("float8", torch::kFloat); }).find("--dtype float8"),
            std::string::npos);
}

// ---- refusals before any work
// --------------------------------------------------------------------

TEST(TrainingRun, RefusesBadInputsWithOneLineNamingTheField) {
  Lm s = causal_lm_setup(2);
  auto refusal = [&](const std::function<void(RunConfig&)>& edit, TrainingRunOptions o = {}) {
    RunConfig c = s.config;
    edit(c);
    if (o.run_dir.empty()) o = quiet(s.dir / "refused");
    const std::string e = error_of([&] { TrainingRun(c, o); });
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    return e;
  };
  EXPECT_NE(refusal([](RunConfig& c) {
              c.mutable_train()->set_routers_only(true);
            }).find("train.routers_only: a model built from scratch must train everything"),
            std::string::npos);
  EXPECT_NE(refusal([](RunConfig& c) {
              c.mutable_data()->set_train_path("/no/such.tok");
            }).find("data.train_path = /no/such.tok: not a token file"),
            std::string::npos);
  EXPECT_NE(refusal([](RunConfig& c) {
              c.mutable_train()->set_distill_steps(1);
            }).find("train.distill_steps: distillation needs the original gates"),
            std::string::npos);
  EXPECT_NE(refusal(
                [](RunConfig& c) {
                  c.mutable_model()->set_arch(config::BERT_MOE);
                  c.mutable_data()->set_train_path(c.data().valid_path());
                },
                [&] {
                  auto o = quiet(s.dir / "refused");
                  o.export_hf = (s.dir / "x").string();
                  return o;
                }())
                .find("--export-hf: BERT-MoE has no Hugging Face layout"),
            std::string::npos);
  EXPECT_NE(refusal([](RunConfig&) {},
                    [&] {
                      auto o = quiet(s.dir / "empty");
                      o.resume = true;
                      return o;
                    }())
                .find("--resume: no complete checkpoint under"),
            std::string::npos);
}

}  // namespace
