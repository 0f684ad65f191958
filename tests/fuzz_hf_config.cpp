// libFuzzer target: Hugging Face config.json readers. The same bytes go to both:
//  - Qwen2MoeConfig::from_json throws switchyard::Error, or gives a config with positive sizes,
//    finite positive eps and rope_theta, heads divisible by kv heads, top-k <= experts, a GPTQ
//    section of 4 bits in groups of a positive multiple of 8, and from_json(to_json(c)) == c
//    (compared through to_json, which writes every field it reads).
//  - BertConfig::from_json throws switchyard::Error, or gives positive sizes, a hidden size
//    divisible by the heads, finite positive eps and, with id2label, each id 0..num_labels-1
//    named exactly once, by its entry.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/errors.h"
#include "models/bert_config.h"
#include "models/qwen2_moe_config.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

namespace {

bool positive_finite(double x) {
  return std::isfinite(x) && x > 0;
}

void check_qwen(const std::string& text) {
  Qwen2MoeConfig c;
  try {
    c = Qwen2MoeConfig::from_json(text, "config.json");
  } catch (const Error&) {
    return;
  }
  for (int64_t v : {c.vocab_size, c.hidden_size, c.intermediate_size, c.moe_intermediate_size,
                    c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
                    c.num_experts_per_tok, c.decoder_sparse_step, c.attention_head_dim()})
    FUZZ_CHECK(v >= 1);
  FUZZ_CHECK(c.shared_expert_intermediate_size >= 0 && c.num_experts >= 0 && c.head_dim >= 0);
  FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0);
  FUZZ_CHECK(c.num_experts == 0 || c.num_experts_per_tok <= c.num_experts);
  FUZZ_CHECK(positive_finite(c.rms_norm_eps) && positive_finite(c.rope_theta) &&
             positive_finite(c.initializer_range) && std::isfinite(c.router_aux_loss_coef));
  if (c.gptq)
    FUZZ_CHECK(c.gptq->bits == 4 && c.gptq->group_size > 0 && c.gptq->group_size % 8 == 0);
  const std::string once = c.to_json();
  std::string twice;
  try {
    twice = Qwen2MoeConfig::from_json(once, "to_json").to_json();
  } catch (const Error& e) {
    FUZZ_CHECK(false, "to_json output refused: %s\n%s\n", e.what(), once.c_str());
  }
  FUZZ_CHECK(once == twice, "to_json round trip differs:\n%s\n---\n%s\n", once.c_str(),
             twice.c_str());
}

void check_bert(const std::string& text) {
  BertConfig c;
  try {
    c = BertConfig::from_json(text, "config.json");
  } catch (const Error&) {
    return;
  }
  for (int64_t v :
       {c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
        c.intermediate_size, c.max_position_embeddings, c.type_vocab_size, c.num_labels})
    FUZZ_CHECK(v >= 1);
  FUZZ_CHECK(c.pad_token_id >= 0 && c.hidden_size % c.num_attention_heads == 0);
  FUZZ_CHECK(positive_finite(c.layer_norm_eps));
  FUZZ_CHECK(c.labels.empty() || int64_t(c.labels.size()) == c.num_labels);
  if (c.labels.empty()) return;
  // Each id 0..num_labels-1 named once, by the entry of id2label that names it.
  const auto id2label = nlohmann::json::parse(text)["id2label"];
  std::set<int64_t> ids;
  for (const auto& [key, name] : id2label.items()) {
    const int64_t id = std::strtoll(key.c_str(), nullptr, 10);
    FUZZ_CHECK(id >= 0 && id < c.num_labels && c.labels[size_t(id)] == name.get<std::string>());
    ids.insert(id);
  }
  FUZZ_CHECK(int64_t(ids.size()) == c.num_labels, "id2label names %zu of %lld ids\n", ids.size(),
             (long long)c.num_labels);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check_qwen(text);
  check_bert(text);
  return 0;
}
