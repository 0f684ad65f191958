// The learning-rate schedule of a run: linear warmup, then cosine decay to a floor.
#pragma once

#include <cstdint>

#include "configs/switchyard.pb.h"

namespace switchyard {

/// Learning rate for 0-based `step` (the step about to run): train.learning_rate * (step + 1) /
/// warmup_steps during warmup, then cosine from learning_rate down to learning_rate *
/// min_lr_ratio at train.steps (and held there after).
double learning_rate_at(const config::TrainConfig& train, int64_t step);

}  // namespace switchyard
