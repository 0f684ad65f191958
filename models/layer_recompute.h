// Activation recomputation (Megatron's "full" recompute, torch.utils.checkpoint's reentrant
// form): a function of one tensor runs without keeping its graph, and runs again inside backward
// to get its gradients. A model keeps each decoder layer's input instead of everything the layer
// computes, for one more forward of the layer in backward.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace switchyard {

/// input -> outputs, differentiable in input and in the parameters the function uses. Called
/// twice: `recomputing` false in forward (record side results then), true in backward (the
/// outputs must be the same; side results are not recorded again). Outputs may be undefined.
using RecomputedFn =
    std::function<std::vector<torch::Tensor>(const torch::Tensor& input, bool recomputing)>;

/// fn's outputs, whose backward recomputes fn under the autocast state of this call and
/// backpropagates through it: parameters get their gradients then, the input its. The input is
/// made to require a gradient when it does not (a frozen embedding's output), so that the
/// parameters inside still get theirs. fn must be deterministic (no random draws), and every
/// collective inside it runs again in backward, in the same order on every rank.
///   usage: auto outs = recompute_in_backward(h, [&](const torch::Tensor& x, bool again) {
///            return std::vector<torch::Tensor>{layer(x)}; });
std::vector<torch::Tensor> recompute_in_backward(const torch::Tensor& input, RecomputedFn fn);

}  // namespace switchyard
