// `switchyard report`: the router comparison report from several `switchyard eval --json`
// results (and the training runs' metrics.jsonl for loss curves), as HTML and Markdown.
#include <filesystem>
#include <iostream>
#include <set>

#include "common/errors.h"
#include "eval/comparison_report.h"
#include "launch/cli.h"

namespace switchyard {
namespace {

// "NAME=PATH" names a result explicitly; a bare PATH is named after its file.
std::pair<std::string, std::string> split_named(const std::string& arg) {
  const auto eq = arg.find('=');
  if (eq != std::string::npos && eq > 0 && !std::filesystem::exists(arg))
    return {arg.substr(0, eq), arg.substr(eq + 1)};
  return {std::filesystem::path(arg).stem().string(), arg};
}

int run_report(const CommandArgs& args) {
  if (!args.vars.count("results"))
    throw ConfigError("report: no eval results given (switchyard report A.json B.json --out DIR)");
  ComparisonReport report;
  if (args.vars.count("title")) report.title = args.vars["title"].as<std::string>();
  std::set<std::string> names;
  for (const auto& arg : args.vars["results"].as<std::vector<std::string>>()) {
    auto [name, path] = split_named(arg);
    if (!names.insert(name).second)
      throw ConfigError("report: two results are named " + name + "; name them as NAME=PATH");
    report.runs.push_back({name, EvalReport::read(path)});
  }
  if (args.vars.count("train-log"))
    for (const auto& arg : args.vars["train-log"].as<std::vector<std::string>>()) {
      auto [name, path] = split_named(arg);
      LossCurve curve = read_loss_curve(path);
      if (arg.find('=') != std::string::npos && !std::filesystem::exists(arg)) curve.name = name;
      report.curves.push_back(std::move(curve));
    }
  const std::string out = args.vars["out"].as<std::string>();
  for (const auto& path : write_report(report, out)) std::cerr << "wrote " << path << "\n";
  std::cout << (std::filesystem::path(out) / "report.html").string() << "\n";
  return 0;
}

}  // namespace

Subcommand report_command() {
  Subcommand c;
  c.name = "report";
  c.summary = "router comparison report (HTML + Markdown) from eval --json results";
  c.add_options = [](po::options_description& opts, po::positional_options_description& pos) {
    opts.add_options()("results", po::value<std::vector<std::string>>()->value_name("[NAME=]JSON"),
                       "`switchyard eval --json` results to compare (positional, repeatable)")(
        "train-log", po::value<std::vector<std::string>>()->composing()->value_name("[NAME=]DIR"),
        "training run folder (or its metrics.jsonl) for the loss curves (repeatable)")(
        "out", po::value<std::string>()->required()->value_name("DIR"),
        "writes DIR/report.html, DIR/report.md and the figures as DIR/*.svg")(
        "title", po::value<std::string>()->value_name("TEXT"), "report title");
    pos.add("results", -1);
  };
  c.run = run_report;
  return c;
}

}  // namespace switchyard
