// Causal-LM training data: a token file packed into blocks of train.seq_len + 1 tokens, read
// once; validation blocks from data.valid_path.
#include "common/errors.h"
#include "data/packed_sequences.h"
#include "data/token_file.h"
#include "trainer/training_data.h"

namespace switchyard {
namespace {

class CausalLmData final : public TrainingData {
 public:
  explicit CausalLmData(const RunConfig& config) {
    const auto& data = config.data();
    const auto& t = config.train();
    packed_ = std::make_shared<PackedSequences>(
        read_token_file(data.train_path()),
        PackedSequencesOptions{.seq_len = t.seq_len(), .seed = t.seed()});
    if (!data.valid_path().empty())
      valid_ = read_eval_set(data.valid_path(),
                             {.seq_len = t.seq_len(), .max_sequences = t.eval_blocks()});
  }

  void bind(const LoadedModel& m) override {
    if (valid_) check_vocabulary(*valid_, m.model->vocab_size());
  }
  int64_t size() const override { return packed_->size(); }
  TaskBatch batch(const BatchSampler::ShardBatch& shard) const override {
    return causal_lm_batch(packed_->batch(shard.epoch, shard.indices));
  }
  std::string describe() const override {
    return detail::concat(packed_->size(), " blocks of ", packed_->seq_len() + 1, " tokens");
  }

 private:
  std::shared_ptr<PackedSequences> packed_;
};

}  // namespace

std::unique_ptr<TrainingData> read_causal_lm_data(const RunConfig& config) {
  return std::make_unique<CausalLmData>(config);
}

}  // namespace switchyard
