// The registry that maps the config's router oneof to a constructor. Adding a router means
// one new file and one row in router_registry.cpp; nothing switches on strings.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "routers/router.h"

namespace switchyard {

struct RouterEntry {
  config::RouterConfig::KindCase kind;
  std::string name;     ///< as in the config: linear, attention, mlp, hybrid, hash, mlp_hadamard
  std::string formula;  ///< one line, for --help and reports
  std::function<RouterPtr(const RouterOptions&)> make;
};

/// All routers, in the order reports list them.
const std::vector<RouterEntry>& router_registry();

/// The router a config selects: its oneof case, where KIND_NOT_SET means Linear (the
/// checkpoint's own router type).
config::RouterConfig::KindCase router_kind(const config::RouterConfig& router);

/// The entry for a oneof case (KIND_NOT_SET: Linear, as router_kind says).
const RouterEntry& router_entry(config::RouterConfig::KindCase kind);

/// Builds the router selected by options.config().
RouterPtr make_router(const RouterOptions& options);

/// A RouterConfig equal to `base` but selecting `kind` (with that kind's defaults when `base`
/// selects a different one). Used by benchmarks and tests that sweep every router.
config::RouterConfig with_router_kind(const config::RouterConfig& base,
                                      config::RouterConfig::KindCase kind);

}  // namespace switchyard
