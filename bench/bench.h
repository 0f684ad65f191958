// Benchmarks behind `switchyard bench NAME`: a registry of named benchmarks and the shared
// timing rule (median of repeated runs after warm-up).
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "configs/run_config.h"

namespace switchyard {

struct BenchContext {
  const RunConfig& config;
  bool json;  ///< one JSON object per line instead of tables
  std::ostream& out;
};

struct BenchEntry {
  std::string name;
  std::string summary;
  std::function<void(const BenchContext&)> run;
};

const std::vector<BenchEntry>& bench_registry();
const BenchEntry* find_bench(const std::string& name);

/// Benchmarks defined in their own files.
BenchEntry layer_bench_entry();
BenchEntry alltoall_bench_entry();
BenchEntry model_bench_entry();
BenchEntry quant_bench_entry();

/// Median wall-clock microseconds of fn() over `repeats` runs after `warmup` untimed runs.
double median_us(const std::function<void()>& fn, int warmup, int repeats);

}  // namespace switchyard
