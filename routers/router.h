// The Router interface: hidden states [T, H] (and token ids, for the Hash router) -> Routing.
// Concrete routers (one file each) only compute logits; gating.h does the rest for all of them.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "configs/switchyard.pb.h"
#include "routers/gating.h"

namespace switchyard {

/// What every router is built from: the shape it routes at and the run config's router section
/// (gating hyper-parameters plus the chosen router's own sub-message).
struct RouterOptions {
  RouterOptions(int64_t hidden_size, int64_t num_experts, config::RouterConfig config = {})
      : hidden_size_(hidden_size), num_experts_(num_experts), config_(std::move(config)) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, num_experts);
  TORCH_ARG(config::RouterConfig, config);
  /// Ranks the load-balancing loss counts over (GatingOptions::balance_group); null: this one.
  TORCH_ARG(CommunicatorPtr, balance_group);
};

/// Base of all routers.
///   usage: auto router = make_router(RouterOptions(2048, 60, cfg.router()));
///          Routing r = router->route(hidden, token_ids);
class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(RouterOptions options);
  ~RouterImpl() override = default;

  /// Jitter (training only) -> logits -> shared gating. `token_ids` [T] int64 may be undefined
  /// for routers that do not read it.
  Routing route(const torch::Tensor& hidden, const torch::Tensor& token_ids = {});

  /// The router's own formula: [T, H] -> [T, E].
  virtual torch::Tensor compute_logits(const torch::Tensor& hidden,
                                       const torch::Tensor& token_ids) = 0;

  /// Starts from a checkpoint's linear gate weight [E, H] where the router has a linear part;
  /// returns false (and changes nothing) where it has none.
  virtual bool init_from_gate(const torch::Tensor& gate_weight) { return false; }
  /// The [E, H] weight of a plain linear gate, for export to checkpoints that only know one;
  /// undefined for every router that is more than that.
  virtual torch::Tensor gate_weight() const { return {}; }

  /// Registry name, e.g. "mlp_hadamard".
  virtual std::string kind() const = 0;

  int64_t num_parameters() const;
  const RouterOptions& options() const { return options_; }
  const GatingOptions& gating() const { return gating_; }
  /// See GatingOptions::balance_group; the trainer sets the world there.
  void set_balance_group(CommunicatorPtr group) { gating_.balance_group = std::move(group); }

  /// Aux-loss-free balancing (router.expert_bias): the [E] fp32 buffer "expert_bias" added to
  /// the scores when experts are chosen (see gate()); undefined when the config has none.
  const torch::Tensor& expert_bias() const { return expert_bias_; }
  /// bias_e += update_rate * sign(mean(load) - load_e). `load` [E]: how often each expert was
  /// chosen in the global batch of the step just taken (the trainer sums it over the world).
  void update_expert_bias(const torch::Tensor& load);

  /// Module::to, except that the expert bias stays fp32 (updates of 1e-3 vanish in bf16).
  using torch::nn::Module::to;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;

 protected:
  RouterOptions options_;
  GatingOptions gating_;
  torch::Tensor expert_bias_;
};

using RouterPtr = std::shared_ptr<RouterImpl>;

/// Copies a checkpoint gate [E, H] into a router's linear weight, checking the shape.
void copy_gate_weight(torch::Tensor& weight, const torch::Tensor& gate_weight,
                      const std::string& router_kind);

/// The activation named in the config, as a function.
torch::Tensor apply_activation(config::Activation activation, const torch::Tensor& x);

}  // namespace switchyard
