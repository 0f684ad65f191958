// The Qwen2-MoE (Qwen1.5-MoE) entry of the architecture registry: a causal LM whose eval logits
// are [sequences, positions, vocab], exported in the hub layout, with original gates
// (mlp.gate.weight) for router distillation.
#include "common/errors.h"
#include "models/model_architecture.h"
#include "models/qwen2_moe.h"

namespace switchyard {
namespace {

class Qwen2MoeModel final : public ArchitectureModel {
 public:
  explicit Qwen2MoeModel(Qwen2MoeForCausalLM model) : model_(std::move(model)) {}

  torch::nn::Module& module() const override { return *model_.ptr(); }
  TaskModel task_model() const override { return TaskModel::causal_lm(model_); }
  void load_hf_weights(const SafetensorsCheckpoint& ckpt) override {
    switchyard::load_hf_weights(*model_, ckpt);
  }
  torch::Dtype checkpoint_dtype() const override { return model_->options().model().dtype; }
  std::string config_json(torch::Dtype dtype) const override {
    Qwen2MoeConfig c = model_->options().model();
    c.dtype = dtype;
    c.gptq.reset();  // packed layers were unpacked on load; experts keep their codes as buffers
    return c.to_json();
  }
  void export_hf(const std::string& dir, torch::Dtype dtype) const override {
    export_hf_checkpoint(*model_, dir, dtype);
  }
  torch::Tensor logits(const torch::Tensor& ids, const torch::Tensor& mask) override {
    return model_->forward(ids, mask).logits;
  }
  int64_t vocab_size() const override { return model_->options().model().vocab_size; }
  std::vector<torch::Tensor> original_gates(const std::string& dir) const override {
    const SafetensorsCheckpoint ckpt(dir);
    std::vector<torch::Tensor> gates;
    const auto& layers = model_->layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (!layers[i]->moe) continue;
      const std::string name = "model.layers." + std::to_string(i) + ".mlp.gate.weight";
      SY_CHECK(ckpt.contains(name), dir, ": no ", name, " to distil the router from");
      gates.push_back(ckpt.get(name).to(torch::kFloat));
    }
    return gates;
  }

 private:
  Qwen2MoeForCausalLM model_;
};

class Qwen2MoeArchitecture final : public ModelArchitecture {
 public:
  std::string name() const override { return "qwen2_moe"; }
  Task task() const override { return Task::kCausalLm; }
  std::unique_ptr<ArchitectureModel> build(const std::string& json, const std::string& where,
                                           RunConfig& config,
                                           const ProcessGroups& groups) const override {
    const Qwen2MoeConfig c = Qwen2MoeConfig::from_json(json, where);
    Qwen2MoeForCausalLM model(Qwen2MoeOptions(c, groups)
                                  .router(config.router())
                                  .seed(config.model().init_seed())
                                  .quant(config.model().quant())
                                  .recompute_layers(config.train().recompute_layers())
                                  .placement(placement_from_config(config.parallel().placement())));
    // GPTQ checkpoints pick their own expert quant when none is asked: record what is held.
    *config.mutable_model()->mutable_quant() = model->options().quant();
    return std::make_unique<Qwen2MoeModel>(std::move(model));
  }
  torch::Dtype declared_dtype(const std::string& json, const std::string& where) const override {
    return Qwen2MoeConfig::from_json(json, where).dtype;
  }
};

}  // namespace

std::unique_ptr<ModelArchitecture> qwen2_moe_architecture() {
  return std::make_unique<Qwen2MoeArchitecture>();
}

}  // namespace switchyard
