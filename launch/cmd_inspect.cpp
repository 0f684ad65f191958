// `switchyard inspect PATH`: architecture, parameter counts (total, active per token, per
// component), quantization and the tensor list of a checkpoint, from headers only.
#include <filesystem>
#include <iostream>
#include <sstream>

#include "common/errors.h"
#include "common/table.h"
#include "launch/cli.h"
#include "models/checkpoint_summary.h"
#include "models/load_model.h"

namespace switchyard {
namespace {

std::string billions(int64_t n) {
  std::ostringstream os;
  os.precision(n >= 1'000'000'000 ? 3 : 4);
  if (n >= 1'000'000'000)
    os << double(n) / 1e9 << " B";
  else
    os << double(n) / 1e6 << " M";
  return os.str();
}

void print_text(const CheckpointSummary& s, bool every_tensor, std::ostream& os) {
  os << "checkpoint    " << s.path << "\n";
  for (const auto& [key, value] : s.architecture) os << "  " << key << " = " << value << "\n";
  os << "quantization  " << s.quantization << "\n"
     << "parameters    " << s.total_parameters << " (" << billions(s.total_parameters)
     << "), active per token " << s.active_parameters << " (" << billions(s.active_parameters)
     << "), " << s.total_bytes << " bytes stored\n\n";
  Table components({"component", "tensors", "parameters", "share", "bytes", "bytes_per_param"});
  for (const auto& c : s.components)
    components.add(
        {c.component, c.tensors, c.parameters,
         Cell(double(c.parameters) / double(std::max<int64_t>(1, s.total_parameters)), 3), c.bytes,
         Cell(c.parameters ? double(c.bytes) / double(c.parameters) : 0.0, 3)});
  components.print(os);
  os << "\n";
  if (every_tensor) {
    Table tensors({"tensor", "dtype", "shape"});
    for (const auto& t : s.tensors) tensors.add({t[0], t[1], t[2]});
    tensors.print(os);
    return;
  }
  Table groups({"tensors (layer and expert numbers as *)", "count", "dtype", "shape"});
  for (const auto& g : s.groups) groups.add({g.pattern, g.count, g.dtype, g.shape});
  groups.print(os);
}

void print_json(const CheckpointSummary& s, std::ostream& os) {
  Table summary({"kind", "path", "quantization", "params", "active_params", "bytes"});
  summary.add(
      {"summary", s.path, s.quantization, s.total_parameters, s.active_parameters, s.total_bytes});
  summary.print_json(os);
  Table arch({"kind", "key", "value"});
  for (const auto& [key, value] : s.architecture) arch.add({"architecture", key, value});
  arch.print_json(os);
  Table components({"kind", "component", "tensors", "params", "bytes"});
  for (const auto& c : s.components)
    components.add({"component", c.component, c.tensors, c.parameters, c.bytes});
  components.print_json(os);
  Table tensors({"kind", "name", "dtype", "shape"});
  for (const auto& t : s.tensors) tensors.add({"tensor", t[0], t[1], t[2]});
  tensors.print_json(os);
}

int run_inspect(const CommandArgs& args) {
  // A run folder stands for its newest checkpoint; files and HF/Switchyard folders for themselves.
  std::string path = args.vars["path"].as<std::string>();
  if (std::filesystem::is_directory(path)) path = resolve_model_path(path);
  const CheckpointSummary s = summarize_checkpoint(path);
  if (args.vars.count("json"))
    print_json(s, std::cout);
  else
    print_text(s, args.vars.count("tensors") > 0, std::cout);
  return 0;
}

}  // namespace

Subcommand inspect_command() {
  Subcommand c;
  c.name = "inspect";
  c.summary = "architecture, parameter counts and tensors of a checkpoint (headers only)";
  c.add_options = [](po::options_description& opts, po::positional_options_description& pos) {
    opts.add_options()(
        "path", po::value<std::string>()->required()->value_name("PATH"),
        "Hugging Face folder, Switchyard checkpoint, run folder or .safetensors file")(
        "tensors", "list every tensor instead of name patterns")(
        "json", "one JSON object per line: summary, architecture, components, tensors");
    pos.add("path", 1);
  };
  c.run = run_inspect;
  return c;
}

}  // namespace switchyard
