// `switchyard info`: what this binary was built with and what it finds at run time.
#include <mpi.h>
#include <torch/version.h>

#include <iostream>

#include "common/build_info.h"
#include "launch/cli.h"

#ifdef SWITCHYARD_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace switchyard {
namespace {

void print_info(std::ostream& os) {
  auto row = [&](const std::string& k, const std::string& v) {
    os << "  " << k << std::string(k.size() < 22 ? 22 - k.size() : 1, ' ') << v << "\n";
  };
  os << "switchyard " << SWITCHYARD_VERSION << "\n";
  row("build type", SWITCHYARD_BUILD_TYPE);
  row("compiler", SWITCHYARD_CXX_COMPILER);
  row("LibTorch", TORCH_VERSION);
  row("torch threads", std::to_string(torch::get_num_threads()));

  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);  // callable before MPI_Init
  std::string mpi(mpi_version, len);
  row("MPI", mpi.substr(0, mpi.find_first_of(",\n")));

#ifdef SWITCHYARD_WITH_CUDA
  row("CUDA compiled in", std::string("yes (nvcc ") + SWITCHYARD_CUDA_COMPILER + ", sm " +
                              SWITCHYARD_CUDA_ARCHITECTURES + ")");
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  row("CUDA runtime", std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10));
  int nccl = 0;
  ncclGetVersion(&nccl);
  row("NCCL compiled in", "yes, " + std::to_string(nccl / 10000) + "." +
                              std::to_string(nccl / 100 % 100) + "." + std::to_string(nccl % 100) +
                              " (" + SWITCHYARD_NCCL_LIBRARY + ")");
#else
  row("CUDA compiled in", "no (CPU-only build)");
  row("NCCL compiled in", "no");
#endif
  const bool gpu = torch::cuda::is_available();
  row("CUDA available", gpu ? "yes, " + std::to_string(torch::cuda::device_count()) + " device(s)"
                            : "no (no GPU visible)");
}

}  // namespace

Subcommand info_command() {
  Subcommand c;
  c.name = "info";
  c.summary = "versions of LibTorch, MPI, NCCL, CUDA availability, build options";
  c.run = [](const CommandArgs&) {
    print_info(std::cout);
    return 0;
  };
  return c;
}

}  // namespace switchyard
