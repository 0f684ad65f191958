// The BERT encoder's hyper-parameters, read from a Hugging Face BERT config.json with
// transformers' defaults for absent fields; only what Switchyard's BertMoe implements is accepted.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace switchyard {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  int64_t num_labels = 2;  ///< classifier outputs: num_labels, or the size of id2label
  /// id2label's names in id order; empty when config.json has no id2label.
  std::vector<std::string> labels;
  torch::Dtype dtype = torch::kFloat;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  /// Parses config.json text; `where` names the file in errors. Refuses what the model does
  /// not implement: another model_type, hidden_act other than "gelu" (exact erf), a
  /// position_embedding_type other than "absolute", decoder use (is_decoder, cross-attention).
  static BertConfig from_json(const std::string& text, const std::string& where);
  static BertConfig from_file(const std::string& path);

  /// Named architectures: "bert-base" (the defaults above) and "tiny" (for tests).
  /// Throws ConfigError listing the names for an unknown one.
  static BertConfig preset(const std::string& name);
};

}  // namespace switchyard
