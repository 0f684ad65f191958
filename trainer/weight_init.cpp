// See weight_init.h.
#include "trainer/weight_init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <map>
#include <set>

#include "common/errors.h"

namespace switchyard {
void init_for_pretraining(const TaskModel& model, const ProcessGroups& groups, double std,
                          uint64_t seed) {
  std::set<const void*> keep_own_init;
  std::map<const void*, std::vector<int64_t>> experts;  ///< expert tensor -> its slots' experts
  for (const auto& moe : model.moe_blocks()) {
    SY_CHECK(!moe->experts->quantized(),
             "model.quant: pretraining from scratch needs full-precision experts");
    for (const auto& p : moe->expert_parameters())
      experts[p.unsafeGetTensorImpl()] = moe->dispatcher().local_experts();
    if (moe->router->kind() != "linear")
      for (const auto& p : moe->router->parameters()) keep_own_init.insert(p.unsafeGetTensorImpl());
  }
  const int64_t num_experts = model.num_experts();
  auto gen = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (auto& item : model.module().named_parameters()) {
    auto& p = item.value();
    const std::string& name = item.key();
    if (keep_own_init.count(p.unsafeGetTensorImpl())) continue;
    const auto held = experts.find(p.unsafeGetTensorImpl());
    const bool sharded = held != experts.end();
    auto shape = p.sizes().vec();
    if (sharded) shape[0] = num_experts;
    torch::Tensor value;
    if (name.ends_with("norm.weight") || name.ends_with("Norm.weight"))  // BERT: LayerNorm
      value = torch::ones(shape);
    else if (name.ends_with("bias") || name.ends_with(".b_in") || name.ends_with(".b_out"))
      value = torch::zeros(shape);
    else
      value = at::normal(0.0, std, shape, gen);
    // Each slot takes its expert's draw: the same model at every EP size and placement.
    if (sharded) value = value.index_select(0, torch::tensor(held->second, torch::kLong));
    p.copy_(value);
  }
}

}  // namespace switchyard
