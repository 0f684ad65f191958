// The evaluation tool's library: evaluation sets cut from token files and token lines, the eval
// loop against a direct computation on a tiny random model, the JSON round trip, and the report's
// SVG and HTML structure.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "common/errors.h"
#include "data/token_file.h"
#include "eval/comparison_report.h"
#include "eval/model_eval.h"
#include "eval/svg_chart.h"

using namespace switchyard;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("sy_eval_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

Qwen2MoeConfig tiny_config() {
  Qwen2MoeConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.moe_intermediate_size = 16;
  c.shared_expert_intermediate_size = 32;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.mlp_only_layers = {1};  // a dense layer between two MoE layers
  c.rope_theta = 10000;
  c.dtype = torch::kFloat;
  return c;
}

EvalSet random_set(int64_t rows, int64_t seq_len, int64_t vocab) {
  EvalSet s;
  s.input_ids = torch::randint(vocab, {rows, seq_len}, torch::kLong);
  s.attention_mask = torch::ones_like(s.input_ids);
  s.targets = torch::randint(vocab, {rows, seq_len}, torch::kLong);
  s.source = "random";
  s.format = "test";
  return s;
}

}  // namespace

TEST(EvalSet, TokenFileIsPackedInDocumentOrderWithShiftedTargets) {
  const std::string path = temp_path("set.tok");
  write_token_file(path, TokenDocuments::from_vectors({{1, 2, 3}, {4, 5, 6, 7}, {8, 9}}, 16, 0));
  // Stream 1 2 3 0 4 5 6 7 0 8 9 0 (12 tokens): (12 - 1) / 3 = 3 blocks of 3 + 1.
  EvalSet set = read_eval_set(path, {.seq_len = 3});
  ASSERT_EQ(set.input_ids.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(set.input_ids.equal(torch::tensor({1, 2, 3, 0, 4, 5, 6, 7, 0}).view({3, 3})));
  EXPECT_TRUE(set.targets.equal(torch::tensor({2, 3, 0, 4, 5, 6, 7, 0, 8}).view({3, 3})));
  EXPECT_EQ(set.predicted_tokens(), 9);
  EXPECT_EQ(set.format, "token file");
  EXPECT_EQ(read_eval_set(path, {.seq_len = 3, .max_sequences = 2}).rows(), 2);
  EXPECT_THROW(read_eval_set(path, {.seq_len = 40}), ConfigError);
  EXPECT_THROW(check_vocabulary(set, 8), ConfigError);  // 8 is the last target
  EXPECT_NO_THROW(check_vocabulary(set, 9));
  std::filesystem::remove(path);
}

TEST(EvalSet, TokenLinesPredictOnlyRealNextTokens) {
  const std::string path = temp_path("lines.txt");
  std::ofstream(path) << "5 6 7\n8\n\n9 10\n";
  EvalSet set = read_eval_set(path, {});
  EXPECT_TRUE(set.targets.equal(torch::tensor({6, 7, -1, -1, -1, -1, 10, -1, -1}).view({3, 3})));
  EXPECT_EQ(set.predicted_tokens(), 3);
  EXPECT_EQ(set.real_tokens(), 6);
  std::ofstream(path) << "8\n";  // one token: nothing to predict
  try {
    read_eval_set(path, {});
    FAIL() << "a set with nothing to predict was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("empty evaluation set"), std::string::npos) << e.what();
  }
  std::ofstream(path) << "";
  EXPECT_THROW(read_eval_set(path, {}), ConfigError);
  std::filesystem::remove(path);
  EXPECT_THROW(read_eval_set(path, {}), ConfigError);  // missing file
}

TEST(CausalLmEval, MatchesTheLossAndCountsOfADirectForward) {
  torch::manual_seed(3);
  const auto cfg = tiny_config();
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  model->eval();
  EvalSet set = random_set(7, 12, cfg.vocab_size);
  // Packed-file shape: targets are the inputs shifted by one.
  auto stream = torch::randint(cfg.vocab_size, {7, 13}, torch::kLong);
  set.input_ids = stream.narrow(1, 0, 12).contiguous();
  set.targets = stream.narrow(1, 1, 12).contiguous();

  const EvalReport r =
      evaluate_model(TaskModel::causal_lm(model), single_process_groups(), set, {.batch_size = 3});
  torch::NoGradGuard no_grad;
  // 13 positions: the first 12 predict targets; torch's cross-entropy as the reference.
  auto logits = model->forward(stream).logits.narrow(1, 0, 12).reshape({-1, cfg.vocab_size});
  const double want =
      torch::nn::functional::cross_entropy(logits, set.targets.reshape(-1)).item<double>();
  EXPECT_NEAR(r.mean_nll, want, 1e-5);
  EXPECT_NEAR(r.perplexity, std::exp(want), 1e-4 * std::exp(want));
  EXPECT_EQ(r.predicted, 7 * 12);
  EXPECT_EQ(r.tokens, 7 * 12);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.layers[0].layer, 0);
  EXPECT_EQ(r.layers[1].layer, 2);
  for (const auto& l : r.layers) {
    int64_t sum = 0;
    for (int64_t t : l.routing.expert_tokens) sum += t;
    EXPECT_EQ(sum, 7 * 12 * 2);
    EXPECT_GT(l.routing.token_entropy, 0);
    EXPECT_LE(l.routing.token_entropy, std::log(8.0) + 1e-9);
    EXPECT_GT(l.moe_s, 0);
    EXPECT_GT(l.router_s, 0);
    EXPECT_LT(l.router_s, l.moe_s);
  }
  ASSERT_EQ(r.ranks.size(), 1u);
  EXPECT_EQ(r.ranks[0].tokens_received, 7 * 12 * 2 * 2);

  // Batching does not change what is counted.
  const EvalReport one =
      evaluate_model(TaskModel::causal_lm(model), single_process_groups(), set, {.batch_size = 1});
  for (size_t l = 0; l < r.layers.size(); ++l)
    EXPECT_EQ(one.layers[l].routing.expert_tokens, r.layers[l].routing.expert_tokens);
  EXPECT_NEAR(one.mean_nll, r.mean_nll, 1e-6);

  // Parameters: all of them (no sharding here), routers = 2 layers x [8, 32].
  int64_t all = 0;
  for (const auto& p : model->parameters()) all += p.numel();
  EXPECT_EQ(r.parameters.total, all);
  EXPECT_EQ(r.parameters.router, 2 * 8 * 32);
  EXPECT_EQ(r.parameters.routed_experts, 2 * 8 * 3 * 16 * 32);
  EXPECT_EQ(r.parameters.active, all - r.parameters.routed_experts * 6 / 8);
}

TEST(CausalLmEval, PaddingIsNeitherRoutedNorPredicted) {
  torch::manual_seed(4);
  const auto cfg = tiny_config();
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  EvalSet set = random_set(2, 6, cfg.vocab_size);
  set.attention_mask = torch::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}).view({2, 6});
  set.targets.index_put_({1, torch::indexing::Slice(2, torch::indexing::None)}, -1);
  set.targets.index_put_({0, 5}, -1);
  const EvalReport r =
      evaluate_model(TaskModel::causal_lm(model), single_process_groups(), set, {});
  EXPECT_EQ(r.tokens, 9);
  EXPECT_EQ(r.predicted, 7);
  EXPECT_EQ(r.layers[0].routing.num_tokens, 9);
  EXPECT_EQ(r.layers[0].routing.num_assignments, 18);
}

TEST(EvalReportJson, RoundTripsAndNamesWhatIsMissing) {
  torch::manual_seed(5);
  const auto cfg = tiny_config();
  Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
  EvalReport r = evaluate_model(TaskModel::causal_lm(model), single_process_groups(),
                                random_set(3, 5, 64), {});
  r.model = "tiny";
  r.dtype = "Float";
  r.device = "cuda:1";
  const auto j = r.to_json();
  EXPECT_EQ(j["schema"], kEvalSchema);
  const EvalReport back = EvalReport::from_json(j, "mem");
  EXPECT_EQ(back.to_json(), j);
  auto older = j;  // results written before the device was recorded ran on the CPU
  older.erase("device");
  EXPECT_EQ(EvalReport::from_json(older, "old").device, "cpu");
  auto broken = j;
  broken["layers"][1].erase("expert_tokens");
  try {
    EvalReport::from_json(broken, "x.json");
    FAIL() << "accepted a layer without expert_tokens";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "x.json layers[1]: missing field \"expert_tokens\"");
  }
  EXPECT_THROW(EvalReport::from_json(nlohmann::ordered_json{{"schema", "other"}}, "y"),
               ConfigError);
  std::ostringstream table;
  back.print(table);
  EXPECT_NE(table.str().find("perplexity"), std::string::npos);
  EXPECT_NE(table.str().find("tokens_received"), std::string::npos);
}

TEST(SvgChart, HeatmapHasOneCellPerValueAndALegend) {
  Heatmap h;
  h.title = "load";
  h.rows = {"0", "1", "2"};
  h.cols = {"a", "b", "c", "d"};
  h.values = {{0, 1, 2, 3}, {1, 1, 1, 1}, {3, 2, 1, 0}};
  h.min = 0;
  h.max = 3;
  const std::string svg = svg_heatmap(h);
  EXPECT_EQ(count(svg, "<rect class=\"cell\""), 12u);
  EXPECT_EQ(count(svg, "class=\"legend\""), 1u);
  EXPECT_NE(svg.find(viridis(0)), std::string::npos);
  EXPECT_NE(svg.find(viridis(1)), std::string::npos);
  EXPECT_EQ(viridis(0), "#440154");
  EXPECT_EQ(viridis(1), "#fde725");
  EXPECT_EQ(viridis(-1), viridis(0));
  EXPECT_EQ(xml_escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
}

TEST(ComparisonReport, HtmlHoldsTheTableAndAHeatmapPerRun) {
  torch::manual_seed(6);
  const auto cfg = tiny_config();
  ComparisonReport report;
  for (const char* name : {"first", "second"}) {
    Qwen2MoeForCausalLM model(Qwen2MoeOptions(cfg, single_process_groups()));
    report.runs.push_back(
        {name, evaluate_model(TaskModel::causal_lm(model), single_process_groups(),
                              random_set(2, 8, 64), {})});
  }
  report.curves.push_back({"run<a>", {1, 2, 3}, {3.0, 2.5, 2.25}});
  const std::string html = render_html(report);
  EXPECT_EQ(count(html, "id=\"comparison\""), 1u);
  EXPECT_EQ(count(html, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\""), 2u);
  EXPECT_EQ(count(html, "<rect class=\"cell\""), 2u * 2 * 8);
  EXPECT_EQ(count(html, "id=\"loss-curves\""), 1u);
  EXPECT_NE(html.find("run&lt;a&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://www.w3.org/2000/svg") != std::string::npos, true);
  EXPECT_EQ(html.find("https://"), std::string::npos);  // nothing fetched from the network
  const std::string md = render_markdown(report);
  EXPECT_NE(md.find("| first | linear |"), std::string::npos);
  EXPECT_NE(md.find("(heatmap_second.svg)"), std::string::npos);

  const std::string dir = temp_path("report");
  const auto files = write_report(report, dir);
  EXPECT_TRUE(std::filesystem::exists(dir + "/report.html"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/heatmap_first.svg"));
  for (const auto& f : files) EXPECT_FALSE(std::filesystem::exists(f + ".partial"));
  std::filesystem::remove_all(dir);
}

TEST(ComparisonReport, LossCurveIsTheMeanOverRanks) {
  const std::string dir = temp_path("run");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/metrics.jsonl")
      << R"({"kind":"loss","step":1,"rank":0,"loss":4.0})"
         "\n"
      << R"({"kind":"loss","step":1,"rank":1,"loss":2.0})"
         "\n"
      << R"({"kind":"load","step":1,"rank":0,"layer":0,"expert_tokens":[1]})"
         "\n"
      << R"({"kind":"loss","step":2,"rank":0,"loss":1.0})"
         "\n";
  const LossCurve c = read_loss_curve(dir);
  EXPECT_EQ(c.steps, (std::vector<double>{1, 2}));
  EXPECT_EQ(c.loss, (std::vector<double>{3.0, 1.0}));
  std::ofstream(dir + "/metrics.jsonl") << "{not json\n";
  EXPECT_THROW(read_loss_curve(dir), ConfigError);
  std::filesystem::remove_all(dir);
  EXPECT_THROW(read_loss_curve(dir), ConfigError);
}
