// Checkpoint summaries from safetensors headers and config.json. Component rules follow the
// Hugging Face names of Qwen2-MoE and BERT; anything unmatched is counted as "other", so the
// totals always add up to the whole file.
#include "models/checkpoint_summary.h"

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/errors.h"
#include "models/safetensors.h"
#include "models/switchyard_checkpoint.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// First match wins; norms come first because BERT nests LayerNorms inside attention and output.
const std::vector<std::pair<std::string, std::vector<std::string>>> kComponentRules = {
    {"optimizer state", {".exp_avg.", ".exp_avg_sq."}},  // training checkpoints
    {"norms", {"norm.", "LayerNorm.", "_layernorm."}},
    {"embeddings", {"embed_tokens.", "embeddings."}},
    {"lm head", {"lm_head."}},
    {"routers", {".mlp.gate.", ".router."}},
    {"shared expert", {".shared_expert.", ".shared_expert_gate."}},
    {"routed experts", {".experts."}},
    {"attention", {".self_attn.", ".attention."}},
    {"dense mlp", {".mlp.", ".intermediate.", ".output.dense."}},
    {"pooler and classifier", {"pooler.", "classifier."}},
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  return os.str() + "]";
}

// "model.layers.3.mlp.experts.17.up_proj.weight" -> "model.layers.*.mlp.experts.*.up_proj.weight"
std::string name_pattern(const std::string& name) {
  std::string out, segment;
  std::istringstream in(name);
  bool first = true;
  while (std::getline(in, segment, '.')) {
    const bool number =
        !segment.empty() && segment.find_first_not_of("0123456789") == std::string::npos;
    // Switchyard checkpoints name experts "<tensor>.expert<g>".
    const bool expert = segment.size() > 6 && segment.rfind("expert", 0) == 0 &&
                        segment.find_first_not_of("0123456789", 6) == std::string::npos;
    out += (first ? "" : ".") + (number ? std::string("*") : expert ? "expert*" : segment);
    first = false;
  }
  return out;
}

json read_config(const std::string& path) {
  const fs::path file = fs::path(path) / "config.json";
  if (!fs::is_directory(path) || !fs::exists(file)) return json::object();
  const std::string text = read_text_file(file.string());
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(file.string() + ": invalid JSON: " + e.what());
  }
}

std::string quantization_text(const json& config, int64_t* bits) {
  if (!config.contains("quantization_config") || !config["quantization_config"].is_object())
    return "none";
  const auto& q = config["quantization_config"];
  *bits = q.value("bits", int64_t(4));
  std::ostringstream os;
  os << q.value("quant_method", std::string("unknown")) << " int" << *bits << ", group "
     << q.value("group_size", int64_t(-1))
     << (q.value("sym", true) ? ", symmetric" : ", zero points")
     << (q.value("desc_act", false) ? ", act-order" : "");
  return os.str();
}

}  // namespace

std::string component_of(const std::string& name) {
  const std::string dotted = "." + name + ".";
  for (const auto& [component, needles] : kComponentRules)
    for (const auto& needle : needles)
      if (dotted.find(needle) != std::string::npos) return component;
  return "other";
}

namespace {

// The counts, groups and tensor list of `entries`; `params_of` says how many weights a tensor
// holds (packed codes hold several, scales and zeros none).
void count_tensors(CheckpointSummary& s,
                   const std::vector<std::pair<std::string, SafetensorsEntry>>& entries,
                   const std::function<int64_t(const std::string&, int64_t)>& params_of,
                   int64_t experts, int64_t top_k) {
  std::map<std::string, ComponentCount> by_component;
  std::map<std::string, TensorGroup> by_pattern;
  std::vector<std::string> pattern_order;
  for (const auto& [name, e] : entries) {
    const int64_t bytes = int64_t(e.end - e.begin);
    int64_t numel = 1;
    for (auto d : e.shape) numel *= d;
    const int64_t params = params_of(name, numel);
    const std::string component = component_of(name);
    auto& c = by_component[component];
    c.component = component;
    c.tensors += 1;
    c.parameters += params;
    c.bytes += bytes;
    s.total_parameters += params;
    s.total_bytes += bytes;

    const std::string pattern = name_pattern(name), shape = shape_text(e.shape);
    auto [it, fresh] = by_pattern.try_emplace(pattern, TensorGroup{pattern, 0, e.dtype, shape});
    if (fresh) pattern_order.push_back(pattern);
    auto& g = it->second;
    g.count += 1;
    if (g.dtype != e.dtype) g.dtype = "mixed";
    if (g.shape != shape) g.shape = "mixed";
    s.tensors.push_back({name, e.dtype, shape});
  }
  for (const auto& [component, unused] : kComponentRules)
    if (by_component.count(component)) s.components.push_back(by_component[component]);
  if (by_component.count("other")) s.components.push_back(by_component["other"]);
  for (const auto& p : pattern_order) s.groups.push_back(by_pattern[p]);

  const int64_t routed =
      by_component.count("routed experts") ? by_component["routed experts"].parameters : 0;
  s.active_parameters = s.total_parameters;
  if (experts > 0 && top_k > 0 && top_k <= experts)
    s.active_parameters = s.total_parameters - routed + routed * top_k / experts;
}

void add_architecture(CheckpointSummary& s, const json& config) {
  for (const char* key :
       {"model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "intermediate_size", "moe_intermediate_size",
        "shared_expert_intermediate_size", "num_experts", "num_experts_per_tok", "norm_topk_prob",
        "vocab_size", "tie_word_embeddings", "torch_dtype", "dtype", "num_labels"})
    if (config.contains(key) && !config[key].is_null())
      s.architecture[key] =
          config[key].is_string() ? config[key].get<std::string>() : config[key].dump();
  if (config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty())
    s.architecture["architecture"] = config["architectures"][0].dump();
}

// A Switchyard checkpoint: architecture from the config.json its manifest holds (complete) or
// its base's (training), quantization from the manifest's model.quant, tensors from the files.
CheckpointSummary summarize_switchyard(const std::string& path) {
  CheckpointSummary s;
  s.path = path;
  const config::CheckpointManifest m = read_checkpoint_manifest(path);
  const auto& model = m.config().model();
  json config = json::object();
  if (m.complete()) {
    config = json::parse(m.model_config_json(), nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded())
      throw Error("checkpoint " + path + ": its config.json text is invalid");
  } else {
    config = read_config(model.checkpoint());
  }
  add_architecture(s, config);
  s.architecture["switchyard checkpoint"] =
      m.complete()
          ? "complete"
          : "training, step " + std::to_string(m.step()) + " over base " + model.checkpoint();
  s.architecture["saved at expert_parallel"] = std::to_string(m.expert_parallel());
  const auto kind = model.quant().experts();
  s.quantization = kind == config::QUANT_NONE ? "none"
                   : kind == config::INT8
                       ? "int8 per output channel (experts as codes)"
                       : "int4, group " + std::to_string(model.quant().group_size()) +
                             (model.quant().symmetric() ? ", symmetric" : ", zero points") +
                             " (experts as codes)";
  std::vector<std::pair<std::string, SafetensorsEntry>> entries;
  for (const auto& f : m.files()) {
    if (!f.name().ends_with(".safetensors")) continue;
    auto file = SafetensorsFile::open((fs::path(path) / f.name()).string());
    for (const auto& e : file->header().tensors) entries.emplace_back(e.name, e);
  }
  const int64_t codes_per_byte = kind == config::INT4 ? 2 : 1;
  auto params_of = [&](const std::string& name, int64_t numel) -> int64_t {
    // "buffer.<block>.experts.w_in_q.expert3": quantized codes; _scale/_zero are not weights.
    if (name.rfind("buffer.", 0) == 0) {
      if (name.find("_q.expert") != std::string::npos || name.ends_with("_q"))
        return numel * codes_per_byte;
      return 0;
    }
    return name.rfind("param.", 0) == 0 ? numel : 0;  // moments and the step are not weights
  };
  int64_t experts = config.value("num_experts", int64_t(0)),
          top_k = config.value("num_experts_per_tok", int64_t(0));
  if (experts == 0) {  // BERT-MoE: the MoE layout is the run config's
    experts = model.moe_layer_step() > 0 ? model.num_experts() : 0;
    top_k = m.config().router().top_k();
  }
  count_tensors(s, entries, params_of, experts, top_k);
  return s;
}

}  // namespace

CheckpointSummary summarize_checkpoint(const std::string& path) {
  if (fs::is_directory(path) && is_switchyard_checkpoint(path)) return summarize_switchyard(path);
  CheckpointSummary s;
  s.path = path;
  const json config = read_config(path);
  add_architecture(s, config);
  int64_t bits = 0;
  s.quantization = quantization_text(config, &bits);

  const SafetensorsCheckpoint ckpt(path);
  std::vector<std::pair<std::string, SafetensorsEntry>> entries;
  for (const auto& name : ckpt.names()) entries.emplace_back(name, ckpt.entry(name));
  auto params_of = [&](const std::string& name, int64_t numel) -> int64_t {
    // GPTQ: qweight words hold 32 / bits weights; scales, zeros and g_idx are bytes, not weights.
    const bool packed = bits > 0 && name.size() > 8 && name.ends_with(".qweight");
    const bool gptq_meta = bits > 0 && (name.ends_with(".qzeros") || name.ends_with(".scales") ||
                                        name.ends_with(".g_idx"));
    return packed ? numel * (32 / bits) : gptq_meta ? 0 : numel;
  };
  count_tensors(s, entries, params_of, config.value("num_experts", int64_t(0)),
                config.value("num_experts_per_tok", int64_t(0)));
  return s;
}

}  // namespace switchyard
