// See model_checkpoint.h.
#include "models/model_checkpoint.h"

#include <map>
#include <set>

#include "common/errors.h"
#include "models/moe_block.h"

namespace switchyard {
namespace {

// One MoE block of the model, by module path.
struct Block {
  std::string path;  ///< "layers.3.moe"
  MoeBlockImpl* moe = nullptr;
  std::vector<int64_t> experts_held;  ///< the global expert of each local slot
  int64_t global = 0;
  std::string experts() const { return path + ".experts."; }
  std::string router() const { return path + ".router."; }
};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::vector<Block> moe_blocks(torch::nn::Module& model) {
  std::vector<Block> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto* moe = item.value()->as<MoeBlockImpl>())
      out.push_back(
          {item.key(), moe, moe->dispatcher().local_experts(), moe->options().num_experts()});
  return out;
}

// The block whose routed experts hold tensor `path` directly ("layers.3.moe.experts.w_in").
const Block* expert_block(const std::vector<Block>& blocks, const std::string& path) {
  for (const auto& b : blocks)
    if (starts_with(path, b.experts()) && path.find('.', b.experts().size()) == std::string::npos)
      return &b;
  return nullptr;
}

// Every tensor of the model with its checkpoint key ("param.<path>" or "buffer.<path>").
std::vector<std::pair<std::string, torch::Tensor>> keyed_tensors(torch::nn::Module& model,
                                                                 std::vector<std::string>* paths) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters()) {
    out.emplace_back("param." + p.key(), p.value());
    paths->push_back(p.key());
  }
  for (const auto& b : model.named_buffers()) {
    out.emplace_back("buffer." + b.key(), b.value());
    paths->push_back(b.key());
  }
  return out;
}

// "param.x.expert12" -> "param.x"; other names unchanged.
std::string without_expert_suffix(const std::string& name) {
  const auto dot = name.rfind(".expert");
  if (dot == std::string::npos) return name;
  const std::string digits = name.substr(dot + 7);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return name;
  return name.substr(0, dot);
}

[[noreturn]] void mismatch(const CheckpointTensors& ckpt, const std::string& what) {
  throw Error(detail::concat("checkpoint ", ckpt.dir(), ": ", what,
                             " (saved from another architecture or model configuration?)"));
}

}  // namespace

CheckpointShard model_state_shard(torch::nn::Module& model, const ProcessGroups& groups) {
  const int ep_rank = groups.ep_rank();
  const auto blocks = moe_blocks(model);
  std::vector<std::string> paths;
  const auto tensors = keyed_tensors(model, &paths);
  CheckpointShard shard;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [key, t] = tensors[i];
    if (t.numel() == 0) continue;  // quantized banks' empty placeholders
    if (const Block* b = expert_block(blocks, paths[i]))
      append_per_expert(shard.experts, key, t.detach(),
                        b->moe->dispatcher().placement().owned(ep_rank));
    else
      shard.replicated.emplace_back(key, t.detach());
  }
  return shard;
}

int64_t overlay_model_state(torch::nn::Module& model, const CheckpointTensors& ckpt,
                            const OverlayOptions& options) {
  torch::NoGradGuard no_grad;
  const auto blocks = moe_blocks(model);
  std::vector<std::string> paths;
  const auto tensors = keyed_tensors(model, &paths);
  std::set<std::string> model_keys;
  for (const auto& [key, t] : tensors) model_keys.insert(key);

  // Quantized banks fed from float experts: requantized here, so their codes count as loaded.
  std::set<std::string> requantized;
  for (const auto& b : blocks) {
    auto& bank = *b.moe->experts;
    const std::string w_in = "param." + b.experts() + "w_in",
                      w_out = "param." + b.experts() + "w_out";
    const int64_t first = b.experts_held.front();
    const bool float_saved = ckpt.contains(expert_tensor_name(w_in, first)) &&
                             ckpt.get(expert_tensor_name(w_in, first)).numel() > 0;
    const bool codes_saved =
        ckpt.contains(expert_tensor_name("buffer." + b.experts() + "w_in_q", first));
    if (codes_saved && !bank.quantized())
      mismatch(ckpt, "MoE block " + b.path +
                         " holds quantized experts but model.quant asks for float ones; load it "
                         "with its own quantization");
    if (codes_saved && bank.quantized() &&
        ckpt.get(expert_tensor_name("buffer." + b.experts() + "w_in_q", first)).sizes() !=
            bank.quantized_in()->q[0].sizes())
      mismatch(ckpt, "MoE block " + b.path +
                         " holds experts quantized otherwise than model.quant asks (another kind "
                         "or group size); load it with its own quantization");
    if (!bank.quantized() || !float_saved || codes_saved) continue;
    for (size_t s = 0; s < b.experts_held.size(); ++s)
      bank.load_expert(int64_t(s), ckpt.get(expert_tensor_name(w_in, b.experts_held[s])),
                       ckpt.get(expert_tensor_name(w_out, b.experts_held[s])));
    requantized.insert(b.experts());
  }

  int64_t copied = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto [key, t] = tensors[i];
    const Block* b = expert_block(blocks, paths[i]);
    const std::string leaf = paths[i].substr(paths[i].rfind('.') + 1);
    if (b && requantized.count(b->experts()) && leaf.rfind("w_", 0) == 0) continue;
    if (options.replace_routers()) {
      bool is_router = false;
      for (const auto& blk : blocks) is_router |= starts_with(paths[i], blk.router());
      if (is_router) continue;
    }
    if (t.numel() == 0) continue;
    const std::string first_name = b ? expert_tensor_name(key, b->experts_held.front()) : key;
    if (!ckpt.contains(first_name)) {
      if (options.complete()) mismatch(ckpt, "no tensor '" + first_name + "'");
      continue;
    }
    const torch::Tensor v = b ? ckpt.gather_experts(key, b->experts_held) : ckpt.get(key);
    if (v.sizes() != t.sizes())
      mismatch(ckpt, detail::concat("'", key, "' is ", v.sizes(), ", the model's is ", t.sizes()));
    t.copy_(v);
    ++copied;
  }

  if (options.replace_routers())
    for (const auto& b : blocks) {
      const std::string gate = "param." + b.router() + "gate.weight";
      if (ckpt.contains(gate)) b.moe->router->init_from_gate(ckpt.get(gate).to(torch::kFloat));
    }

  // Nothing in the checkpoint may be left without a place, in a training checkpoint either:
  // one whose names match nothing would otherwise leave the bare base to be evaluated.
  for (const auto& name : ckpt.names()) {
    if (!starts_with(name, "param.") && !starts_with(name, "buffer.")) continue;
    const std::string key = without_expert_suffix(name);
    bool router = false;
    for (const auto& b : blocks)
      router |= starts_with(key, "param." + b.router()) || starts_with(key, "buffer." + b.router());
    if (router && options.replace_routers()) continue;
    if (!model_keys.count(key)) mismatch(ckpt, "tensor '" + name + "' has no place in this model");
    if (key == name) continue;
    const Block* b = expert_block(blocks, key.substr(key.find('.') + 1));
    const int64_t g = std::stoll(name.substr(key.size() + 7));
    if (!b || g >= b->global)
      mismatch(ckpt, detail::concat("tensor '", name, "' is expert ", g, ", the model has ",
                                    b ? b->global : 0, " experts there"));
  }
  return copied;
}

}  // namespace switchyard
