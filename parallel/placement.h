// Expert placement as data: which global experts each EP rank's expert slots hold, per MoE
// layer. The default is the contiguous split (rank r holds experts [r·E/EP, (r+1)·E/EP)). A
// placement may order experts differently and give hot experts replicas: E + R slots per layer,
// (E + R) / EP per rank. `switchyard placement` computes one from a run's measured loads
// (balanced_layer) and writes it as JSON (Placement::write).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard {

inline constexpr const char* kPlacementSchema = "switchyard.placement/1";

/// One MoE layer: slots[r] lists the global experts rank r's slots hold, in slot order. An
/// expert in several slots is replicated; its tokens are shared among the copies.
struct LayerPlacement {
  std::vector<std::vector<int64_t>> slots;

  /// How many slots hold each of `num_experts` experts.
  std::vector<int64_t> copies(int64_t num_experts) const;
  /// Whether some expert has more than one slot.
  bool replicated() const;
  /// Rank `rank`'s slots with the expert each holds, or -1 where it is not the expert's first
  /// copy (rank-major, then slot order): what that rank saves in a checkpoint.
  std::vector<int64_t> owned(int rank) const;
};

struct Placement {
  int64_t num_experts = 0;
  int expert_parallel = 1;
  int64_t slots_per_rank = 0;  ///< (E + R) / EP
  std::vector<LayerPlacement> layers;
  nlohmann::ordered_json source;  ///< where it came from (run, steps); written, not checked
  std::string path;               ///< the file it was read from, for messages ("" if none)

  /// Rank r holds experts [r·E/EP, (r+1)·E/EP) in every layer. EP must divide E.
  static Placement contiguous(int64_t num_layers, int64_t num_experts, int expert_parallel);

  /// Parses and checks a placement: the schema, EP ranks of slots_per_rank slots each in every
  /// layer, expert ids in [0, E), every expert in at least one slot. Throws ConfigError naming
  /// `what` and the layer and rank at fault.
  static Placement from_json(const nlohmann::json& j, const std::string& what);
  static Placement read(const std::string& path);
  nlohmann::ordered_json to_json() const;
  /// Written under a temporary name, then renamed.
  void write(const std::string& path) const;

  /// Throws ConfigError naming `what` unless the placement is for this many MoE layers and
  /// experts at this EP size.
  void check_fits(int64_t num_layers, int64_t num_experts, int expert_parallel,
                  const std::string& what) const;
  /// Whether any expert of any layer has more than one slot.
  bool replicated() const;
};

using PlacementPtr = std::shared_ptr<const Placement>;

/// The placement parallel.placement names (`path`): null for an empty path (the contiguous
/// split), else the file read and checked (Placement::read). Throws ConfigError naming
/// parallel.placement and the file.
PlacementPtr placement_from_config(const std::string& path);

/// Tokens each rank computes in `layer` when expert e is chosen load[e] times; an expert's load is
/// shared evenly among its copies.
std::vector<double> rank_loads(const LayerPlacement& layer, const std::vector<double>& load);

/// max / mean of `values` (1 = perfect balance; 0 for an empty or all-zero list).
double max_over_mean(const std::vector<double>& values);

/// A placement of one layer that balances `load` ([E], e.g. tokens per expert over a window of
/// steps) over `expert_parallel` ranks with `redundant` extra slots ((E + redundant) must be a
/// multiple of EP; at most E·(EP−1) extra). Three passes:
///   1. replicas: h of the extra slots go one at a time to the expert with the largest load per
///      copy, the other R − h to the coldest (fillers); every h in [0, R] is tried and the one
///      whose packing has the lightest most-loaded rank is kept;
///   2. packing, longest processing time first: copies by load per copy, largest first, each to
///      the least-loaded rank with a free slot that does not hold that expert yet;
///   3. swaps: while exchanging a copy on the most loaded rank with one elsewhere lowers the
///      larger of the two ranks' loads, the best such exchange is made.
/// Deterministic. Throws ConfigError for shapes that cannot be placed.
LayerPlacement balanced_layer(const std::vector<double>& load, int expert_parallel,
                              int64_t redundant);

}  // namespace switchyard
