// config.json -> BertConfig. Unknown fields are ignored (configs carry many unrelated ones);
// fields we rely on are type-checked and range-checked with the file and field named.
#include "models/bert_config.h"

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "models/safetensors.h"

namespace switchyard {
namespace {

using nlohmann::json;

struct Reader {
  const json& j;
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
  // A string field that must take one value (what we implement) when present.
  void require(const char* key, const std::string& want, const std::string& what) const {
    if (!has(key)) return;
    if (!j[key].is_string() || j[key].get<std::string>() != want)
      fail(key, "only " + what + " is implemented, got " + j[key].dump());
  }
  void refuse_true(const char* key, const std::string& what) const {
    if (has(key) && j[key].is_boolean() && j[key].get<bool>()) fail(key, what);
  }
};

torch::Dtype dtype_from_name(const std::string& name, const Reader& r, const char* key) {
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  r.fail(key, "unsupported dtype '" + name + "'");
}

}  // namespace

BertConfig BertConfig::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(where + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(where + ": not a JSON object");
  const Reader r{j, where};
  r.require("model_type", "bert", "\"bert\"");
  r.require("hidden_act", "gelu", "\"gelu\" (exact erf)");
  r.require("position_embedding_type", "absolute", "\"absolute\"");
  r.refuse_true("is_decoder", "decoder BERT (causal attention) is not implemented");
  r.refuse_true("add_cross_attention", "cross-attention is not implemented");

  BertConfig c;
  r.integer("vocab_size", c.vocab_size);
  r.integer("hidden_size", c.hidden_size);
  r.integer("num_hidden_layers", c.num_hidden_layers);
  r.integer("num_attention_heads", c.num_attention_heads);
  r.integer("intermediate_size", c.intermediate_size);
  r.integer("max_position_embeddings", c.max_position_embeddings);
  r.integer("type_vocab_size", c.type_vocab_size);
  r.number("layer_norm_eps", c.layer_norm_eps);
  r.integer("pad_token_id", c.pad_token_id, 0);
  // save_pretrained writes id2label and not num_labels; older configs may carry either.
  if (r.has("id2label")) {
    if (!j["id2label"].is_object() || j["id2label"].empty())
      r.fail("id2label", "must be a non-empty object");
    c.num_labels = int64_t(j["id2label"].size());
  }
  r.integer("num_labels", c.num_labels);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (j.contains(key) && j[key].is_string()) {
      c.dtype = dtype_from_name(j[key].get<std::string>(), r, key);
      break;
    }
  }
  if (c.hidden_size % c.num_attention_heads != 0)
    r.fail("hidden_size",
           detail::concat(c.hidden_size, " is not divisible by num_attention_heads (",
                          c.num_attention_heads, ")"));
  return c;
}

BertConfig BertConfig::from_file(const std::string& path) {
  return from_json(read_text_file(path), path);
}

BertConfig BertConfig::preset(const std::string& name) {
  BertConfig c;  // the defaults are bert-base
  if (name == "bert-base") return c;
  if (name == "tiny") {
    c.vocab_size = 100;
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.intermediate_size = 64;
    c.max_position_embeddings = 64;
    c.num_labels = 3;
    return c;
  }
  throw ConfigError("model preset = " + name + ": expected bert-base or tiny", "model_preset");
}

}  // namespace switchyard
