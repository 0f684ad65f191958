// The Hash router's fixed assignment, exposed for balance tests and for the data pipeline.
// The router itself is built through router_registry.h.
#pragma once

#include <cstdint>
#include <vector>

namespace switchyard {

/// The k distinct experts (out of num_experts) of `token_id` under `seed`, in hash order.
std::vector<int64_t> hash_experts(int64_t token_id, int64_t num_experts, int64_t k, uint64_t seed);

}  // namespace switchyard
