// Entry point of the `switchyard` executable; everything else lives in the library.
#include <malloc.h>

#include "launch/cli.h"

int main(int argc, char** argv) {
  // Keep freed memory for reuse. By default glibc maps every block above ~32 MiB fresh from the
  // kernel and unmaps it on free, so each step's large activations and all-to-all buffers pay
  // page faults again (measured: a 64 MiB exchange at 2 ranks took 3.6x raw MPI_Alltoallv into
  // a reused buffer; with these settings 1.0x). Training reuses the same sizes every step.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return switchyard::run_cli(argc, argv);
}
