// `switchyard convert`: a Hugging Face Qwen2-MoE checkpoint (float or GPTQ) in, a float one in
// the hub layout out, with the run config's expert quantization applied (the output then holds
// the dequantized values the quantized model computes with). Runs under mpirun at any EP size;
// each EP rank writes its own experts' shard.
#include <iostream>

#include "common/errors.h"
#include "launch/cli.h"
#include "launch/hf_model.h"

namespace switchyard {
namespace {

int run_convert(const CommandArgs& args) {
  const RunConfig config = build_run_config(args.config_path, args.overrides);
  const std::string dtype = args.vars["dtype"].as<std::string>();
  auto [model, groups] = load_hf_model(args.vars["model"].as<std::string>(), config, dtype);
  const std::string out = args.vars["out"].as<std::string>();
  const torch::Dtype out_dtype = parse_dtype(dtype, model->options().model().dtype);
  export_hf_checkpoint(*model, out, out_dtype);
  if (groups.world->rank() == 0)
    std::cerr << "wrote " << out << " (" << groups.ep_size() << " shard(s), "
              << c10::toString(out_dtype) << ")\n";
  return 0;
}

}  // namespace

Subcommand convert_command() {
  Subcommand c;
  c.name = "convert";
  c.summary =
      "HF checkpoint (float or GPTQ) -> HF hub layout, quantization from the config applied";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("model", po::value<std::string>()->required()->value_name("DIR"),
                       "Hugging Face Qwen2-MoE checkpoint folder")(
        "out", po::value<std::string>()->required()->value_name("DIR"),
        "new folder to write (must not exist)")(
        "dtype", po::value<std::string>()->default_value("checkpoint"),
        "dtype written: checkpoint, float32, bfloat16 or float16");
  };
  c.run = run_convert;
  return c;
}

}  // namespace switchyard
