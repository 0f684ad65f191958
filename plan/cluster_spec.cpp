#include "plan/cluster_spec.h"

#include <cmath>
#include <functional>

#include "common/errors.h"

namespace switchyard {
namespace {

// Datasheet peaks times the efficiencies a tuned kernel or collective reaches on them (stated
// in each `source`): GEMMs 60% of the dense tensor-core peak, HBM 80%, NVLink all-to-all 75% of
// one direction, InfiniBand 85% of the NIC's line rate.
std::vector<ClusterSpec> make_presets() {
  ClusterSpec h100;
  h100.name = "8xh100";
  h100.source =
      "H100 SXM datasheet x efficiency: 989 bf16 / 67 fp32 TFLOPS x 0.6, HBM3 3350 GB/s x 0.8, "
      "NVLink 4 450 GB/s per direction x 0.75, one 400 Gb/s InfiniBand NIC per GPU x 0.85";
  h100.nodes = 1;
  h100.devices_per_node = 8;
  h100.memory_gb = 80;
  h100.runtime_gb = 0.5;  // a CUDA context with PyTorch's kernels loaded, typically 0.4-0.6 GB
  h100.tflops_bf16 = 989 * 0.6;
  h100.tflops_fp32 = 67 * 0.6;
  h100.memory_bandwidth_gbs = 3350 * 0.8;
  h100.intra_node_gbs = 450 * 0.75;
  h100.inter_node_gbs = 50 * 0.85;
  h100.intra_node_latency_us = 15;
  h100.inter_node_latency_us = 25;

  ClusterSpec h200 = h100;
  h200.name = "8xh200";
  h200.source =
      "H200 SXM datasheet x efficiency: as 8xh100 (same tensor cores and NVLink), 141 GB HBM3e "
      "4800 GB/s x 0.8";
  h200.memory_gb = 141;
  h200.memory_bandwidth_gbs = 4800 * 0.8;

  // This build machine: 2 cores, 24 GiB, 4 MPI ranks sharing them.
  ClusterSpec cpu;
  cpu.name = "cpu";
  cpu.source =
      "the 2-core development machine, 4 ranks of 1 thread: `bench rates` under mpirun -np 4 "
      "(docs/planning.md, 2026-12-06): GEMMs and the expert bank at hidden 1024, memory, "
      "per-layer overhead, the optimizer per parameter, all-to-all; bf16 as fp32 (fp32 GEMMs "
      "underneath, as on a CPU without bf16 instructions; where it has them, `bench rates` "
      "prints the faster tflops_bf16 to pass with --cluster-set)";
  cpu.nodes = 1;
  cpu.devices_per_node = 4;
  cpu.ranks_share_node = true;
  cpu.memory_gb = 24 * 1.073741824;  // 24 GiB
  // launch/plan_calibration.sh: the quickstart base's peak RSS less its predicted model terms,
  // 0.46-0.49 GB at EP 1, 2 and 4 (2026-12-06).
  cpu.runtime_gb = 0.47;
  // Node rates: the 4 ranks' rates summed, per-rank times divided by 4 (plan shares them out).
  // launch/plan_calibration.sh's 4-rank `bench rates` at the medium model's shape, rounded; the
  // machine's speed drifts by tens of percent between runs (2026-12-06).
  cpu.tflops_bf16 = 0.16;
  cpu.tflops_fp32 = 0.16;
  cpu.memory_bandwidth_gbs = 80;
  cpu.layer_overhead_ms = 0.65;
  cpu.optimizer_ns_per_param = 5;
  cpu.expert_gemm_efficiency = 0.9;
  cpu.expert_wgrad_efficiency = 0.5;
  cpu.intra_node_gbs = 0.65;
  cpu.inter_node_gbs = 0.54;  // one node: never used
  cpu.intra_node_latency_us = 40;
  cpu.inter_node_latency_us = 100;
  return {h100, h200, cpu};
}

struct Field {
  const char* name;
  std::function<void(ClusterSpec&, double)> set;
};

const std::vector<Field>& fields() {
  static const std::vector<Field> all = {
      {"nodes", [](ClusterSpec& s, double v) { s.nodes = int(v); }},
      {"devices_per_node", [](ClusterSpec& s, double v) { s.devices_per_node = int(v); }},
      {"memory_gb", [](ClusterSpec& s, double v) { s.memory_gb = v; }},
      {"runtime_gb", [](ClusterSpec& s, double v) { s.runtime_gb = v; }},
      {"ranks_share_node", [](ClusterSpec& s, double v) { s.ranks_share_node = v != 0; }},
      {"tflops_bf16", [](ClusterSpec& s, double v) { s.tflops_bf16 = v; }},
      {"tflops_fp32", [](ClusterSpec& s, double v) { s.tflops_fp32 = v; }},
      {"memory_bandwidth_gbs", [](ClusterSpec& s, double v) { s.memory_bandwidth_gbs = v; }},
      {"layer_overhead_ms", [](ClusterSpec& s, double v) { s.layer_overhead_ms = v; }},
      {"optimizer_ns_per_param", [](ClusterSpec& s, double v) { s.optimizer_ns_per_param = v; }},
      {"expert_gemm_efficiency", [](ClusterSpec& s, double v) { s.expert_gemm_efficiency = v; }},
      {"expert_wgrad_efficiency", [](ClusterSpec& s, double v) { s.expert_wgrad_efficiency = v; }},
      {"dequant_gweights_per_s", [](ClusterSpec& s, double v) { s.dequant_gweights_per_s = v; }},
      {"lm_head_tflops", [](ClusterSpec& s, double v) { s.lm_head_tflops = v; }},
      {"intra_node_gbs", [](ClusterSpec& s, double v) { s.intra_node_gbs = v; }},
      {"inter_node_gbs", [](ClusterSpec& s, double v) { s.inter_node_gbs = v; }},
      {"intra_node_latency_us", [](ClusterSpec& s, double v) { s.intra_node_latency_us = v; }},
      {"inter_node_latency_us", [](ClusterSpec& s, double v) { s.inter_node_latency_us = v; }},
  };
  return all;
}

}  // namespace

void ClusterSpec::validate() const {
  auto positive = [&](const char* field, double v) {
    if (!(std::isfinite(v) && v > 0))
      throw ConfigError(
          detail::concat("cluster ", name, ": ", field, " = ", v, " must be a positive number"));
  };
  positive("nodes", nodes);
  positive("devices_per_node", devices_per_node);
  positive("memory_gb", memory_gb);
  positive("tflops_bf16", tflops_bf16);
  positive("tflops_fp32", tflops_fp32);
  positive("memory_bandwidth_gbs", memory_bandwidth_gbs);
  positive("intra_node_gbs", intra_node_gbs);
  positive("inter_node_gbs", inter_node_gbs);
  if (!(runtime_gb >= 0))
    throw ConfigError("cluster " + name + ": runtime_gb must not be negative");
  if (!(layer_overhead_ms >= 0 && optimizer_ns_per_param >= 0 && dequant_gweights_per_s >= 0 &&
        lm_head_tflops >= 0))
    throw ConfigError("cluster " + name +
                      ": layer_overhead_ms, optimizer_ns_per_param, dequant_gweights_per_s and "
                      "lm_head_tflops must not be negative (0: not modelled, or derived from the "
                      "other rates)");
  for (const auto& [field, v] :
       {std::pair<const char*, double>{"expert_gemm_efficiency", expert_gemm_efficiency},
        {"expert_wgrad_efficiency", expert_wgrad_efficiency}})
    if (!(v > 0 && v <= 1))
      throw ConfigError(
          detail::concat("cluster ", name, ": ", field, " = ", v, " must be in (0, 1]"));
  if (!(intra_node_latency_us >= 0 && inter_node_latency_us >= 0))
    throw ConfigError("cluster " + name + ": latencies must not be negative");
}

const std::vector<ClusterSpec>& cluster_presets() {
  static const std::vector<ClusterSpec> presets = make_presets();
  return presets;
}

ClusterSpec cluster_preset(const std::string& name) {
  std::string names;
  for (const auto& p : cluster_presets()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  throw ConfigError("--cluster " + name + ": no such preset (presets: " + names + ")");
}

std::string cluster_field_names() {
  std::string names;
  for (const auto& f : fields()) names += (names.empty() ? "" : ", ") + std::string(f.name);
  return names;
}

void set_cluster_field(ClusterSpec& spec, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string key = assignment.substr(0, eq);
  for (const auto& f : fields()) {
    if (key != f.name) continue;
    const std::string text = eq == std::string::npos ? "" : assignment.substr(eq + 1);
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (text.empty() || used != text.size())
      throw ConfigError("--cluster-set " + assignment + ": " + key + " takes a number");
    f.set(spec, value);
    return;
  }
  throw ConfigError("--cluster-set " + assignment + ": no field '" + key +
                    "' (fields: " + cluster_field_names() + ")");
}

}  // namespace switchyard
