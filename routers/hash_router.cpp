// Hash router (Roller et al., "Hash Layers"): no parameters. Token id -> k distinct experts by a
// fixed seeded hash, the same on every rank and every run. Balanced for ids spread over the
// vocabulary: each token's k experts are a uniformly random k-subset keyed by (seed, id).
//   logits_e = 0 for the k chosen experts, -1e4 otherwise, so softmax gives weight 1/k each and
//   the shared gating (top-k, stats, aux loss) treats it like any other router.
#include <vector>

#include "routers/hash_router.h"
#include "routers/router.h"

namespace switchyard {
namespace {

// splitmix64: a well-mixed 64-bit step; also what seeds xoshiro generators.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

/// The k distinct experts of `token_id`, in hash order.
std::vector<int64_t> hash_experts(int64_t token_id, int64_t num_experts, int64_t k, uint64_t seed) {
  uint64_t state = seed ^ (uint64_t(token_id) * 0xD1342543DE82EF95ull);
  std::vector<int64_t> chosen;
  chosen.reserve(k);
  while (int64_t(chosen.size()) < k) {
    const auto e = int64_t(splitmix64(state) % uint64_t(num_experts));
    bool seen = false;
    for (auto c : chosen) seen |= c == e;
    if (!seen) chosen.push_back(e);  // rejection keeps the k-subset uniform
  }
  return chosen;
}

class HashRouterImpl : public RouterImpl {
 public:
  explicit HashRouterImpl(const RouterOptions& o)
      : RouterImpl(o), seed_(o.config().hash().seed()) {}

  torch::Tensor compute_logits(const torch::Tensor& x, const torch::Tensor& token_ids) override {
    TORCH_CHECK(token_ids.defined() && token_ids.dim() == 1 && token_ids.size(0) == x.size(0),
                "hash router needs token ids [", x.size(0), "]");
    const int64_t T = x.size(0), E = options_.num_experts(), k = gating_.top_k;
    // The hash runs on the host: T * k tiny integer steps, cheaper than a device round trip
    // would suggest, and bit-identical wherever it runs.
    auto ids = token_ids.to(torch::kCPU, torch::kLong).contiguous();
    auto logits = torch::full({T, E}, -1e4, torch::TensorOptions().dtype(torch::kFloat));
    auto acc = logits.accessor<float, 2>();
    const int64_t* id = ids.data_ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e : hash_experts(id[t], E, k, seed_)) acc[t][e] = 0.0f;
    return logits.to(x.device(), x.dtype());
  }

  std::string kind() const override { return "hash"; }

 private:
  uint64_t seed_;
};

RouterPtr make_hash_router(const RouterOptions& o) {
  return std::make_shared<HashRouterImpl>(o);
}

}  // namespace switchyard
