// The autograd function behind all_to_all_v_with_grad.
#include "parallel/all_to_all.h"

#include <torch/custom_class.h>

namespace switchyard {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd's saved_data holds IValues; a capsule carries the communicator through it.
struct CommunicatorCapsule : torch::CustomClassHolder {
  explicit CommunicatorCapsule(CommunicatorPtr c) : comm(std::move(c)) {}
  CommunicatorPtr comm;
};

class AllToAllV : public torch::autograd::Function<AllToAllV> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input,
                               const CommunicatorPtr& comm, const std::vector<int64_t>& send,
                               const std::vector<int64_t>& recv) {
    ctx->saved_data["comm"] =
        c10::IValue::make_capsule(c10::make_intrusive<CommunicatorCapsule>(comm));
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    return comm->all_to_all_v(input.contiguous(), send, recv);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto capsule = ctx->saved_data["comm"].toCapsule();
    auto& comm = static_cast<CommunicatorCapsule*>(capsule.get())->comm;
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto recv = ctx->saved_data["recv"].toIntVector();
    // Autograd materialises an unused output's gradient as zeros, so every rank takes part in
    // the reverse exchange even where nothing downstream used the rows.
    const torch::Tensor& grad = grads[0];
    return {comm->all_to_all_v(grad.contiguous(), recv, send), {}, {}, {}};
  }
};

}  // namespace

torch::Tensor all_to_all_v_with_grad(const CommunicatorPtr& comm, const torch::Tensor& input,
                                     const std::vector<int64_t>& send_counts,
                                     const std::vector<int64_t>& recv_counts) {
  return AllToAllV::apply(input, comm, send_counts, recv_counts);
}

}  // namespace switchyard
