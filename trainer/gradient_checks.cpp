#include "trainer/gradient_checks.h"

namespace switchyard {

torch::Tensor squared_sum_in_double(const torch::Tensor& g) {
  constexpr int64_t kSlice = int64_t(1) << 20;
  const auto flat = g.reshape({-1});
  const int64_t n = flat.numel();
  if (n <= kSlice) return flat.to(torch::kDouble).square().sum();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < n; i += kSlice)
    parts.push_back(flat.slice(0, i, std::min(i + kSlice, n)).to(torch::kDouble).square().sum());
  return torch::stack(parts).sum();
}

torch::Tensor local_gradients_finite(const std::vector<torch::Tensor>& a,
                                     const std::vector<torch::Tensor>& b, torch::Device device) {
  std::vector<torch::Tensor> parts;
  for (const auto* list : {&a, &b})
    for (const auto& p : *list)
      if (p.grad().defined()) parts.push_back(p.grad().sum(torch::kDouble).to(device));
  if (parts.empty()) return torch::ones({}, torch::dtype(torch::kBool).device(device));
  return torch::isfinite(torch::stack(parts).sum());
}

torch::Tensor clipping_scale(const torch::Tensor& norm, double clip) {
  return torch::where(norm > clip, clip / (norm + 1e-6), torch::ones_like(norm));
}

}  // namespace switchyard
