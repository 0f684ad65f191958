// Where a training step's time goes, phase by phase and forward and backward together:
// attention, router, dispatch, experts, combine, shared expert, LM head + loss, gradient sync,
// optimizer. Off unless a run asks for it (logging.phase_profile_interval): then every phase
// boundary waits for the device, so a profiled step is a little slower than the others.
#pragma once

#include <torch/torch.h>

#include <array>
#include <vector>

namespace switchyard {

enum class StepPhase : int {
  kOther = 0,  ///< embeddings, norms, residual adds, data transfer, bookkeeping
  kAttention,
  kRouter,    ///< scores, top-k, balancing losses (and a distillation teacher's gate)
  kDispatch,  ///< permutation by expert and the all-to-all there (backward: and back)
  kExperts,
  kCombine,  ///< the all-to-all back, un-permutation, weighting by the gates
  kSharedExpert,
  kHead,  ///< LM head or classifier and the loss
  kGradientSync,
  kOptimizer,  ///< clipping, AdamW, zeroing the gradients
  kCount
};

/// Seconds per phase, indexed by StepPhase.
using PhaseSeconds = std::array<double, size_t(StepPhase::kCount)>;

/// What a clock saw between start and stop.
struct PhaseProfile {
  PhaseSeconds seconds{};
  /// Every phase entered, in order (forward and backward): what tests compare against the
  /// model's data path, since the seconds themselves depend on the machine.
  std::vector<StepPhase> entered;
};

/// "attention", "shared_expert", ...: the keys of a loss record's phase_ms.
const char* step_phase_name(StepPhase phase);

/// Charges the time since the clock's last boundary to the phase running until now and starts
/// `next`. Free when no clock runs.
///   usage: enter_phase(StepPhase::kOptimizer); optimizer.step(); enter_phase(StepPhase::kOther);
void enter_phase(StepPhase next);

/// `x` itself, marking a boundary in both directions while a clock runs: forward starts
/// `after` here; backward, which walks the graph in reverse, starts `before` when `x`'s gradient
/// is complete. Without a clock it returns `x` untouched (no autograd node is added).
///   usage: auto y = phase_boundary(combine(out), StepPhase::kCombine, StepPhase::kSharedExpert);
torch::Tensor phase_boundary(const torch::Tensor& x, StepPhase before, StepPhase after);

/// Starts the process's clock in StepPhase::kOther; on a CUDA `device` every boundary waits for
/// the device's queue first, so that its time is charged where it was spent. One clock at a time.
void start_phase_clock(torch::Device device);

/// Stops the clock and returns what it charged to each phase since start_phase_clock.
PhaseProfile stop_phase_clock();

}  // namespace switchyard
