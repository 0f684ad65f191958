#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace switchyard {

double learning_rate_at(const config::TrainConfig& t, int64_t step) {
  const double peak = t.learning_rate(), floor = peak * t.min_lr_ratio();
  const int64_t warmup = t.warmup_steps();
  if (step < warmup) return peak * double(step + 1) / double(warmup);
  const double span = double(std::max<int64_t>(1, t.steps() - warmup));
  const double progress = std::min(1.0, double(step - warmup) / span);
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace switchyard
