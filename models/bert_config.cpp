// config.json -> BertConfig. Unknown fields are ignored (configs carry many unrelated ones);
// fields we rely on are type-checked and range-checked with the file and field named.
#include "models/bert_config.h"

#include "common/errors.h"
#include "models/hf_config_json.h"
#include "models/safetensors.h"

namespace switchyard {

BertConfig BertConfig::from_json(const std::string& text, const std::string& where) {
  const nlohmann::json j = parse_hf_config(text, where);
  const HfConfigReader r{j, where};
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
    c.labels.resize(size_t(c.num_labels));
    std::vector<char> seen(c.labels.size());  // an empty name is a name too
    for (const auto& [key, name] : j["id2label"].items()) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
      }
      if (used != key.size() || id < 0 || id >= c.num_labels || !name.is_string() ||
          seen[size_t(id)])
        r.fail("id2label", "must map the ids 0.." + std::to_string(c.num_labels - 1) +
                               " to label names, each once");
      seen[size_t(id)] = 1;
      c.labels[size_t(id)] = name.get<std::string>();
    }
  }
  r.integer("num_labels", c.num_labels);
  if (!c.labels.empty() && int64_t(c.labels.size()) != c.num_labels)
    r.fail("num_labels",
           detail::concat(c.num_labels, " disagrees with id2label's ", c.labels.size(), " labels"));
  r.dtype(c.dtype);
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
