// See token_rows.h.
#include "parallel/token_rows.h"

#include <torch/custom_class.h>

#include "common/errors.h"

namespace switchyard {
namespace {

struct TokenRowsHolder : torch::CustomClassHolder {
  explicit TokenRowsHolder(TokenRows m) : map(std::move(m)) {}
  TokenRows map;
};

// The map forward saved: backward hands the same holder to the other move.
c10::intrusive_ptr<TokenRowsHolder> map_of(torch::autograd::AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<TokenRowsHolder>(ctx->saved_data["map"].toCapsule());
}

// One gather of every token's rows, [k, T, H], then one sum over k: in fp32 for bf16 rows,
// rounded once, as the CPU's index_add accumulates them.
torch::Tensor gather_sum(const torch::Tensor& rows, const TokenRows& map) {
  const auto& by_token = map.rows_of_token;
  return rows.index_select(0, by_token.reshape(-1))
      .view({by_token.size(0), map.num_tokens, rows.size(1)})
      .sum(0);
}

class SumRowsToTokens;

class CopyTokensToRows : public torch::autograd::Function<CopyTokensToRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const c10::intrusive_ptr<TokenRowsHolder>& map) {
    ctx->saved_data["map"] = c10::IValue::make_capsule(map);
    return hidden.index_select(0, map->map.token_of_row);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads);
};

class SumRowsToTokens : public torch::autograd::Function<SumRowsToTokens> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& rows,
                               const c10::intrusive_ptr<TokenRowsHolder>& map) {
    ctx->saved_data["map"] = c10::IValue::make_capsule(map);
    return gather_sum(rows, map->map);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {CopyTokensToRows::apply(grads[0].contiguous(), map_of(ctx)), torch::Tensor()};
  }
};

torch::autograd::variable_list CopyTokensToRows::backward(torch::autograd::AutogradContext* ctx,
                                                          torch::autograd::variable_list grads) {
  return {SumRowsToTokens::apply(grads[0].contiguous(), map_of(ctx)), torch::Tensor()};
}

}  // namespace

TokenRows TokenRows::from_order(const torch::Tensor& order, int64_t k, int64_t kept) {
  SY_CHECK(k > 0 && order.dim() == 1 && order.size(0) % k == 0 && kept <= order.size(0),
           "TokenRows: ", order.sizes(), " assignments for top-", k, " with ", kept, " kept");
  TokenRows map;
  map.num_tokens = order.size(0) / k;
  auto assignment = order.narrow(0, 0, kept);
  map.token_of_row = assignment.div(k, "floor");
  if (kept == order.size(0)) {
    // The row of each assignment (order inverted), then each token's k rows in ascending order.
    auto row_of_assignment = torch::empty_like(order);
    row_of_assignment.index_put_({order}, torch::arange(kept, order.options()));
    map.rows_of_token =
        std::get<0>(row_of_assignment.view({map.num_tokens, k}).sort(1)).t().contiguous();
  }
  return map;
}

torch::Tensor copy_tokens_to_rows(const torch::Tensor& hidden, const TokenRows& map) {
  if (!map.rows_of_token.defined()) return hidden.index_select(0, map.token_of_row);
  return CopyTokensToRows::apply(hidden, c10::make_intrusive<TokenRowsHolder>(map));
}

torch::Tensor sum_rows_to_tokens(const torch::Tensor& rows, const TokenRows& map) {
  SY_CHECK(rows.dim() == 2 && rows.size(0) == map.token_of_row.size(0),
           "sum_rows_to_tokens: ", rows.sizes(), " rows for ", map.token_of_row.size(0),
           " assignments");
  if (!map.rows_of_token.defined())
    return torch::zeros({map.num_tokens, rows.size(1)}, rows.options())
        .index_add(0, map.token_of_row, rows);
  return SumRowsToTokens::apply(rows, c10::make_intrusive<TokenRowsHolder>(map));
}

}  // namespace switchyard
