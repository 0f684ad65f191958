// What `switchyard eval` measures on one model and one evaluation set, as tables for people and
// JSON for machines (`--json`); `switchyard report` reads the JSON back to compare runs.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "routers/routing_stats.h"

namespace switchyard {

inline constexpr const char* kEvalSchema = "switchyard.eval/1";

struct ParameterCounts {
  int64_t total = 0;           ///< every weight of the model, all experts of all EP ranks
  int64_t active = 0;          ///< per token: all but the routed experts, plus top_k / E of them
  int64_t router = 0;          ///< the routers of all MoE layers
  int64_t routed_experts = 0;  ///< all routed experts (logical weights when quantized)
};

/// One MoE layer over the whole set (all ranks).
struct LayerReport {
  int64_t layer = 0;     ///< decoder layer index
  RoutingStats routing;  ///< load, utilisation, imbalance, entropy, drops over real tokens
  double router_s = 0;   ///< seconds in the router, mean over ranks
  double moe_s = 0;      ///< seconds in the whole MoE block (router included), mean over ranks
  /// The router's expert bias (router.expert_bias, aux-loss-free balancing); empty without one.
  std::vector<double> expert_bias;
  /// The experts each EP rank's slots held (parallel/placement.h; contiguous unless
  /// parallel.placement said otherwise).
  std::vector<std::vector<int64_t>> placement;

  /// Tokens each EP rank's experts computed in this layer over the whole set (all DP groups
  /// added; a replicated expert's tokens shared evenly among its copies).
  std::vector<double> rank_tokens() const;
  /// max / mean of rank_tokens(): the straggler the placement leaves (1 = balanced).
  double rank_max_over_mean() const;
};

/// An expert list in short: runs of consecutive ids as "a-b", joined by commas ("0-3,9,12-13").
std::string experts_text(const std::vector<int64_t>& experts);

/// One rank: what its experts received and how long it computed.
struct RankReport {
  int rank = 0;
  int ep_rank = 0;
  int64_t tokens_received = 0;  ///< real-token assignments routed to its experts by its EP group
  double forward_s = 0;         ///< whole-model forward passes
  double moe_s = 0;             ///< MoE blocks (router, all-to-all, experts, shared expert)
  double experts_s = 0;         ///< its routed experts alone
};

struct EvalReport {
  std::string task = "causal_lm";  ///< "causal_lm" or "classification"
  std::string model;
  std::string data;
  std::string data_format;
  std::string router;  ///< router kind, e.g. "linear", "mlp_hadamard"
  std::string router_config;
  std::string dtype;
  std::string device = "cpu";  ///< where rank 0 computed, e.g. "cuda:0"
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int world_size = 1;
  int expert_parallel = 1;
  int64_t sequences = 0;
  int64_t tokens = 0;     ///< real tokens run through the model
  int64_t predicted = 0;  ///< targets: positions with a next token, or labelled sequences
  double mean_nll = 0;    ///< nats per target
  double perplexity = 0;  ///< exp(mean_nll)
  /// Classification only: fraction of sequences labelled right, macro-F1 (see
  /// eval/model_eval.h classification_scores) and the model's label names in id order.
  double accuracy = 0, macro_f1 = 0;
  std::vector<std::string> label_names;
  bool classification() const { return task == "classification"; }
  ParameterCounts parameters;
  std::vector<LayerReport> layers;
  std::vector<RankReport> ranks;

  double router_s() const;                 ///< summed over layers
  double moe_s() const;                    ///< summed over layers
  double router_share() const;             ///< router_s / moe_s
  RoutingStats mean_routing() const;       ///< ratios averaged over layers (counts summed)
  double mean_rank_max_over_mean() const;  ///< LayerReport::rank_max_over_mean over layers
  /// The experts EP rank `ep_rank` held (experts_text), or "per layer" when layers differ.
  std::string rank_experts_text(int ep_rank) const;

  nlohmann::ordered_json to_json() const;  ///< fields in a fixed, readable order
  /// Throws ConfigError naming `what` for a document that is not a switchyard.eval/1 result.
  static EvalReport from_json(const nlohmann::ordered_json& j, const std::string& what);
  /// Reads a file written by `switchyard eval --json`.
  static EvalReport read(const std::string& path);

  /// Summary, per-layer and per-rank tables (common/table.h).
  void print(std::ostream& os) const;
};

}  // namespace switchyard
