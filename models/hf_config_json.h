// Reading Hugging Face config.json files: parse errors and every type or range error name the
// file and the field. Shared by the model configs (Qwen2-MoE, BERT).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/errors.h"

namespace switchyard {

/// The whole file as a JSON object; throws Error naming `where` otherwise.
inline nlohmann::json parse_hf_config(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(where + ": not a JSON object");
  return j;
}

/// Typed, range-checked reads of optional fields: an absent or null field leaves `out` as it is
/// (the architecture's default), a present one must have the right type.
struct HfConfigReader {
  const nlohmann::json& j;
  const std::string& where;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(where + ": " + key + ": " + what);
  }
  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  void integer(const char* key, int64_t& out, int64_t min = 1) const {
    if (!has(key)) return;
    if (!j[key].is_number_integer()) fail(key, "must be an integer");
    out = j[key].get<int64_t>();
    if (out < min) fail(key, detail::concat("must be >= ", min, ", got ", out));
  }
  void number(const char* key, double& out) const {
    if (!has(key)) return;
    if (!j[key].is_number()) fail(key, "must be a number");
    out = j[key].get<double>();
    if (!(out > 0)) fail(key, "must be positive");
  }
  void boolean(const char* key, bool& out) const {
    if (!has(key)) return;
    if (!j[key].is_boolean()) fail(key, "must be true or false");
    out = j[key].get<bool>();
  }
  /// A string field that must take one value (what we implement) when present.
  void require(const char* key, const std::string& want, const std::string& what) const {
    if (!has(key)) return;
    if (!j[key].is_string() || j[key].get<std::string>() != want)
      fail(key, "only " + what + " is implemented, got " + j[key].dump());
  }
  void refuse_true(const char* key, const std::string& what) const {
    if (has(key) && j[key].is_boolean() && j[key].get<bool>()) fail(key, what);
  }
  /// "dtype" (transformers v5) or "torch_dtype" (v4): float32, bfloat16 or float16.
  void dtype(torch::Dtype& out) const {
    for (const char* key : {"dtype", "torch_dtype"}) {
      if (!j.contains(key) || !j[key].is_string()) continue;
      const std::string name = j[key].get<std::string>();
      if (name == "float32")
        out = torch::kFloat;
      else if (name == "bfloat16")
        out = torch::kBFloat16;
      else if (name == "float16")
        out = torch::kHalf;
      else
        fail(key, "unsupported dtype '" + name + "'");
      return;
    }
  }
};

}  // namespace switchyard
