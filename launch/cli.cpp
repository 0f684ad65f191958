// Subcommand dispatch and the one place where errors become messages and exit codes.
#include "launch/cli.h"

#include <unistd.h>

#include <iostream>

#include "common/errors.h"
#include "parallel/communicator.h"

namespace switchyard {

const std::vector<Subcommand>& subcommands() {
  static const std::vector<Subcommand> commands = {
      info_command(), bench_command(), eval_command(),   inspect_command(),   convert_command(),
      data_command(), train_command(), report_command(), placement_command(), plan_command()};
  return commands;
}

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

void print_usage(std::ostream& os) {
  os << "usage: switchyard <subcommand> [--config FILE] [--set path.to.field=value ...] [options]\n"
        "\nsubcommands:\n";
  for (const auto& c : subcommands())
    os << "  " << c.name << std::string(10 - c.name.size(), ' ') << c.summary << "\n";
  os << "\n`switchyard <subcommand> --help` lists a subcommand's options.\n";
}

po::options_description common_options() {
  po::options_description opts("common options");
  opts.add_options()("help,h", "show this help")(
      "config", po::value<std::string>()->value_name("FILE"), "run config (.pbtxt)")(
      "set", po::value<std::vector<std::string>>()->composing()->value_name("PATH=VALUE"),
      "override one config field, e.g. --set router.top_k=2 (repeatable)");
  return opts;
}

int run_subcommand(const Subcommand& cmd, int argc, char** argv) {
  po::options_description own(cmd.name + " options");
  po::positional_options_description positional;
  if (cmd.add_options) cmd.add_options(own, positional);
  po::options_description all;
  all.add(common_options()).add(own);

  CommandArgs args;
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(),
            args.vars);
  if (args.vars.count("help")) {
    std::cout << "switchyard " << cmd.name << ": " << cmd.summary << "\n\n" << all << "\n";
    return kExitOk;
  }
  po::notify(args.vars);
  if (args.vars.count("config")) args.config_path = args.vars["config"].as<std::string>();
  if (args.vars.count("set")) args.overrides = args.vars["set"].as<std::vector<std::string>>();
  return cmd.run(args);
}

}  // namespace

int run_cli(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    print_usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  const std::string name = argv[1];
  const Subcommand* cmd = nullptr;
  for (const auto& c : subcommands())
    if (c.name == name) cmd = &c;
  if (!cmd) {
    std::cerr << "switchyard: unknown subcommand '" << name << "' (try --help)\n";
    return kExitUsage;
  }
  // One line naming what failed; under mpirun the rank and its host are named too and
  // MPI_Abort stops the other ranks, which would otherwise wait forever in their next collective.
  auto fail = [&](const std::string& what, int code) {
    const int rank = distributed_rank();
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::cerr << "switchyard " << name
              << (rank >= 0 ? " (rank " + std::to_string(rank) + " on " + host + ")" : "") << ": "
              << what << "\n"
              << std::flush;
    abort_world_if_distributed(code);
    return code;
  };
  try {
    return run_subcommand(*cmd, argc - 1, argv + 1);
  } catch (const po::error& e) {
    return fail(e.what(), kExitUsage);
  } catch (const ConfigError& e) {
    return fail(std::string("config error: ") + e.what(), kExitUsage);
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace(), kExitFailure);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitFailure);
  }
}

}  // namespace switchyard
