// See layer_recompute.h.
#include "models/layer_recompute.h"

#include <ATen/autocast_mode.h>
#include <torch/custom_class.h>

#include "common/autocast.h"
#include "common/errors.h"

namespace switchyard {
namespace {

// How many recomputations this thread is inside (a recomputed layer could recompute a part).
thread_local int recomputation_depth = 0;

struct RecomputationScope {
  RecomputationScope() { ++recomputation_depth; }
  ~RecomputationScope() { --recomputation_depth; }
  RecomputationScope(const RecomputationScope&) = delete;
  RecomputationScope& operator=(const RecomputationScope&) = delete;
};

// What backward needs to run fn again: fn, the autocast state it ran under, and which of its
// outputs were undefined (returned as zeros, since an autograd function's outputs are tensors).
struct Recompute : torch::CustomClassHolder {
  RecomputedFn fn;
  torch::Device device = torch::kCPU;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
  std::vector<bool> defined;
  // Whether the caller's input required a gradient. A frozen input (the embedding's output in
  // router fine-tuning) is made to require one only so that autograd calls backward at all; the
  // recomputation then leaves it out, so backward computes no input gradient nobody reads.
  bool input_requires_grad = true;
};

class RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& input,
                                                const c10::intrusive_ptr<Recompute>& r) {
    ctx->save_for_backward({input});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(r);
    auto outputs = r->fn(input, /*recomputing=*/false);
    r->defined.clear();
    for (auto& o : outputs) {
      r->defined.push_back(o.defined());
      if (!o.defined()) o = torch::zeros({}, input.options());
    }
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto capsule = ctx->saved_data["recompute"].toCapsule();
    auto* r = static_cast<Recompute*>(capsule.get());
    auto input = ctx->get_saved_variables()[0].detach().requires_grad_(r->input_requires_grad);
    std::vector<torch::Tensor> outputs, output_grads;
    {
      // The engine runs backward with gradients on and without the forward's autocast.
      torch::AutoGradMode grad_on(true);
      AutocastScope amp(r->device, r->autocast, r->autocast_dtype);
      std::vector<torch::Tensor> again;
      {
        RecomputationScope recomputing;
        again = r->fn(input, /*recomputing=*/true);
      }
      SY_CHECK(again.size() == grads.size(), "recompute: ", again.size(), " outputs, ",
               grads.size(), " the first time");
      for (size_t i = 0; i < again.size(); ++i) {
        if (!r->defined[i] || !grads[i].defined() || !again[i].requires_grad()) continue;
        outputs.push_back(again[i]);
        output_grads.push_back(grads[i]);
      }
    }
    if (!outputs.empty()) torch::autograd::backward(outputs, output_grads);
    return {r->input_requires_grad ? input.grad() : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool forward_is_recomputation() {
  return recomputation_depth > 0;
}

std::vector<torch::Tensor> recompute_in_backward(const torch::Tensor& input, RecomputedFn fn) {
  auto r = c10::make_intrusive<Recompute>();
  r->fn = std::move(fn);
  r->device = input.device();
  const auto type = input.device().type();
  r->autocast = at::autocast::is_autocast_enabled(type);
  r->autocast_dtype = at::autocast::get_autocast_dtype(type);
  r->input_requires_grad = input.requires_grad();
  const auto x = input.requires_grad() ? input : input.detach().requires_grad_(true);
  auto outputs = RecomputeFunction::apply(x, r);
  for (size_t i = 0; i < outputs.size(); ++i)
    if (!r->defined[i]) outputs[i] = torch::Tensor();
  return outputs;
}

}  // namespace switchyard
