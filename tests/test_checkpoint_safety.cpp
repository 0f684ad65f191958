// Checkpoints that survive any kill, from the library: the same step saved twice, `latest`
// missing or pointing at nothing, retention, the resume fingerprint's refusals and the overlay
// of a run folder onto a base it does not fit. (SIGKILL at random moments and a full disk run
// against the binary: ctest checkpoint_kill.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "configs/run_config.h"
#include "data/token_file.h"
#include "models/load_model.h"
#include "models/switchyard_checkpoint.h"
#include "parallel/placement.h"
#include "tests/test_support.h"
#include "trainer/checkpoint.h"
#include "trainer/resume_fingerprint.h"
#include "trainer/training_run.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

using namespace switchyard::test;

void write_tokens(const fs::path& path, int documents, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint32_t>> docs;
  for (int d = 0; d < documents; ++d) {
    std::vector<uint32_t> doc;
    for (int i = 0; i < 30; ++i) doc.push_back(rng() % 63);
    doc.push_back(63);
    docs.push_back(doc);
  }
  write_token_file(path.string(), TokenDocuments::from_vectors(docs, 64, 63));
}

struct TinyRun {
  fs::path dir;
  RunConfig config;
};

TinyRun setup(int steps, const std::string& extra_train = "") {
  TinyRun s;
  s.dir = temp_dir();
  std::ofstream(s.dir / "config.json") << kTinyQwen;
  write_tokens(s.dir / "train.tok", 30, 1);
  std::ostringstream text;
  text << "model { init_config: '" << (s.dir / "config.json").string() << "' }\n"
       << "parallel { device: 'cpu' }\n"
       << "train { steps: " << steps << " learning_rate: 3e-3 micro_batch_size: 2 seq_len: 16 "
       << "routers_only: false checkpoint_interval: 1 " << extra_train << " }\n"
       << "data { train_path: '" << (s.dir / "train.tok").string() << "' }\n"
       << "logging { log_interval: 100 tensorboard: false }\n";
  s.config = parse_run_config(text.str(), "test");
  return s;
}

TrainingRunOptions quiet(const fs::path& run_dir) {
  static std::ostringstream sink;
  return {.run_dir = run_dir.string(), .out = &sink};
}

std::vector<std::string> step_folders(const fs::path& run) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(run / "checkpoints"))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(CheckpointSafety, SavingTheSameStepAgainKeepsAFolderInPlaceAndLatestOnIt) {
  TinyRun s = setup(2);
  TrainingRun run(s.config, quiet(s.dir / "run"));
  const std::string first = run.run().checkpoint;
  const auto manifest = read_checkpoint_manifest(first);
  const std::string again =
      save_checkpoint((s.dir / "run").string(), run.trainer(), run.model().groups, s.config,
                      {.model_config_json = "{}"});
  EXPECT_EQ(again, first);
  EXPECT_TRUE(complete_checkpoint(again));
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string()), again);
  EXPECT_FALSE(fs::exists(first + ".partial"));
  EXPECT_FALSE(fs::exists(first + ".replaced"));
  // The same state gives the same files: the writers' checksums match the first save's.
  const auto now = read_checkpoint_manifest(again);
  ASSERT_EQ(now.files_size(), manifest.files_size());
  for (int i = 0; i < now.files_size(); ++i) {
    EXPECT_EQ(now.files(i).name(), manifest.files(i).name());
    EXPECT_EQ(now.files(i).fnv1a64(), manifest.files(i).fnv1a64()) << now.files(i).name();
  }
  CheckpointTensors(again, now).verify_all();  // the checksums are those of the bytes on disk
  EXPECT_GT(now.model_tensor_count(), 0);
}

TEST(CheckpointSafety, ResumeFallsBackToTheNewestCompleteStepWhenLatestIsBroken) {
  TinyRun s = setup(3);
  TrainingRun(s.config, quiet(s.dir / "run")).run();
  const fs::path root = s.dir / "run/checkpoints";
  // `latest` names a folder that is gone, and the newest folder lost a file.
  fs::remove_all(root / "step-00000003");
  std::ofstream(root / "latest") << "step-00000003\n";
  fs::remove(root / "step-00000002/replicated.safetensors");
  std::string note;
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string(), &note), (root / "step-00000001").string());
  EXPECT_NE(note.find("names step-00000003, which is not a complete checkpoint (checkpoint "),
            std::string::npos)
      << note;
  EXPECT_NE(note.find("; using the newest complete one, step-00000001"), std::string::npos) << note;
  fs::remove(root / "latest");
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string(), &note), (root / "step-00000001").string());
  EXPECT_NE(note.find("latest is missing"), std::string::npos) << note;
  auto options = quiet(s.dir / "run");
  options.resume = true;
  EXPECT_EQ(TrainingRun(s.config, options).run().step, 3);
  EXPECT_EQ(latest_checkpoint((s.dir / "run").string()), (root / "step-00000003").string());
}

TEST(CheckpointSafety, KeepCheckpointsLeavesTheNewestN) {
  TinyRun s = setup(5, "keep_checkpoints: 2");
  TrainingRun(s.config, quiet(s.dir / "run")).run();
  EXPECT_EQ(step_folders(s.dir / "run"),
            (std::vector<std::string>{"step-00000004", "step-00000005"}));
  auto c = s.config;
  c.mutable_train()->set_keep_checkpoints(-1);
  const std::string e = error_of([&] { validate_run_config(c); });
  EXPECT_NE(e.find("train.keep_checkpoints"), std::string::npos) << e;
}

TEST(CheckpointSafety, ResumeRefusesARunThatChangedNamingWhatChanged) {
  TinyRun s = setup(4);
  auto first = quiet(s.dir / "run");
  first.stop_after = 2;
  TrainingRun(s.config, first).run();
  auto resume = quiet(s.dir / "run");
  resume.resume = true;

  auto seed = s.config;
  seed.mutable_train()->set_seed(99);
  std::string e = error_of([&] { TrainingRun(seed, resume); });
  EXPECT_NE(e.find("this run differs from the one that wrote"), std::string::npos) << e;
  EXPECT_NE(e.find("train.seed was 1234, is 99"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;

  auto batch = s.config;
  batch.mutable_train()->set_micro_batch_size(4);
  e = error_of([&] { TrainingRun(batch, resume); });
  EXPECT_NE(e.find("the global batch (micro_batch_size x ranks x grad_accumulation) was 2, is 4"),
            std::string::npos)
      << e;

  write_tokens(s.dir / "train.tok", 31, 1);  // the data changed on disk
  e = error_of([&] { TrainingRun(s.config, resume); });
  EXPECT_NE(e.find("the training data was " + (s.dir / "train.tok").string()), std::string::npos)
      << e;
  auto allowed = resume;
  allowed.allow_resume_changes = {"data"};
  EXPECT_EQ(TrainingRun(s.config, allowed).run().step, 4);
  allowed.allow_resume_changes = {"colour"};
  e = error_of([&] { TrainingRun(s.config, allowed); });
  EXPECT_NE(e.find("--allow-resume-change colour: expected base, data"), std::string::npos) << e;
}

TEST(CheckpointSafety, FingerprintsSeeContentNotJustSize) {
  const fs::path dir = temp_dir();
  std::ofstream(dir / "a.bin") << std::string(3000000, 'x');
  const std::string before = file_fingerprint((dir / "a.bin").string());
  {
    std::fstream f(dir / "a.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f << 'y';  // same size, a byte changed in the first sample
  }
  EXPECT_NE(file_fingerprint((dir / "a.bin").string()), before);
  EXPECT_EQ(before.substr(0, 14), "3000000 bytes,");
  EXPECT_NE(error_of([&] { file_fingerprint((dir / "missing").string()); }).find("no such file"),
            std::string::npos);
}

TEST(CheckpointSafety, ARunFolderWhoseTensorsDoNotFitItsBaseIsRefused) {
  // A run fine-tuned on a base that has since been replaced by another model: the checkpoint's
  // tensors have no place in it, and loading the run folder says so instead of evaluating the
  // bare base.
  TinyRun s = setup(1);
  TrainingRun(s.config, quiet(s.dir / "base_run")).run();
  const LoadedModel base = load_model((s.dir / "base_run").string(), s.config, "float32");
  save_switchyard_checkpoint(base, (s.dir / "base").string(), torch::kFloat, "test");
  auto tune = s.config;
  tune.mutable_model()->clear_init_config();
  tune.mutable_model()->set_checkpoint((s.dir / "base").string());
  tune.mutable_train()->set_routers_only(true);
  TrainingRun(tune, quiet(s.dir / "tuned")).run();
  // Replace the base with a one-layer model.
  std::string one_layer = kTinyQwen;
  one_layer.replace(one_layer.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 1");
  std::ofstream(s.dir / "small.json") << one_layer;
  auto small = s.config;
  small.mutable_model()->set_init_config((s.dir / "small.json").string());
  small.mutable_train()->set_steps(1);
  TrainingRun(small, quiet(s.dir / "small_run")).run();
  fs::remove_all(s.dir / "base");
  save_switchyard_checkpoint(load_model((s.dir / "small_run").string(), small, "float32"),
                             (s.dir / "base").string(), torch::kFloat, "test");
  const std::string e = error_of([&] { load_model((s.dir / "tuned").string(), {}, "float32"); });
  EXPECT_NE(e.find("has no place in this model"), std::string::npos) << e;
}

namespace {

// Every MoE layer's expert bias of the model at `path` (a run folder or checkpoint).
std::vector<torch::Tensor> expert_biases(const std::string& path) {
  const LoadedModel m = load_model(path, {}, "float32");
  const TaskModel task = m.task_model();
  std::vector<torch::Tensor> out;
  for (const auto& moe : task.moe_blocks()) out.push_back(moe->router->expert_bias().clone());
  return out;
}

}  // namespace

TEST(CheckpointSafety, ExpertBiasesAreSavedResumedAndRefusedByHubExport) {
  // router.expert_bias: the bias is state outside the optimizer; a run stopped and resumed ends
  // with the bias of the run that went straight through, and loading the run folder (eval)
  // gets it too.
  TinyRun s = setup(3);  // odd: a bias that moves every step cannot be back at 0
  s.config.mutable_router()->mutable_expert_bias()->set_update_rate(0.01f);
  TrainingRun(s.config, quiet(s.dir / "straight")).run();
  auto halves = quiet(s.dir / "halves");
  halves.stop_after = 1;
  TrainingRun(s.config, halves).run();
  halves.stop_after = 0;
  halves.resume = true;
  TrainingRun(s.config, halves).run();
  const auto straight = expert_biases((s.dir / "straight").string());
  const auto resumed = expert_biases((s.dir / "halves").string());
  ASSERT_EQ(straight.size(), 2u);
  ASSERT_EQ(resumed.size(), straight.size());
  float largest = 0;
  for (size_t l = 0; l < straight.size(); ++l) {
    ASSERT_TRUE(straight[l].defined());
    largest = std::max(largest, straight[l].abs().max().item<float>());
    EXPECT_TRUE(torch::equal(straight[l], resumed[l])) << "layer " << l;
  }
  EXPECT_GT(largest, 0.0f);  // the loads moved it
  // The hub layout has no place for a bias: export refuses rather than route differently.
  const LoadedModel m = load_model((s.dir / "straight").string(), {}, "float32");
  const std::string e =
      error_of([&] { m.model->export_hf((s.dir / "hf").string(), torch::kFloat); });
  EXPECT_NE(e.find("has an expert bias (router.expert_bias"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(s.dir / "hf"));
}

namespace {

// Writes a placement of kTinyQwen's 2 MoE layers x 4 experts for EP 1 with these slots.
std::string write_placement(const fs::path& path, const std::vector<std::vector<int64_t>>& layer0,
                            const std::vector<std::vector<int64_t>>& layer1) {
  Placement p;
  p.num_experts = 4;
  p.expert_parallel = 1;
  p.slots_per_rank = int64_t(layer0.front().size());
  p.layers = {LayerPlacement{layer0}, LayerPlacement{layer1}};
  p.write(path.string());
  return path.string();
}

std::vector<double> run_losses(const fs::path& run) {
  std::vector<double> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto r = nlohmann::json::parse(line);
    if (r["kind"] == "loss") out.push_back(r["loss"].get<double>());
  }
  return out;
}

}  // namespace

TEST(CheckpointSafety, APlacementMovesExpertsAndChangesNothingElse) {
  // parallel.placement at EP 1 orders the experts differently in their bank (and may repeat
  // one): the losses are the contiguous run's, and a checkpoint saved under one placement
  // resumes under another, since it keeps one tensor per global expert.
  TinyRun s = setup(3);
  TrainingRun(s.config, quiet(s.dir / "contiguous")).run();
  auto placed = s.config;
  placed.mutable_parallel()->set_placement(
      write_placement(s.dir / "reversed.json", {{3, 2, 1, 0}}, {{1, 3, 0, 2}}));
  auto first = quiet(s.dir / "moved");
  first.stop_after = 1;
  TrainingRun(placed, first).run();
  auto rest = quiet(s.dir / "moved");
  rest.resume = true;
  TrainingRun(s.config, rest).run();  // resumed contiguous
  const auto expected = run_losses(s.dir / "contiguous"), got = run_losses(s.dir / "moved");
  ASSERT_EQ(got.size(), 3u);
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], expected[i], 1e-6) << "step " << i + 1;

  // Replicas (here two or three copies of an expert on the one rank), every parameter training:
  // the copies share their expert's tokens and sum their gradients, so they stay equal and the
  // losses are the contiguous run's; the checkpoint keeps one tensor per expert and resumes
  // contiguous.
  placed.mutable_parallel()->set_placement(
      write_placement(s.dir / "replicas.json", {{0, 1, 2, 3, 0, 0}}, {{2, 3, 0, 1, 2, 1}}));
  auto replicated = quiet(s.dir / "replicated");
  replicated.stop_after = 2;
  TrainingRun(placed, replicated).run();
  replicated.stop_after = 0;
  replicated.resume = true;
  TrainingRun(s.config, replicated).run();
  const auto copies = run_losses(s.dir / "replicated");
  ASSERT_EQ(copies.size(), expected.size());
  for (size_t i = 0; i < copies.size(); ++i)
    EXPECT_NEAR(copies[i], expected[i], 1e-6) << "step " << i + 1;
  auto routers = s.config;

  // A placement for another model: one line naming the file and what differs.
  routers.mutable_parallel()->set_placement(
      write_placement(s.dir / "three.json", {{0, 1, 2, 3}}, {{0, 1, 2, 3}}));
  Placement three = Placement::read(routers.parallel().placement());
  three.layers.push_back(three.layers.front());
  three.write(routers.parallel().placement());
  const std::string wrong = error_of([&] { TrainingRun(routers, quiet(s.dir / "three")).run(); });
  EXPECT_NE(wrong.find("3 layers, the model has 2 MoE layers"), std::string::npos) << wrong;
}
