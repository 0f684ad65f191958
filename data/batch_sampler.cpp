// The permutation of an epoch is drawn once when the epoch is first read (O(num_samples)) and
// reused for each of its batches.
#include "data/batch_sampler.h"

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "data/epoch_shuffle.h"

namespace switchyard {
namespace {

constexpr uint64_t kSampleStream = 0x73616d706c6573ull;  // "samples"

}  // namespace

void to_json(nlohmann::json& j, const DataPosition& p) {
  j = nlohmann::json{{"epoch", p.epoch}, {"batch", p.batch}};
}

void from_json(const nlohmann::json& j, DataPosition& p) {
  try {
    p.epoch = j.at("epoch").get<int64_t>();
    p.batch = j.at("batch").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("data position is not {\"epoch\": E, \"batch\": B}: ") +
                      e.what());
  }
  if (p.epoch < 0 || p.batch < 0)
    throw ConfigError(
        detail::concat("data position epoch ", p.epoch, ", batch ", p.batch, ": negative"));
}

BatchSampler::BatchSampler(const BatchSamplerOptions& options) : options_(options) {
  const auto& o = options_;
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw ConfigError(detail::concat("data-parallel rank ", o.rank, " of ", o.world_size,
                                     ": not a rank of the group"));
  if (o.global_batch < 1 || o.global_batch % o.world_size != 0)
    throw ConfigError(detail::concat("global batch ", o.global_batch,
                                     ": must be a positive multiple of the data-parallel size ",
                                     o.world_size));
  if (o.num_samples < o.global_batch)
    throw ConfigError(detail::concat("global batch ", o.global_batch, " exceeds the ",
                                     o.num_samples, " samples of the dataset"));
  batches_per_epoch_ = o.num_samples / o.global_batch;
}

const std::vector<int64_t>& BatchSampler::order(int64_t epoch) {
  if (epoch != order_epoch_) {
    if (options_.shuffle) {
      order_ = epoch_permutation(options_.num_samples, options_.seed, kSampleStream, epoch);
    } else if (order_.empty()) {
      order_.resize(size_t(options_.num_samples));
      for (int64_t i = 0; i < options_.num_samples; ++i) order_[size_t(i)] = i;
    }
    order_epoch_ = epoch;
  }
  return order_;
}

std::vector<int64_t> BatchSampler::global_batch(int64_t epoch, int64_t batch) {
  SY_CHECK(epoch >= 0 && batch >= 0 && batch < batches_per_epoch_, "batch ", batch, " of epoch ",
           epoch, " (", batches_per_epoch_, " per epoch)");
  const auto& o = order(epoch);
  const auto first = o.begin() + std::ptrdiff_t(batch * options_.global_batch);
  return std::vector<int64_t>(first, first + std::ptrdiff_t(options_.global_batch));
}

BatchSampler::ShardBatch BatchSampler::next() {
  ShardBatch b;
  b.epoch = position_.epoch;
  b.batch = position_.batch;
  const auto& o = order(b.epoch);
  const int64_t start = b.batch * options_.global_batch + options_.rank * local_batch();
  b.indices.assign(o.begin() + std::ptrdiff_t(start),
                   o.begin() + std::ptrdiff_t(start + local_batch()));
  if (++position_.batch == batches_per_epoch_) position_ = {position_.epoch + 1, 0};
  return b;
}

void BatchSampler::set_position(const DataPosition& p) {
  if (p.epoch < 0 || p.batch < 0 || p.batch >= batches_per_epoch_)
    throw ConfigError(detail::concat("data position epoch ", p.epoch, ", batch ", p.batch,
                                     ": an epoch has ", batches_per_epoch_, " batches"));
  position_ = p;
}

}  // namespace switchyard
