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
/// backpropagates through it: parameters get their gradients then, the input its. An input
/// that requires no gradient (a frozen embedding's output) is made to require one, so that
/// autograd runs this backward and the parameters inside still get theirs; the recomputation
/// leaves it out, so no input gradient is computed for it. fn must be deterministic (no random
/// draws), and every collective inside it runs again in backward, in the same order on every rank.
///   usage: auto outs = recompute_in_backward(h, [&](const torch::Tensor& x, bool again) {
///            return std::vector<torch::Tensor>{layer(x)}; });
std::vector<torch::Tensor> recompute_in_backward(const torch::Tensor& input, RecomputedFn fn);

/// True on this thread while a forward runs again inside backward (recompute_in_backward's
/// second call of fn). Its graph is consumed as soon as it is built, so what an op keeps for its
/// backward then lives for one layer, not the whole forward: quantized experts keep the weights
/// they dequantised instead of dequantising them a third time (models/weight_quant.h).
bool forward_is_recomputation();

}  // namespace switchyard
