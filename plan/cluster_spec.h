// The machines `switchyard plan` plans for: a cluster of nodes with devices of some memory,
// compute rate and links, named presets for the common ones and key=value overrides.
#pragma once

#include <string>
#include <vector>

namespace switchyard {

/// One cluster. Rates are what a kernel or a collective reaches, not a datasheet's peak: the
/// presets take the peak times an efficiency and say so in `source`; calibration replaces them
/// with measured ones (`--cluster-set`).
struct ClusterSpec {
  std::string name;
  std::string source;  ///< where the numbers come from
  int nodes = 1;
  int devices_per_node = 8;  ///< ranks per node (GPUs, or MPI ranks on a CPU)
  double memory_gb = 80;     ///< per device, 1e9 bytes
  /// What a rank holds before the model: the runtime (CUDA context, or on a CPU the resident
  /// libraries, MPI and allocator pools), 1e9 bytes.
  double runtime_gb = 0;
  /// CPU nodes: the ranks of a node share its memory, cores and memory bandwidth, so
  /// memory_gb, the TFLOPS and the memory rates are the node's, divided among its ranks (and
  /// the per-layer and per-parameter times multiplied by them).
  bool ranks_share_node = false;
  double tflops_bf16 = 0;  ///< reached by the model's GEMMs, per device
  double tflops_fp32 = 0;
  double memory_bandwidth_gbs = 0;  ///< per device (kept activations, the optimizer's passes)
  /// The fixed cost of one decoder layer's forward and backward per micro-batch, whatever its
  /// size: op dispatch and autograd bookkeeping on a CPU, kernel launches on a GPU. 0: none.
  double layer_overhead_ms = 0;
  /// The optimizer per trained parameter: the finiteness verdict, the norm, clipping, AdamW and
  /// zero_grad, as `switchyard bench rates` times them. 0: AdamW's bytes at memory_bandwidth_gbs.
  double optimizer_ns_per_param = 0;
  /// The routed experts' forward and input-gradient GEMMs, as a fraction of the TFLOPS above:
  /// many small GEMMs (rows per expert = tokens * k / E) and the SwiGLU between them reach less
  /// than one large GEMM. `bench rates` measures the expert bank at a layer shape. 1: the rate.
  double expert_gemm_efficiency = 1;
  /// The same for the experts' weight gradients, when they train (on a CPU their new memory
  /// each step is much of it).
  double expert_wgrad_efficiency = 1;
  /// Quantized experts: billions of weights dequantised per second per device, as the bank of
  /// the run's dtype reaches it (`bench rates` with model.quant: the quantized bank's extra time
  /// over the float one). Each expert with rows is dequantised by its forward and again by its
  /// input gradient. 0: the codes read and the weight written and read at memory_bandwidth_gbs.
  double dequant_gweights_per_s = 0;
  /// The LM head and the loss over its logits, as TFLOPS of the head's GEMMs (tokens x hidden x
  /// vocabulary), per device, in the activations' dtype: `bench rates` times both at the run's
  /// shape (in a small model the loss's passes over the logits are most of it). 0: the GEMMs at
  /// tflops_bf16/fp32 and the logits' traffic at memory_bandwidth_gbs.
  double lm_head_tflops = 0;
  double intra_node_gbs = 0;         ///< per device, one direction (NVLink, shared memory)
  double inter_node_gbs = 0;         ///< per device, one direction (InfiniBand / Ethernet NIC)
  double intra_node_latency_us = 0;  ///< per collective call
  double inter_node_latency_us = 0;

  int world() const { return nodes * devices_per_node; }
  /// Throws ConfigError naming the first field out of range.
  void validate() const;
};

/// The presets, in the order --help lists them.
const std::vector<ClusterSpec>& cluster_presets();

/// The preset named `name`; throws ConfigError listing the names for an unknown one.
ClusterSpec cluster_preset(const std::string& name);

/// Applies one "field=value" (e.g. "nodes=4", "inter_node_gbs=25") to `spec`; throws
/// ConfigError naming the field for an unknown field or a value that does not parse.
void set_cluster_field(ClusterSpec& spec, const std::string& assignment);

/// The field names set_cluster_field accepts, comma-separated (for --help and errors).
std::string cluster_field_names();

}  // namespace switchyard
