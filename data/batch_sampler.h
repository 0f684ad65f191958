// Which samples each data-parallel rank reads at each step: global batches drawn from a per-epoch
// shuffle, each split into equal contiguous shares, one per rank, and a position to resume from.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <vector>

namespace switchyard {

/// The next global batch to read: a checkpoint saves it, a resumed run restores it.
struct DataPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  ///< index of the global batch within the epoch
  bool operator==(const DataPosition&) const = default;
};
/// As {"epoch": E, "batch": B}, for checkpoints.
void to_json(nlohmann::json& j, const DataPosition& p);
void from_json(const nlohmann::json& j, DataPosition& p);

struct BatchSamplerOptions {
  int64_t num_samples = 0;   ///< dataset size (e.g. packed blocks or classification records)
  int64_t global_batch = 0;  ///< samples per step over all ranks; a multiple of world_size
  int world_size = 1;        ///< ranks of the data-parallel group
  int rank = 0;              ///< this rank in it
  uint64_t seed = 0;
  bool shuffle = true;  ///< false: samples in order every epoch
};

/// Global batch b of epoch e is samples order_e[b·B, (b+1)·B), order_e a permutation drawn from
/// (seed, e); rank r reads its rows [r·B/R, (r+1)·B/R). The global batches therefore do not
/// depend on the number of ranks, and the ranks' shares are disjoint and cover them. An epoch
/// has floor(num_samples / B) batches: the remainder is left out of that epoch (other samples
/// are left out of the next, as the order changes).
///   usage: BatchSampler s({.num_samples = n, .global_batch = 32, .world_size = R, .rank = r});
///          ShardBatch b = s.next();  // b.indices: this rank's 32/R samples
class BatchSampler {
 public:
  /// Throws ConfigError for a global batch that is not a positive multiple of world_size or
  /// larger than the dataset, or a rank outside [0, world_size).
  explicit BatchSampler(const BatchSamplerOptions& options);

  struct ShardBatch {
    int64_t epoch = 0, batch = 0;
    std::vector<int64_t> indices;  ///< this rank's samples, global_batch / world_size of them
  };
  /// This rank's share of the batch at position(), then advances (into the next epoch after
  /// the last batch of one).
  ShardBatch next();

  /// Every rank's samples of global batch `batch` of `epoch`, in rank order.
  std::vector<int64_t> global_batch(int64_t epoch, int64_t batch);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t local_batch() const { return options_.global_batch / options_.world_size; }
  DataPosition position() const { return position_; }
  /// Resumes at `p`. Throws ConfigError when p.batch is not below batches_per_epoch().
  void set_position(const DataPosition& p);

 private:
  const std::vector<int64_t>& order(int64_t epoch);
  BatchSamplerOptions options_;
  int64_t batches_per_epoch_ = 0;
  DataPosition position_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace switchyard
