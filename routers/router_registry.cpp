// The list of routers. Each make_* lives in its router's own file.
#include "routers/router_registry.h"

#include "common/errors.h"

namespace switchyard {

RouterPtr make_linear_router(const RouterOptions&);
RouterPtr make_attention_router(const RouterOptions&);
RouterPtr make_mlp_router(const RouterOptions&);
RouterPtr make_hybrid_router(const RouterOptions&);
RouterPtr make_hash_router(const RouterOptions&);
RouterPtr make_mlp_hadamard_router(const RouterOptions&);

const std::vector<RouterEntry>& router_registry() {
  using K = config::RouterConfig;
  static const std::vector<RouterEntry> entries = {
      {K::kLinear, "linear", "W x", make_linear_router},
      {K::kAttention, "attention", "mean_h (Wq_h x) . key_{e,h} / sqrt(d)", make_attention_router},
      {K::kMlp, "mlp", "W2 act(W1 x + b1) + b2", make_mlp_router},
      {K::kHybrid, "hybrid", "a W x + (1 - a) mlp(x), a = sigmoid(learned)", make_hybrid_router},
      {K::kHash, "hash", "fixed seeded hash of the token id, no parameters", make_hash_router},
      {K::kMlpHadamard, "mlp_hadamard", "s * FWHT(act(W1 x + b1))[1:E+1] + b",
       make_mlp_hadamard_router},
  };
  return entries;
}

config::RouterConfig::KindCase router_kind(const config::RouterConfig& router) {
  return router.kind_case() == config::RouterConfig::KIND_NOT_SET ? config::RouterConfig::kLinear
                                                                  : router.kind_case();
}

const RouterEntry& router_entry(config::RouterConfig::KindCase kind) {
  if (kind == config::RouterConfig::KIND_NOT_SET)
    kind = config::RouterConfig::kLinear;  // router_kind's rule
  for (const auto& e : router_registry())
    if (e.kind == kind) return e;
  throw Error(detail::concat("no router registered for config case ", int(kind)));
}

RouterPtr make_router(const RouterOptions& options) {
  return router_entry(options.config().kind_case()).make(options);
}

config::RouterConfig with_router_kind(const config::RouterConfig& base,
                                      config::RouterConfig::KindCase kind) {
  if (base.kind_case() == kind) return base;
  config::RouterConfig out = base;
  const auto* field = out.GetDescriptor()->FindFieldByNumber(int(kind));
  SY_CHECK(field != nullptr, "router kind ", int(kind), " has no config field");
  out.GetReflection()->MutableMessage(&out, field);  // selects the member with its defaults
  return out;
}

}  // namespace switchyard
