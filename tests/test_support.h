// What many test files share: the MPI world of the multi-rank binary, the reference data that
// ctest's Python fixtures write, a fresh temporary folder per test, and the message of an
// expected error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

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

/// An empty folder of its own for this process and test (`tag` tells folders of one test apart).
inline std::filesystem::path temp_dir(const std::string& tag = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = "sy_" + std::to_string(::getpid()) + "_" +
                     (info ? std::string(info->test_suite_name()) + "." + info->name() : "") + tag;
  for (char& c : name)
    if (c == '/') c = '_';  // parameterised test names
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
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

}  // namespace switchyard::test
