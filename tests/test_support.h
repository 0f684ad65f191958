// What many test files share: the MPI world of the multi-rank binary, the reference data that
// ctest's Python fixtures write, a fresh temporary folder per test, the message of an expected
// error, and tensor comparisons with a relative and a scale-relative tolerance.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "parallel/communicator.h"

namespace switchyard::test {

/// A tiny Qwen2-MoE config.json (2 layers, 4 experts, vocab 64) for runs trained from scratch.
inline constexpr const char* kTinyQwen = R"({
  "model_type": "qwen2_moe", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
  "moe_intermediate_size": 16, "shared_expert_intermediate_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4,
  "num_experts_per_tok": 2, "norm_topk_prob": false, "decoder_sparse_step": 1,
  "mlp_only_layers": [], "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
  "max_position_embeddings": 64, "tie_word_embeddings": false, "router_aux_loss_coef": 0.01,
  "initializer_range": 0.02, "torch_dtype": "float32"})";

/// The MPI world, made once per process (switchyard_mpi_tests runs under mpirun).
inline CommunicatorPtr world() {
  static CommunicatorPtr w = make_mpi_world_communicator();
  return w;
}

/// SWITCHYARD_REF_DIR/<set>/<name> (a fixture's output, e.g. ("bert", "base")); "" when ctest did
/// not set SWITCHYARD_REF_DIR (the test then skips).
inline std::string reference_case(const std::string& set, const std::string& name = "") {
  const char* d = std::getenv("SWITCHYARD_REF_DIR");
  if (!d) return "";
  return std::string(d) + "/" + set + (name.empty() ? "" : "/" + name);
}

/// Removes the folders temp_dir made for a test when that test passes; a failed test's stay for a
/// look, each named in one line (a skipped test's go too). Without it every run of the suite left
/// its training runs behind in the temporary folder.
class TempDirSweeper : public ::testing::EmptyTestEventListener {
 public:
  /// The one sweeper, listening from the first temp_dir on (GoogleTest owns it).
  static TempDirSweeper& instance() {
    static TempDirSweeper* sweeper = [] {
      auto* s = new TempDirSweeper();
      ::testing::UnitTest::GetInstance()->listeners().Append(s);
      return s;
    }();
    return *sweeper;
  }
  void keep_until_test_ends(const std::filesystem::path& dir) { made_.push_back(dir); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    for (const auto& dir : made_) {
      std::error_code ec;
      if (!info.result()->Failed())
        std::filesystem::remove_all(dir, ec);
      else if (std::filesystem::exists(dir, ec))
        std::fprintf(stderr, "%s.%s failed: its folder %s is kept\n", info.test_suite_name(),
                     info.name(), dir.c_str());
    }
    made_.clear();
  }

 private:
  std::vector<std::filesystem::path> made_;
};

/// An empty folder of its own for this process and test (`tag` tells folders of one test apart),
/// removed when the test ends unless it failed. Per process: under mpirun each rank sweeps its own
/// folders only, so a folder shared between ranks needs a barrier before its test ends.
inline std::filesystem::path temp_dir(const std::string& tag = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = "sy_" + std::to_string(::getpid()) + "_" +
                     (info ? std::string(info->test_suite_name()) + "." + info->name() : "") + tag;
  for (char& c : name)
    if (c == '/') c = '_';  // parameterised test names
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // A folder made outside a test (no test running) is left to its maker.
  if (info) TempDirSweeper::instance().keep_until_test_ends(dir);
  return dir;
}

/// The message of the exception `f` throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// `f` throws an Error whose message holds every one of `wants`.
inline void expect_error(const std::function<void()>& f, const std::vector<std::string>& wants) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << wants.front();
  } catch (const Error& e) {
    for (const auto& want : wants)
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
}

/// |a - b| <= rtol |b| + atol max|b| everywhere, in fp32; rtol one bf16 step (2^-7) unless
/// told. On failure: by how much, the scale and the largest difference.
///   usage: EXPECT_TRUE(test::close(x.grad(), reference.grad(), 1e-5, 1e-6));
inline ::testing::AssertionResult close(const torch::Tensor& a, const torch::Tensor& b,
                                        double rtol = 1.0 / 128, double atol = 1e-4) {
  if (!a.defined() || !b.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "sizes " << a.sizes() << " vs " << b.sizes();
  auto a32 = a.to(torch::kFloat), b32 = b.to(torch::kFloat);
  const double scale = b32.abs().max().item<double>();
  auto excess = (a32 - b32).abs() - (rtol * b32.abs() + atol * scale);
  const double worst = excess.max().item<double>();
  if (worst <= 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "exceeds the tolerance by " << worst << " (scale " << scale << ", max |a - b| "
         << (a32 - b32).abs().max().item<double>() << ")";
}

/// A copy of t that autograd treats as a leaf to take gradients of.
inline torch::Tensor leaf(const torch::Tensor& t) {
  return t.detach().clone().requires_grad_(true);
}

}  // namespace switchyard::test
