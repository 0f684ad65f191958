// RoutingStats computation.
#include "routers/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "common/errors.h"

namespace switchyard {

RoutingStats RoutingStats::from_routing(const Routing& r, int64_t num_experts) {
  torch::NoGradGuard no_grad;
  RoutingStats s;
  s.num_tokens = r.topk_ids.size(0);
  s.num_assignments = r.topk_ids.numel();
  auto kept_ids = r.topk_ids.masked_select(r.dropped.logical_not()).to(torch::kCPU);
  s.num_dropped = s.num_assignments - kept_ids.numel();
  auto counts = torch::bincount(kept_ids, /*weights=*/{}, num_experts).to(torch::kLong);
  s.expert_tokens.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + num_experts);
  if (s.num_tokens > 0) s.token_entropy = per_token_routing_entropy(r).mean().item<double>();
  s.recompute_load_metrics();
  return s;
}

torch::Tensor per_token_routing_entropy(const Routing& r) {
  torch::NoGradGuard no_grad;
  auto p = r.scores.to(torch::kDouble);
  p = p / p.sum(-1, true).clamp_min(1e-300);
  return -(p * p.clamp_min(1e-300).log()).sum(-1);
}

void RoutingStats::recompute_load_metrics() {
  const auto E = double(expert_tokens.size());
  const double total = std::accumulate(expert_tokens.begin(), expert_tokens.end(), 0.0);
  drop_rate = num_assignments ? double(num_dropped) / double(num_assignments) : 0.0;
  if (E == 0 || total == 0) {
    utilisation = max_over_mean = cv = load_entropy = 0;
    return;
  }
  const double mean = total / E;
  double var = 0, entropy = 0;
  int64_t used = 0;
  for (int64_t c : expert_tokens) {
    var += (c - mean) * (c - mean);
    used += c > 0;
    if (c > 0) entropy -= (c / total) * std::log(c / total);
  }
  utilisation = double(used) / E;
  max_over_mean = double(*std::max_element(expert_tokens.begin(), expert_tokens.end())) / mean;
  cv = std::sqrt(var / E) / mean;
  load_entropy = entropy;
}

RoutingStats RoutingStats::merge(const std::vector<RoutingStats>& parts) {
  RoutingStats m;
  double entropy_sum = 0;
  for (const auto& p : parts) {
    if (m.expert_tokens.empty()) m.expert_tokens.assign(p.expert_tokens.size(), 0);
    SY_CHECK(p.expert_tokens.size() == m.expert_tokens.size(),
             "merging routing stats over different expert counts");
    for (size_t e = 0; e < p.expert_tokens.size(); ++e) m.expert_tokens[e] += p.expert_tokens[e];
    m.num_tokens += p.num_tokens;
    m.num_assignments += p.num_assignments;
    m.num_dropped += p.num_dropped;
    entropy_sum += p.token_entropy * double(p.num_tokens);
  }
  m.token_entropy = m.num_tokens ? entropy_sum / double(m.num_tokens) : 0.0;
  m.recompute_load_metrics();
  return m;
}

std::string RoutingStats::to_json() const {
  std::ostringstream os;
  os.precision(6);
  os << "{\"tokens\":" << num_tokens << ",\"assignments\":" << num_assignments
     << ",\"dropped\":" << num_dropped << ",\"expert_tokens\":[";
  for (size_t e = 0; e < expert_tokens.size(); ++e) os << (e ? "," : "") << expert_tokens[e];
  os << "],\"utilisation\":" << utilisation << ",\"max_over_mean\":" << max_over_mean
     << ",\"cv\":" << cv << ",\"entropy\":" << token_entropy << ",\"load_entropy\":" << load_entropy
     << ",\"drop_rate\":" << drop_rate << "}";
  return os.str();
}

}  // namespace switchyard
