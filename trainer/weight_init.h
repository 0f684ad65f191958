// Initial weights for pretraining a Qwen2-MoE from scratch, as transformers initialises one:
// every matrix and embedding N(0, initializer_range), biases zero, norms one.
#pragma once

#include "models/qwen2_moe.h"

namespace switchyard {

/// Draws every parameter from one generator seeded with `seed`, in parameter order and at the
/// *global* shape (experts [E, ...]), then keeps this rank's experts: the model is the same
/// whatever the expert-parallel size. Routers other than Linear keep their own initialisation
/// (a Linear router is transformers' gate). Throws for a model with quantized experts.
///   usage: init_for_pretraining(model, groups, cfg.initializer_range, train.seed());
void init_for_pretraining(Qwen2MoeForCausalLM& model, const ProcessGroups& groups, double std,
                          uint64_t seed);

}  // namespace switchyard
