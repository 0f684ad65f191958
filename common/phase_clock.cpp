#include "common/phase_clock.h"

#include <torch/cuda.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "common/errors.h"

namespace switchyard {
namespace {

using Clock = std::chrono::steady_clock;

// Process-wide on purpose: the backward half of a boundary runs on autograd's threads, which
// know nothing of the step that started it. Forward and backward never run at once (backward()
// blocks its caller), so one current phase is enough; the mutex orders autograd's threads.
struct PhaseClockState {
  std::atomic<bool> running{false};
  std::mutex mutex;
  bool on_cuda = false;
  StepPhase current = StepPhase::kOther;
  Clock::time_point last;
  PhaseProfile profile;
};

PhaseClockState& state() {
  static PhaseClockState s;
  return s;
}

void charge_and_enter(PhaseClockState& s, StepPhase next) {
  // Wait for the queued kernels first: they belong to the phase that launched them.
  if (s.on_cuda) torch::cuda::synchronize();
  std::lock_guard<std::mutex> lock(s.mutex);
  const auto now = Clock::now();
  s.profile.seconds[size_t(s.current)] += std::chrono::duration<double>(now - s.last).count();
  s.profile.entered.push_back(next);
  s.current = next;
  s.last = now;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PhaseBoundary : public torch::autograd::Function<PhaseBoundary> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t before,
                               int64_t after) {
    ctx->saved_data["before"] = before;
    charge_and_enter(state(), StepPhase(after));
    return x.view_as(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    PhaseClockState& s = state();
    if (s.running.load()) charge_and_enter(s, StepPhase(ctx->saved_data["before"].toInt()));
    return {grads[0], {}, {}};
  }
};

}  // namespace

const char* step_phase_name(StepPhase phase) {
  static const char* const names[] = {"other",         "attention", "router",        "dispatch",
                                      "experts",       "combine",   "shared_expert", "head",
                                      "gradient_sync", "optimizer"};
  static_assert(sizeof(names) / sizeof(names[0]) == size_t(StepPhase::kCount));
  return names[size_t(phase)];
}

void enter_phase(StepPhase next) {
  PhaseClockState& s = state();
  if (s.running.load()) charge_and_enter(s, next);
}

torch::Tensor phase_boundary(const torch::Tensor& x, StepPhase before, StepPhase after) {
  PhaseClockState& s = state();
  if (!s.running.load() || !x.defined()) return x;
  return PhaseBoundary::apply(x, int64_t(before), int64_t(after));
}

void start_phase_clock(torch::Device device) {
  PhaseClockState& s = state();
  SY_CHECK(!s.running.load(), "phase clock: already running");
  if (device.is_cuda()) torch::cuda::synchronize();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.on_cuda = device.is_cuda();
  s.current = StepPhase::kOther;
  s.profile = {};
  s.last = Clock::now();
  s.running.store(true);
}

PhaseProfile stop_phase_clock() {
  PhaseClockState& s = state();
  SY_CHECK(s.running.load(), "phase clock: not running");
  charge_and_enter(s, StepPhase::kOther);
  s.running.store(false);
  std::lock_guard<std::mutex> lock(s.mutex);
  s.profile.entered.pop_back();  // the stop itself
  return std::move(s.profile);
}

}  // namespace switchyard
