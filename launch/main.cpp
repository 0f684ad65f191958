// Entry point of the `switchyard` executable; everything else lives in the library.
#include "launch/cli.h"

int main(int argc, char** argv) {
  return switchyard::run_cli(argc, argv);
}
