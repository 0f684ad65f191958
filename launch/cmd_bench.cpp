// `switchyard bench NAME`: runs one benchmark from bench/'s registry.
#include <iostream>

#include "bench/bench.h"
#include "common/errors.h"
#include "launch/cli.h"

namespace switchyard {

Subcommand bench_command() {
  Subcommand c;
  c.name = "bench";
  std::string names;
  for (const auto& b : bench_registry()) names += (names.empty() ? "" : ", ") + b.name;
  c.summary = "benchmarks: " + names;
  c.add_options = [](po::options_description& opts, po::positional_options_description& pos) {
    std::string help = "which benchmark:";
    for (const auto& b : bench_registry()) help += "\n  " + b.name + ": " + b.summary;
    opts.add_options()("name", po::value<std::string>()->required(), help.c_str())(
        "json", po::bool_switch(), "one JSON object per line")(
        "tokens", po::value<int>(), "tokens per measurement (bench.tokens)")(
        "repeats", po::value<int>(), "timed repetitions, median reported (bench.repeats)")(
        "preset", po::value<std::string>(), "bench model: qwen1.5-moe-a2.7b or tiny")(
        "quant", po::value<std::string>(), "bench model: expert quantization none, int8 or int4");
    pos.add("name", 1);
  };
  c.run = [](const CommandArgs& args) {
    auto overrides = args.overrides;
    if (args.vars.count("tokens"))
      overrides.push_back("bench.tokens=" + std::to_string(args.vars["tokens"].as<int>()));
    if (args.vars.count("repeats"))
      overrides.push_back("bench.repeats=" + std::to_string(args.vars["repeats"].as<int>()));
    if (args.vars.count("preset"))
      overrides.push_back("bench.model_preset=" + args.vars["preset"].as<std::string>());
    if (args.vars.count("quant")) {
      const auto q = args.vars["quant"].as<std::string>();
      const std::string type = q == "int8"   ? "INT8"
                               : q == "int4" ? "INT4"
                               : q == "none" ? "QUANT_NONE"
                                             : "";
      if (type.empty()) throw ConfigError("--quant " + q + ": expected none, int8 or int4");
      overrides.push_back("model.quant.experts=" + type);
    }
    const RunConfig config = build_run_config(args.config_path, overrides);
    const std::string name = args.vars["name"].as<std::string>();
    const BenchEntry* bench = find_bench(name);
    if (!bench) throw ConfigError("unknown benchmark '" + name + "' (see switchyard bench --help)");
    bench->run(BenchContext{config, args.vars["json"].as<bool>(), std::cout});
    return 0;
  };
  return c;
}

}  // namespace switchyard
