// Config errors give one line naming the field (and file:line for .pbtxt); every shipped
// config parses and validates.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "configs/run_config.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  auto path = fs::temp_directory_path() / ("switchyard_test_" + name);
  std::ofstream(path) << text;
  return path.string();
}

// The error message of `fn`, which must throw ConfigError.
template <typename F>
std::string config_error(F fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "not one line: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError thrown";
  return "";
}

RunConfig with(std::vector<std::string> sets) {
  return build_run_config("", sets);
}

}  // namespace

TEST(Config, DefaultsValidate) {
  EXPECT_NO_THROW(with({}));
}

TEST(Config, UnknownFieldInFileNamesFileAndLine) {
  auto path = write_temp("typo.pbtxt", "model { hidden_size: 64 }\nrouter {\n  topk: 3\n}\n");
  auto msg = config_error([&] { load_run_config_file(path); });
  EXPECT_NE(msg.find(path + ":3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("topk"), std::string::npos) << msg;
}

TEST(Config, WrongTypeInFile) {
  auto path = write_temp("type.pbtxt", "router { top_k: \"four\" }\n");
  auto msg = config_error([&] { load_run_config_file(path); });
  EXPECT_NE(msg.find(path + ":1:"), std::string::npos) << msg;
}

TEST(Config, MissingFile) {
  auto msg = config_error([] { load_run_config_file("/nonexistent/x.pbtxt"); });
  EXPECT_NE(msg.find("/nonexistent/x.pbtxt"), std::string::npos);
}

TEST(Config, OverridesThroughReflection) {
  auto c = with({"router.top_k=2", "router.score_function=sigmoid", "train.learning_rate=3e-4",
                 "router.norm_topk_prob=true", "bench.fwht_widths=256,512"});
  EXPECT_EQ(c.router().top_k(), 2);
  EXPECT_EQ(c.router().score_function(), config::SIGMOID);
  EXPECT_FLOAT_EQ(c.train().learning_rate(), 3e-4f);
  EXPECT_TRUE(c.router().norm_topk_prob());
  EXPECT_EQ(c.bench().fwht_widths_size(), 2);
  // A field inside a oneof member selects that router.
  auto h = with({"router.mlp_hadamard.hidden=128"});
  EXPECT_EQ(h.router().kind_case(), config::RouterConfig::kMlpHadamard);
  EXPECT_EQ(h.router().mlp_hadamard().hidden(), 128);
  auto hash = with({"router.hash="});
  EXPECT_EQ(hash.router().kind_case(), config::RouterConfig::kHash);
}

TEST(Config, OverrideErrorsNameTheField) {
  EXPECT_NE(config_error([] { with({"router.topk=3"}); }).find("no field 'topk' in RouterConfig"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"router.top_k=four"}); }).find("'four' is not a valid int32"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"router.score_function=tanh"}); }).find("SOFTMAX|SIGMOID"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"router.top_k"}); }).find("expected path.to.field=value"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"router.top_k.x=1"}); }).find("not a message"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"train.learning_rate=1e999"}); }).find("train.learning_rate"),
            std::string::npos);
}

TEST(Config, ValidationNamesTheField) {
  EXPECT_EQ(config_error([] { with({"router.top_k=70"}); }),
            "router.top_k = 70: exceeds model.num_experts (60)");
  EXPECT_EQ(config_error([] { with({"train.learning_rate=-0.1"}); }),
            "train.learning_rate = -0.1: must be positive");
  EXPECT_EQ(config_error([] { with({"model.hidden_size=0"}); }),
            "model.hidden_size = 0: must be positive");
  EXPECT_EQ(config_error([] { with({"router.mlp_hadamard.hidden=96"}); }),
            "router.mlp_hadamard.hidden = 96: must be a power of two (the Walsh-Hadamard width)");
  EXPECT_NE(config_error([] {
              with({"router.mlp_hadamard.hidden=32"});
            }).find("must exceed model.num_experts (60)"),
            std::string::npos);
  EXPECT_EQ(config_error([] { with({"parallel.expert_parallel=7"}); }),
            "parallel.expert_parallel = 7: must divide model.num_experts (60)");
  EXPECT_NE(config_error([] { with({"router.hybrid.initial_mix=1"}); }).find("initial_mix"),
            std::string::npos);
  EXPECT_NE(config_error([] { with({"bench.fwht_widths=100"}); }).find("bench.fwht_widths[0]"),
            std::string::npos);
  EXPECT_EQ(config_error([] { with({"bench.head_chunk_rows=0,-1"}); }),
            "bench.head_chunk_rows[1] = -1: must be >= 0 (0: the default)");
}

TEST(Config, ValidationErrorPointsAtTheLineThatSetTheField) {
  auto path = write_temp("range.pbtxt",
                         "model { num_experts: 8 }\n"
                         "router {\n"
                         "  top_k: 9\n"
                         "}\n"
                         "bench { router_shapes { hidden_size: 4 num_experts: 4 top_k: 2 }\n"
                         "        router_shapes { hidden_size: 4 num_experts: 4 top_k: 5 } }\n");
  EXPECT_EQ(config_error([&] { build_run_config(path, {}); }),
            path + ":3:3: router.top_k = 9: exceeds model.num_experts (8)");
  EXPECT_NE(config_error([&] { build_run_config(path, {"router.top_k=2"}); }).find(path + ":6:"),
            std::string::npos);
  // A --set that overrides the file is named by the message itself, without a file position.
  EXPECT_EQ(config_error([&] { build_run_config(path, {"router.top_k=10"}); }),
            "router.top_k = 10: exceeds model.num_experts (8)");
}

TEST(Config, ShippedConfigsParseAndValidate) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(SWITCHYARD_SOURCE_DIR "/configs")) {
    if (entry.path().extension() != ".pbtxt") continue;
    EXPECT_NO_THROW(build_run_config(entry.path().string(), {})) << entry.path();
    ++seen;
  }
  EXPECT_GT(seen, 0);
}

TEST(Config, TextRoundTrip) {
  auto c = with({"router.attention.num_heads=4", "router.top_k=2"});
  EXPECT_EQ(to_text(parse_run_config(to_text(c), "roundtrip")), to_text(c));
}
