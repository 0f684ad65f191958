// The `switchyard` command line: a registry of subcommands, each with its own options, parsed
// by Boost.Program_options on top of the options every subcommand shares (--config, --set).
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <string>
#include <vector>

namespace switchyard {

namespace po = boost::program_options;

/// What a subcommand receives after parsing.
struct CommandArgs {
  po::variables_map vars;
  std::string config_path;             ///< --config, may be empty
  std::vector<std::string> overrides;  ///< every --set, in order
};

struct Subcommand {
  std::string name;
  std::string summary;
  /// Adds the subcommand's own options (and positionals) to the parser.
  std::function<void(po::options_description&, po::positional_options_description&)> add_options;
  /// Runs it; the return value is the process exit code.
  std::function<int(const CommandArgs&)> run;
};

const std::vector<Subcommand>& subcommands();

/// Parses argv and runs the subcommand. Exit codes: 0 success, 1 runtime failure, 2 bad input.
int run_cli(int argc, char** argv);

// Subcommand definitions, one file each (launch/cmd_*.cpp).
Subcommand info_command();
Subcommand bench_command();
Subcommand eval_command();
Subcommand inspect_command();
Subcommand convert_command();
Subcommand train_command();
Subcommand data_command();
Subcommand report_command();
Subcommand placement_command();
Subcommand plan_command();

}  // namespace switchyard
