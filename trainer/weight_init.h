// Initial weights for training a model from scratch, as transformers initialises Qwen2-MoE and
// BERT: every matrix and embedding N(0, initializer_range), biases zero, norms one.
#pragma once

#include "models/task_model.h"

namespace switchyard {

/// Draws every parameter from one generator seeded with `seed`, in parameter order and at the
/// *global* shape (experts [E, ...]), then keeps this rank's experts: the model is the same
/// whatever the expert-parallel size. Routers other than Linear keep their own initialisation
/// (a Linear router is transformers' gate). Throws for a model with quantized experts.
///   usage: init_for_pretraining(TaskModel::causal_lm(model), groups, 0.02, train.seed());
void init_for_pretraining(const TaskModel& model, const ProcessGroups& groups, double std,
                          uint64_t seed);

}  // namespace switchyard
