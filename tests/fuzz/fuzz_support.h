// Helpers shared by the libFuzzer targets (tests/fuzz_*.cpp): a private scratch folder for the
// readers that take a path, and the check that turns a broken invariant into a finding.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace switchyard::fuzz {

/// A broken oracle: print why, then abort so libFuzzer keeps the input as a crash.
#define FUZZ_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "oracle failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, "" __VA_ARGS__);                                            \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

/// `name` inside a folder of this process's own, removed at exit: runs in parallel (ctest -j)
/// never share a file.
inline std::string scratch_path(const std::string& name) {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "switchyard_fuzz.XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    static const std::string keep = tmpl;
    std::atexit([] { std::filesystem::remove_all(keep); });
    return std::filesystem::path(tmpl);
  }();
  return (dir / name).string();
}

inline void write_bytes(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(size));
  if (!out.flush()) std::abort();
}

}  // namespace switchyard::fuzz
