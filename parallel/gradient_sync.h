// Gradient synchronisation after backward: replicated parameters are all-reduced over the world,
// EP-sharded expert parameters over their data-parallel replicas only, in flat buckets.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "parallel/placement.h"
#include "parallel/process_groups.h"

namespace switchyard {

struct GradientSyncOptions {
  TORCH_ARG(int64_t, bucket_bytes) = int64_t(25) << 20;  ///< DDP's default bucket size
  /// Divide by the world size: the gradient of the mean of every rank's loss. (Expert grads
  /// are summed over DP only, but each already holds the contributions of its whole EP group.)
  TORCH_ARG(bool, average) = true;
};

/// Built once from the parameter lists; only parameters with requires_grad take part, so a
/// router fine-tune moves router gradients only.
///   usage: GradientSync sync(groups, block->replicated_parameters(), block->expert_parameters());
///          loss.backward(); sync.synchronize(); optimizer.step();
class GradientSync {
 public:
  GradientSync(ProcessGroups groups, const std::vector<torch::Tensor>& replicated,
               const std::vector<torch::Tensor>& expert_sharded, GradientSyncOptions options = {});

  /// Collective over the world. A parameter without a gradient on this rank counts as zero
  /// (its peers may have one); afterwards every synchronised parameter has a gradient.
  void synchronize();

  /// Expert tensors ([slots, ...]) of a layer whose placement replicates experts: after the
  /// data-parallel sum, synchronize() also sums each replicated expert's rows over the EP ranks
  /// holding a copy, so every copy gets the gradient of all its expert's tokens and the copies
  /// stay equal. Collective over the EP group.
  void add_replicated_experts(const torch::Tensor& param, const LayerPlacement& placement);

  int64_t num_buckets() const { return int64_t(buckets_.size()); }

 private:
  struct Bucket {
    CommunicatorPtr group;
    std::vector<torch::Tensor> params;
  };
  void add_buckets(const CommunicatorPtr& group, const std::vector<torch::Tensor>& params);

  struct Replicated {
    torch::Tensor param;
    std::vector<int64_t> experts;  ///< the replicated experts, in order
    std::vector<int64_t> slot_of;  ///< per local slot: index into `experts`, or -1
  };
  void sum_replicas(Replicated& r);

  ProcessGroups groups_;
  GradientSyncOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<Replicated> replicated_;
};

}  // namespace switchyard
