// Per-epoch shuffling, sharding global batches over data-parallel ranks, resuming from a saved
// position, sequence packing and classification batches.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "common/errors.h"
#include "data/batch_sampler.h"
#include "data/classification_dataset.h"
#include "data/epoch_shuffle.h"
#include "data/packed_sequences.h"
#include "data/token_file.h"

using namespace switchyard;

namespace {

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// Documents d = 0..n-1 of length 1 + d % 5 whose ids encode (document, position).
TokenDocuments numbered_documents(int n) {
  std::vector<std::vector<uint32_t>> docs;
  for (int d = 0; d < n; ++d) {
    std::vector<uint32_t> doc;
    for (int i = 0; i < 1 + d % 5; ++i) doc.push_back(uint32_t(1 + d * 10 + i));
    docs.push_back(doc);
  }
  return TokenDocuments::from_vectors(docs, 10000, 0);
}

/// The stream an epoch's blocks cover, rebuilt by dropping each next block's shared first token.
std::vector<uint32_t> stream_of(PackedSequences& packed, int64_t epoch) {
  std::vector<uint32_t> stream, block(size_t(packed.seq_len()) + 1);
  for (int64_t i = 0; i < packed.size(); ++i) {
    packed.block(epoch, i, block);
    if (i > 0) EXPECT_EQ(stream.back(), block.front()) << "blocks overlap by one token";
    stream.insert(stream.end(), block.begin() + (i > 0 ? 1 : 0), block.end());
  }
  return stream;
}

}  // namespace

// ---- shuffling -------------------------------------------------------------------------------

TEST(EpochShuffle, PortableDeterministicPermutations) {
  // Pinned: a change here would silently change every run's data order.
  EXPECT_EQ(epoch_permutation(10, 42, 7, 0), (std::vector<int64_t>{6, 2, 9, 3, 7, 1, 0, 8, 5, 4}));
  EXPECT_EQ(epoch_permutation(10, 42, 7, 1), (std::vector<int64_t>{3, 2, 1, 5, 8, 6, 4, 9, 7, 0}));
  const auto a = epoch_permutation(1000, 5, 1, 3);
  EXPECT_EQ(sorted(a), iota(1000));
  EXPECT_EQ(a, epoch_permutation(1000, 5, 1, 3));
  EXPECT_NE(a, epoch_permutation(1000, 5, 1, 4));  // another epoch
  EXPECT_NE(a, epoch_permutation(1000, 6, 1, 3));  // another seed
  EXPECT_NE(a, epoch_permutation(1000, 5, 2, 3));  // another stream
  EXPECT_TRUE(epoch_permutation(0, 1, 1, 0).empty());
  SplitMix64 rng(1);
  std::vector<int> hits(3, 0);
  for (int i = 0; i < 3000; ++i) ++hits[rng.below(3)];
  for (int h : hits) EXPECT_NEAR(h, 1000, 120);
}

// ---- sharding and resuming -------------------------------------------------------------------

TEST(BatchSampler, RanksSplitTheSameGlobalBatchesForAnyWorldSize) {
  const int64_t n = 103, B = 8;
  BatchSampler reference({.num_samples = n, .global_batch = B, .seed = 9});
  EXPECT_EQ(reference.batches_per_epoch(), 12);
  for (int R : {1, 2, 4}) {
    std::vector<BatchSampler> ranks;
    for (int r = 0; r < R; ++r)
      ranks.emplace_back(BatchSamplerOptions{
          .num_samples = n, .global_batch = B, .world_size = R, .rank = r, .seed = 9});
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      std::set<int64_t> epoch_samples;
      for (int64_t batch = 0; batch < ranks[0].batches_per_epoch(); ++batch) {
        std::vector<int64_t> global;
        for (auto& rank : ranks) {
          const auto b = rank.next();
          EXPECT_EQ(b.epoch, epoch);
          EXPECT_EQ(b.batch, batch);
          EXPECT_EQ(int64_t(b.indices.size()), B / R);
          global.insert(global.end(), b.indices.begin(), b.indices.end());
        }
        // Rank shares concatenated in rank order are the global batch of a single rank.
        EXPECT_EQ(global, reference.global_batch(epoch, batch)) << "R=" << R;
        for (int64_t i : global) EXPECT_TRUE(epoch_samples.insert(i).second) << "repeated " << i;
      }
      EXPECT_EQ(epoch_samples.size(), size_t(12 * B));  // disjoint, 7 left out this epoch
    }
  }
  EXPECT_NE(reference.global_batch(0, 0), reference.global_batch(1, 0));
}

TEST(BatchSampler, UnshuffledReadsInOrder) {
  BatchSampler s(
      {.num_samples = 10, .global_batch = 4, .world_size = 2, .rank = 1, .shuffle = false});
  EXPECT_EQ(s.next().indices, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(s.next().indices, (std::vector<int64_t>{6, 7}));
  const auto wrapped = s.next();
  EXPECT_EQ(wrapped.epoch, 1);
  EXPECT_EQ(wrapped.indices, (std::vector<int64_t>{2, 3}));
}

TEST(BatchSampler, ResumesFromASavedPosition) {
  const BatchSamplerOptions o{
      .num_samples = 50, .global_batch = 6, .world_size = 2, .rank = 1, .seed = 3};
  BatchSampler run(o);
  for (int i = 0; i < 11; ++i) run.next();  // into the second epoch (8 batches per epoch)
  const nlohmann::json saved = run.position();
  EXPECT_EQ(saved, (nlohmann::json{{"epoch", 1}, {"batch", 3}}));
  BatchSampler resumed(o);
  resumed.set_position(saved.get<DataPosition>());
  for (int i = 0; i < 20; ++i) {
    const auto a = run.next(), b = resumed.next();
    EXPECT_EQ(a.indices, b.indices);
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.batch, b.batch);
  }
  EXPECT_EQ(run.position(), resumed.position());
  EXPECT_THROW(resumed.set_position({0, 8}), ConfigError);
  EXPECT_THROW(nlohmann::json({{"epoch", 1}}).get<DataPosition>(), ConfigError);
  EXPECT_THROW(nlohmann::json({{"epoch", -1}, {"batch", 0}}).get<DataPosition>(), ConfigError);
}

TEST(BatchSampler, RejectsShapesThatCannotShard) {
  EXPECT_THROW(BatchSampler({.num_samples = 10, .global_batch = 6, .world_size = 4}), ConfigError);
  EXPECT_THROW(BatchSampler({.num_samples = 10, .global_batch = 4, .world_size = 2, .rank = 2}),
               ConfigError);
  EXPECT_THROW(BatchSampler({.num_samples = 3, .global_batch = 4}), ConfigError);
  EXPECT_THROW(BatchSampler({.num_samples = 10, .global_batch = 0}), ConfigError);
}

// ---- packing ---------------------------------------------------------------------------------

TEST(PackedSequences, BlocksCutTheEosSeparatedStream) {
  PackedSequences packed(numbered_documents(6), {.seq_len = 4, .shuffle_documents = false});
  // docs: [1] [11 12] [21 22 23] [31 32 33 34] [41 42 43 44 45] [51]; stream of 21 with EOS (0)
  const std::vector<uint32_t> stream = {1,  0,  11, 12, 0,  21, 22, 23, 0, 31, 32,
                                        33, 34, 0,  41, 42, 43, 44, 45, 0, 51, 0};
  EXPECT_EQ(packed.size(), int64_t((stream.size() - 1) / 4));
  std::vector<uint32_t> block(5);
  for (int64_t i = 0; i < packed.size(); ++i) {
    packed.block(0, i, block);
    EXPECT_EQ(block, std::vector<uint32_t>(stream.begin() + i * 4, stream.begin() + i * 4 + 5));
  }
  const auto rebuilt = stream_of(packed, 3);  // unshuffled: every epoch alike
  EXPECT_EQ(rebuilt,
            std::vector<uint32_t>(stream.begin(), stream.begin() + int64_t(rebuilt.size())));
  const torch::Tensor batch = packed.batch(0, std::vector<int64_t>{3, 0});
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(batch.scalar_type(), torch::kLong);
  EXPECT_EQ(batch[0][0].item<int64_t>(), 34);
  EXPECT_EQ(batch[1][4].item<int64_t>(), 0);
}

TEST(PackedSequences, EachEpochPacksADocumentPermutation) {
  const auto docs = numbered_documents(40);
  PackedSequences packed(docs, {.seq_len = 16, .seed = 5});
  const int64_t stream_len = docs.num_tokens() + docs.size();
  EXPECT_EQ(packed.size(), (stream_len - 1) / 16);
  std::vector<std::vector<uint32_t>> orders;
  for (int64_t epoch : {0, 1}) {
    const auto stream = stream_of(packed, epoch);
    EXPECT_GE(int64_t(stream.size()), stream_len - 16);
    // Split at EOS: whole documents, each at most once, none cut except the last one.
    std::vector<uint32_t> firsts;
    std::set<uint32_t> seen;
    for (size_t i = 0; i < stream.size();) {
      size_t j = i;
      while (j < stream.size() && stream[j] != 0) ++j;
      const uint32_t d = (stream[i] - 1) / 10;
      EXPECT_TRUE(seen.insert(d).second);
      if (j < stream.size()) {
        const auto doc = docs.document(d);
        EXPECT_EQ(std::vector<uint32_t>(stream.begin() + int64_t(i), stream.begin() + int64_t(j)),
                  std::vector<uint32_t>(doc.begin(), doc.end()));
      }
      firsts.push_back(d);
      i = j + 1;
    }
    orders.push_back(firsts);
  }
  EXPECT_NE(orders[0], orders[1]);
  PackedSequences again(docs, {.seq_len = 16, .seed = 5});
  EXPECT_EQ(stream_of(again, 1), stream_of(packed, 1));
}

TEST(PackedSequences, ShardedBatchesConcatenateToTheGlobalBatch) {
  const auto path =
      std::filesystem::temp_directory_path() / ("sy_pack_" + std::to_string(::getpid()) + ".tok");
  write_token_file(path.string(), numbered_documents(200));
  PackedSequences reference(read_token_file(path.string()), {.seq_len = 8, .seed = 1});
  BatchSampler global({.num_samples = reference.size(), .global_batch = 8, .seed = 2});
  for (int step = 0; step < 3; ++step) {
    const auto g = global.next();
    const torch::Tensor expected = reference.batch(g.epoch, g.indices);
    for (int R : {2, 4}) {
      std::vector<torch::Tensor> shares;
      for (int r = 0; r < R; ++r) {
        PackedSequences packed(read_token_file(path.string()), {.seq_len = 8, .seed = 1});
        BatchSampler s({.num_samples = packed.size(),
                        .global_batch = 8,
                        .world_size = R,
                        .rank = r,
                        .seed = 2});
        s.set_position({g.epoch, g.batch});
        const auto b = s.next();
        shares.push_back(packed.batch(b.epoch, b.indices));
      }
      EXPECT_TRUE(torch::equal(torch::cat(shares), expected)) << "R=" << R << " step " << step;
    }
  }
  std::filesystem::remove(path);
}

TEST(PackedSequences, RefusesWhatCannotBePacked) {
  const auto no_eos = TokenDocuments::from_vectors({{1, 2, 3}}, 10, std::nullopt);
  EXPECT_THROW(PackedSequences(no_eos, {.seq_len = 2}), ConfigError);
  EXPECT_NO_THROW(PackedSequences(no_eos, {.seq_len = 2, .eos_id = 9}));
  EXPECT_THROW(PackedSequences(numbered_documents(3), {.seq_len = 0}), ConfigError);
  EXPECT_THROW(PackedSequences(numbered_documents(2), {.seq_len = 5}), ConfigError);  // 5 tokens
  EXPECT_NO_THROW(PackedSequences(numbered_documents(2), {.seq_len = 4}));
}

// ---- classification --------------------------------------------------------------------------

TEST(ClassificationDataset, PaddedRowsWithMasksAndLabels) {
  const auto tok = BpeTokenizer::from_file(SWITCHYARD_SOURCE_DIR "/data/tokenizer.json");
  const std::vector<TextRecord> records = {
      {"Hello there, how are you doing today my friend?", "greetings", "en"},
      {"Guten Tag", "gruesse", "de"},
      {"Hi", "greetings", "en"}};
  const LabelSet languages = LabelSet::from_records(records, LabelField::kLanguage);
  EXPECT_EQ(languages.names(), (std::vector<std::string>{"de", "en"}));
  const LabelSet categories = LabelSet::from_records(records, LabelField::kCategory);
  EXPECT_EQ(categories.names(), (std::vector<std::string>{"de/gruesse", "en/greetings"}));
  EXPECT_THROW(languages.id("fr"), ConfigError);
  EXPECT_EQ(label_of({"text", "review", ""}, LabelField::kCategory), "review");  // no language

  ClassificationDataset data(records, tok, languages, {.max_len = 6});
  const ClassificationBatch b = data.batch(std::vector<int64_t>{0, 1, 2});
  EXPECT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(b.attention_mask.sizes(), (std::vector<int64_t>{3, 6}));
  EXPECT_TRUE(torch::equal(b.labels, torch::tensor({1, 0, 1}, torch::kLong)));
  EXPECT_TRUE(torch::equal(b.input_ids.select(1, 0), torch::full({3}, 2, torch::kLong)));  // <cls>
  const auto hi = tok.encode("Hi");
  EXPECT_EQ(b.attention_mask[2].sum().item<int64_t>(), 1 + int64_t(hi.size()));
  EXPECT_EQ(b.attention_mask[0].sum().item<int64_t>(), 6);  // truncated
  const auto first = tok.encode(records[0].text);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.input_ids[0][i + 1].item<int64_t>(), first[size_t(i)]);
  // Padding is <pad> (id 1) exactly where the mask is 0.
  EXPECT_TRUE(torch::equal(b.input_ids.eq(1), b.attention_mask.eq(0)));

  ClassificationDataset by_category(
      records, tok, categories, {.max_len = 32, .label = LabelField::kCategory, .cls_token = ""});
  EXPECT_EQ(by_category.label(1), 0);
  EXPECT_EQ(std::vector<uint32_t>(by_category.ids(2).begin(), by_category.ids(2).end()), hi);
  EXPECT_THROW(ClassificationDataset(records, tok, languages, {.max_len = 1}), ConfigError);
  EXPECT_THROW(ClassificationDataset(records, tok, LabelSet({"en"}), {}), ConfigError);
}
