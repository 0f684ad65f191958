// Benchmarks behind `switchyard bench NAME`: a registry of named benchmarks and the shared
// timing rule (median of repeated runs after warm-up).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "configs/run_config.h"
#include "parallel/communicator.h"

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
BenchEntry rates_bench_entry();
BenchEntry linear_bench_entry();
BenchEntry head_bench_entry();

/// One MoE layer's shape (`bench layer`, and the speed table of `bench quant`).
struct LayerShape {
  std::string name;
  int64_t hidden, experts, top_k, intermediate, shared;  ///< shared = 0: no shared expert
};
inline const LayerShape kQwen15MoeLayer{"qwen1.5-moe", 2048, 60, 4, 1408, 5632};

/// The shapes bench.layer_shapes names, or `defaults` when it names none.
std::vector<LayerShape> layer_shapes(const config::BenchConfig& b,
                                     std::vector<LayerShape> defaults);

/// bench.device: the CPU, or the GPU ("cuda"; a ConfigError where none is visible).
torch::Device bench_device(const config::BenchConfig& b);

/// Median wall-clock microseconds of fn() over `repeats` runs after `warmup` untimed runs.
double median_us(const std::function<void()>& fn, int warmup, int repeats);

/// Every rank runs the same functions, alternating call by call so drift on a shared machine
/// hits them alike, each call started together (a barrier). Returns, for each function, the
/// median over repeats of the slowest rank's microseconds per call.
std::vector<double> median_max_us(const CommunicatorPtr& world,
                                  const std::vector<std::function<void()>>& fns, int warmup,
                                  int repeats);

}  // namespace switchyard
