// The Qwen2-MoE (Qwen1.5-MoE) entry of the architecture registry: a causal LM whose eval
// logits are [sequences, positions, vocab].
#include "common/errors.h"
#include "launch/model_architecture.h"

namespace switchyard {

ModelArchitecture qwen2_moe_architecture() {
  ModelArchitecture a;
  a.name = "qwen2_moe";
  a.build = [](LoadedModel& m, const std::string& json, const std::string& where) {
    const Qwen2MoeConfig c = Qwen2MoeConfig::from_json(json, where);
    m.model = Qwen2MoeForCausalLM(
        Qwen2MoeOptions(c, m.groups).router(m.config.router()).quant(m.config.model().quant()));
    // GPTQ checkpoints pick their own expert quant when none is asked: record what is held.
    *m.config.mutable_model()->mutable_quant() = m.model->options().quant();
    m.config_json = json;
  };
  a.load_hf_weights = [](LoadedModel& m, const SafetensorsCheckpoint& ckpt) {
    load_hf_weights(*m.model, ckpt);
  };
  a.checkpoint_dtype = [](const LoadedModel& m) { return m.model->options().model().dtype; };
  a.checkpoint_config_json = [](const LoadedModel& m, torch::Dtype dtype) {
    Qwen2MoeConfig c = m.model->options().model();
    c.dtype = dtype;
    c.gptq.reset();  // packed layers were unpacked on load; experts keep their codes as buffers
    return c.to_json();
  };
  a.export_hf = [](const LoadedModel& m, const std::string& dir, torch::Dtype dtype) {
    export_hf_checkpoint(*m.model, dir, dtype);
  };
  a.logits = [](LoadedModel& m, const torch::Tensor& ids, const torch::Tensor& mask) {
    return m.model->forward(ids, mask).logits;
  };
  a.vocab_size = [](const LoadedModel& m) { return m.model->options().model().vocab_size; };
  a.task_model = [](const LoadedModel& m) { return TaskModel::causal_lm(m.model); };
  a.has_gates_to_distil = true;
  return a;
}

}  // namespace switchyard
