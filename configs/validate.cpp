// The one place where a RunConfig's invariants are checked. Each violation is reported as
// "field.path: what is wrong" so the user can find it in the .pbtxt or the --set line.
#include <cmath>

#include "common/errors.h"
#include "configs/run_config.h"

namespace switchyard {
namespace {

bool is_power_of_two(long long v) {
  return v > 0 && (v & (v - 1)) == 0;
}

template <typename T>
void require(bool ok, const std::string& field, const T& value, const std::string& why) {
  if (!ok) throw ConfigError(detail::concat(field, " = ", value, ": ", why), field);
}

void require_positive(long long v, const std::string& field) {
  require(v > 0, field, v, "must be positive");
}

void validate_model(const config::ModelConfig& m) {
  require_positive(m.hidden_size(), "model.hidden_size");
  require_positive(m.num_experts(), "model.num_experts");
  require_positive(m.num_layers(), "model.num_layers");
  require_positive(m.expert_intermediate_size(), "model.expert_intermediate_size");
  require(m.shared_expert_intermediate_size() >= 0, "model.shared_expert_intermediate_size",
          m.shared_expert_intermediate_size(), "must be non-negative (0: no shared expert)");
  require_positive(m.vocab_size(), "model.vocab_size");
  require(m.quant().group_size() > 0 && m.quant().group_size() % 2 == 0, "model.quant.group_size",
          m.quant().group_size(), "must be a positive even number");
}

// Router checks that depend on the number of experts run once per shape the router is built at.
void validate_router(const config::RouterConfig& r) {
  require_positive(r.top_k(), "router.top_k");
  require(std::isfinite(r.capacity_factor()), "router.capacity_factor", r.capacity_factor(),
          "must be finite (<= 0 means dropless)");
  require(r.jitter_noise() >= 0 && r.jitter_noise() < 1, "router.jitter_noise", r.jitter_noise(),
          "must be in [0, 1)");
  require(r.aux_loss_coef() >= 0, "router.aux_loss_coef", r.aux_loss_coef(), "must be >= 0");
  require(r.z_loss_coef() >= 0, "router.z_loss_coef", r.z_loss_coef(), "must be >= 0");
  if (r.has_expert_bias())
    require(std::isfinite(r.expert_bias().update_rate()) && r.expert_bias().update_rate() > 0,
            "router.expert_bias.update_rate", r.expert_bias().update_rate(), "must be positive");
  switch (r.kind_case()) {
    case config::RouterConfig::kAttention:
      require_positive(r.attention().num_heads(), "router.attention.num_heads");
      require_positive(r.attention().head_dim(), "router.attention.head_dim");
      break;
    case config::RouterConfig::kMlp:
      require_positive(r.mlp().hidden(), "router.mlp.hidden");
      break;
    case config::RouterConfig::kHybrid:
      require_positive(r.hybrid().mlp_hidden(), "router.hybrid.mlp_hidden");
      require(r.hybrid().initial_mix() > 0 && r.hybrid().initial_mix() < 1,
              "router.hybrid.initial_mix", r.hybrid().initial_mix(), "must be in (0, 1)");
      break;
    case config::RouterConfig::kMlpHadamard:
      require(is_power_of_two(r.mlp_hadamard().hidden()), "router.mlp_hadamard.hidden",
              r.mlp_hadamard().hidden(), "must be a power of two (the Walsh-Hadamard width)");
      break;
    default:
      break;
  }
}

void validate_train(const config::TrainConfig& t) {
  require_positive(t.steps(), "train.steps");
  require(std::isfinite(t.learning_rate()) && t.learning_rate() > 0, "train.learning_rate",
          t.learning_rate(), "must be positive");
  require(t.weight_decay() >= 0, "train.weight_decay", t.weight_decay(), "must be >= 0");
  require(t.warmup_steps() >= 0, "train.warmup_steps", t.warmup_steps(), "must be >= 0");
  require(t.grad_clip() >= 0, "train.grad_clip", t.grad_clip(), "must be >= 0 (0: no clipping)");
  require_positive(t.micro_batch_size(), "train.micro_batch_size");
  require_positive(t.grad_accumulation(), "train.grad_accumulation");
  require_positive(t.seq_len(), "train.seq_len");
  require(t.min_lr_ratio() >= 0 && t.min_lr_ratio() <= 1, "train.min_lr_ratio", t.min_lr_ratio(),
          "must be in [0, 1]");
  require(t.adam_beta1() >= 0 && t.adam_beta1() < 1, "train.adam_beta1", t.adam_beta1(),
          "must be in [0, 1)");
  require(t.adam_beta2() >= 0 && t.adam_beta2() < 1, "train.adam_beta2", t.adam_beta2(),
          "must be in [0, 1)");
  require(t.adam_eps() > 0, "train.adam_eps", t.adam_eps(), "must be positive");
  require(t.checkpoint_interval() >= 0, "train.checkpoint_interval", t.checkpoint_interval(),
          "must be >= 0 (0: only at the end)");
  require(t.distill_steps() >= 0 && (t.distill_steps() == 0 || t.distill_steps() < t.steps()),
          "train.distill_steps", t.distill_steps(),
          "must be in [0, train.steps) (the steps after it fine-tune on the task loss)");
  require(t.keep_checkpoints() >= 0, "train.keep_checkpoints", t.keep_checkpoints(),
          "must be 0 (keep all) or positive");
  require(t.max_skipped_steps() >= 1, "train.max_skipped_steps", t.max_skipped_steps(),
          "must be >= 1 (skips in a row before the run stops)");
  require(t.eval_interval() >= 0, "train.eval_interval", t.eval_interval(),
          "must be >= 0 (0: before the first step and at the end)");
  require(t.eval_blocks() >= 0, "train.eval_blocks", t.eval_blocks(), "must be >= 0 (0: all)");
}

void validate_bench(const config::BenchConfig& b, const config::RouterConfig& r) {
  require_positive(b.tokens(), "bench.tokens");
  require_positive(b.repeats(), "bench.repeats");
  require(b.warmup() >= 0, "bench.warmup", b.warmup(), "must be >= 0");
  for (int i = 0; i < b.router_shapes_size(); ++i) {
    const auto& s = b.router_shapes(i);
    const std::string at = detail::concat("bench.router_shapes[", i, "]");
    require_positive(s.hidden_size(), at + ".hidden_size");
    require_positive(s.num_experts(), at + ".num_experts");
    require_positive(s.top_k(), at + ".top_k");
    require(s.top_k() <= s.num_experts(), at + ".top_k", s.top_k(),
            detail::concat("exceeds ", at, ".num_experts (", s.num_experts(), ")"));
    if (r.has_mlp_hadamard()) validate_router_for_experts(r, s.num_experts(), at + ".num_experts");
  }
  require_positive(b.layer_tokens(), "bench.layer_tokens");
  require(b.model_tokens() > 1, "bench.model_tokens", b.model_tokens(), "must be at least 2");
  require(b.model_layers() >= 0, "bench.model_layers", b.model_layers(), "must not be negative");
  require(b.quant_tokens() >= 4 && b.quant_tokens() % 4 == 0, "bench.quant_tokens",
          b.quant_tokens(), "must be a positive multiple of 4 (four sequences)");
  require_positive(b.layer_repeats(), "bench.layer_repeats");
  require(b.device() == "cpu" || b.device() == "cuda", "bench.device", b.device(),
          "must be \"cpu\" or \"cuda\"");
  require(std::isfinite(b.expert_active_share()) && b.expert_active_share() > 0 &&
              b.expert_active_share() <= 1,
          "bench.expert_active_share", b.expert_active_share(), "must be in (0, 1]");
  require_positive(b.vocab_size(), "bench.vocab_size");
  for (int i = 0; i < b.head_chunk_rows_size(); ++i)
    require(b.head_chunk_rows(i) >= 0, detail::concat("bench.head_chunk_rows[", i, "]"),
            b.head_chunk_rows(i), "must be >= 0 (0: the default)");
  for (int i = 0; i < b.layer_shapes_size(); ++i) {
    const auto& s = b.layer_shapes(i);
    const std::string at = detail::concat("bench.layer_shapes[", i, "]");
    require_positive(s.hidden_size(), at + ".hidden_size");
    require_positive(s.num_experts(), at + ".num_experts");
    require_positive(s.top_k(), at + ".top_k");
    require(s.top_k() <= s.num_experts(), at + ".top_k", s.top_k(),
            detail::concat("exceeds ", at, ".num_experts (", s.num_experts(), ")"));
    require_positive(s.expert_intermediate_size(), at + ".expert_intermediate_size");
    require(s.shared_expert_intermediate_size() >= 0, at + ".shared_expert_intermediate_size",
            s.shared_expert_intermediate_size(), "must be non-negative (0: none)");
  }
  for (int i = 0; i < b.alltoall_bytes_size(); ++i)
    require_positive(b.alltoall_bytes(i), detail::concat("bench.alltoall_bytes[", i, "]"));
  for (int i = 0; i < b.fwht_widths_size(); ++i)
    require(is_power_of_two(b.fwht_widths(i)), detail::concat("bench.fwht_widths[", i, "]"),
            b.fwht_widths(i), "must be a power of two");
}

}  // namespace

void validate_router_for_experts(const config::RouterConfig& r, int num_experts,
                                 const std::string& experts_field) {
  require(r.top_k() <= num_experts, "router.top_k", r.top_k(),
          detail::concat("exceeds ", experts_field, " (", num_experts, ")"));
  if (r.has_mlp_hadamard())
    require(r.mlp_hadamard().hidden() > num_experts, "router.mlp_hadamard.hidden",
            r.mlp_hadamard().hidden(),
            detail::concat("must exceed ", experts_field, " (", num_experts,
                           "): the DC coefficient is not read out"));
}

void validate_run_config(const RunConfig& c) {
  validate_model(c.model());
  validate_router(c.router());
  const int ep = c.parallel().expert_parallel();
  require_positive(ep, "parallel.expert_parallel");
  const std::string& device = c.parallel().device();
  require(device == "auto" || device == "cpu" || device == "cuda", "parallel.device", device,
          "must be \"auto\", \"cpu\" or \"cuda\"");
  require(std::isfinite(c.parallel().timeout_s()) && c.parallel().timeout_s() >= 0,
          "parallel.timeout_s", c.parallel().timeout_s(), "must be 0 (off) or a positive number");
  require(c.parallel().rebalance_interval() >= 0, "parallel.rebalance_interval",
          c.parallel().rebalance_interval(), "must be 0 (off) or a number of steps");
  const float gain = c.parallel().rebalance_min_gain();
  require(std::isfinite(gain) && gain >= 0 && gain < 1, "parallel.rebalance_min_gain", gain,
          "must be a fraction in [0, 1)");
  // model.num_experts describes the model only when no file does (benchmarks); a checkpoint's
  // or init_config's own expert count is checked when the model is built from it.
  const bool shape_from_file = !c.model().checkpoint().empty() || c.model().has_init_config();
  if (!shape_from_file) {
    validate_router_for_experts(c.router(), c.model().num_experts(), "model.num_experts");
    require(c.model().num_experts() % ep == 0, "parallel.expert_parallel", ep,
            detail::concat("must divide model.num_experts (", c.model().num_experts(), ")"));
  }
  validate_train(c.train());
  require(c.data().max_len() >= 2, "data.max_len", c.data().max_len(),
          "must be at least 2 (<cls> and one token)");
  require(c.logging().log_interval() > 0, "logging.log_interval", c.logging().log_interval(),
          "must be positive");
  require(c.logging().phase_profile_interval() >= 0, "logging.phase_profile_interval",
          c.logging().phase_profile_interval(), "must be 0 (off) or a number of steps");
  validate_bench(c.bench(), c.router());
}

}  // namespace switchyard
