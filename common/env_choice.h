// A process setting read from the environment as one of a few named values, with a one-line
// error for anything else (models/cpu_linear.h's SWITCHYARD_CPU_BF16_GEMM,
// models/quantized_cpu_gemm.h's SWITCHYARD_CPU_QUANT_GEMM).
#pragma once

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>

#include "common/errors.h"

namespace switchyard {

/// The value environment variable `name` names among `choices`; unset or empty: the first
/// choice's. Anything else throws ConfigError "NAME=v: expected a, b or c".
///   usage: env_choice<Mode>("SWITCHYARD_X", {{"auto", Mode::kAuto}, {"off", Mode::kOff}})
template <typename T>
T env_choice(const char* name, std::initializer_list<std::pair<const char*, T>> choices) {
  const char* value = std::getenv(name);
  const std::string v = value ? value : "";
  if (v.empty()) return choices.begin()->second;
  std::string expected;
  size_t i = 0;
  for (const auto& [choice, result] : choices) {
    if (v == choice) return result;
    expected += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(choice);
    ++i;
  }
  throw ConfigError(std::string(name) + "=" + v + ": expected " + expected);
}

}  // namespace switchyard
