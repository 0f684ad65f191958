// `switchyard convert`: a model (Hugging Face folder, float or GPTQ; Switchyard checkpoint; run
// folder) in, and out either the hub layout (--format hf: floats, quantized experts written
// dequantized, loadable by transformers) or a complete Switchyard checkpoint (--format
// switchyard: quantized experts kept as their codes). Quantization and router replacement come
// from the config. Runs under mpirun at any EP size; each EP rank writes its own experts.
#include <iostream>

#include "common/errors.h"
#include "launch/cli.h"
#include "models/load_model.h"

namespace switchyard {
namespace {

int run_convert(const CommandArgs& args) {
  RunConfig config = build_run_config(args.config_path, args.overrides);
  // Converting is reading and writing: a GPU would only add two copies.
  config.mutable_parallel()->set_device("cpu");
  const std::string dtype = args.vars["dtype"].as<std::string>();
  const std::string format = args.vars["format"].as<std::string>();
  if (format != "hf" && format != "switchyard")
    throw ConfigError("--format " + format + ": expected hf or switchyard");
  const std::string source = args.vars["model"].as<std::string>();
  const std::string out = args.vars["out"].as<std::string>();
  LoadedModel m = load_model(source, config, dtype);
  const torch::Dtype out_dtype = parse_dtype(dtype, m.model->checkpoint_dtype());
  if (format == "hf") {
    if (auto why = m.architecture().refusal(ArchFeature::kHfExport))
      throw ConfigError("convert: " + *why);
    m.model->export_hf(out, out_dtype);
  } else {
    save_switchyard_checkpoint(m, out, out_dtype, source);
  }
  if (m.groups.world->rank() == 0)
    std::cerr << "wrote " << out << " (" << format << ", " << m.groups.ep_size()
              << " expert shard(s), " << c10::toString(out_dtype) << ")\n";
  return 0;
}

}  // namespace

Subcommand convert_command() {
  Subcommand c;
  c.name = "convert";
  c.summary =
      "HF or Switchyard checkpoint -> HF hub layout or Switchyard checkpoint, quantization from "
      "the config applied";
  c.add_options = [](po::options_description& opts, po::positional_options_description&) {
    opts.add_options()("model", po::value<std::string>()->required()->value_name("PATH"),
                       "Hugging Face folder, Switchyard checkpoint or run folder")(
        "out", po::value<std::string>()->required()->value_name("DIR"),
        "new folder to write (must not exist)")(
        "format", po::value<std::string>()->default_value("hf"),
        "hf (hub layout, dequantized experts) or switchyard (checkpoint, experts as codes)")(
        "dtype", po::value<std::string>()->default_value("checkpoint"),
        "dtype written: checkpoint, float32, bfloat16 or float16");
  };
  c.run = run_convert;
  return c;
}

}  // namespace switchyard
