// The BERT encoder (Hugging Face BertModel / BertForSequenceClassification) whose FFNs can be
// Switchyard MoE blocks upcycled from the dense checkpoint: any router, experts sharded over EP.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "models/bert_config.h"
#include "models/moe_block.h"
#include "models/safetensors.h"

namespace switchyard {

struct BertMoeOptions {
  BertMoeOptions(BertConfig model, ProcessGroups groups)
      : model_(std::move(model)), groups_(std::move(groups)) {}
  bool is_moe_layer(int64_t layer) const {
    return num_experts_ > 0 && (layer + 1) % moe_layer_step_ == 0;
  }

  TORCH_ARG(BertConfig, model);
  TORCH_ARG(ProcessGroups, groups);
  /// Experts per MoE layer (EP must divide it); 0: dense BERT.
  TORCH_ARG(int64_t, num_experts) = 0;
  /// Layer i is MoE when (i + 1) % moe_layer_step == 0: 1 every layer, 2 every other one.
  TORCH_ARG(int64_t, moe_layer_step) = 1;
  /// Router of every MoE block (unset kind: Linear). Its gating fields (norm_topk_prob, capacity,
  /// loss coefficients) apply as given; top_k below replaces its top_k.
  TORCH_ARG(config::RouterConfig, router);
  TORCH_ARG(int64_t, top_k) = 2;
  /// Expert placement of the MoE layers (parallel.placement); null: contiguous.
  TORCH_ARG(PlacementPtr, placement);
  /// Upcycling noise: expert = dense FFN weight W + N(0, (upcycle_noise * std(W))^2); biases
  /// are copied. 0: every expert an exact copy.
  TORCH_ARG(double, upcycle_noise) = 0.0;
  /// Seeds the parameters a checkpoint does not provide (routers, a missing classifier) and the
  /// upcycling noise, so every rank builds the same replicated weights and the same experts.
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(GroupedGemm, gemm) = GroupedGemm::kAuto;
};

/// Word + position + token-type embeddings, then LayerNorm (dropout: identity in eval).
class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& c);
  /// input_ids, token_type_ids [B, S] int64 -> [B, S, H]; positions are 0..S-1.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(BertEmbeddings);

/// Bidirectional self-attention with its output projection and post-LayerNorm:
/// LayerNorm(dense(attention(x)) + x).
class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const BertConfig& c);
  /// x [B, S, H]; mask additive [B, 1, 1, S] in x's dtype (padding keys at the dtype's minimum).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, dense{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(BertAttention);

/// One post-norm encoder layer: attention, then LayerNorm(ffn(x) + x) where ffn is an MoE block
/// of GELU experts or (dense layers) a bank of one GELU MLP (intermediate.dense + output.dense).
class BertLayerImpl : public torch::nn::Module {
 public:
  BertLayerImpl(const BertMoeOptions& options, int64_t index);
  BertAttention attention{nullptr};
  MoeBlock moe{nullptr};    ///< MoE layers
  ExpertBank mlp{nullptr};  ///< dense layers
  torch::nn::LayerNorm output_norm{nullptr};
};
TORCH_MODULE(BertLayer);

/// What a forward returns: the encoder's outputs, each MoE layer's routing and load, and the
/// summed router losses (aux and z, already weighted by their coefficients).
struct BertMoeOutput {
  torch::Tensor last_hidden_state;  ///< [B, S, H]
  torch::Tensor pooled;             ///< [B, H] tanh(dense(first token))
  torch::Tensor logits;             ///< [B, num_labels] (sequence classification only)
  torch::Tensor router_loss;
  std::vector<MoeOutput> moe;  ///< one per MoE layer, in layer order (hidden states dropped)
};

///   usage: BertMoeModel bert(BertMoeOptions(BertConfig::from_file(dir + "/config.json"),
///                                           groups).num_experts(8));
///          load_hf_weights(*bert, SafetensorsCheckpoint(dir));  // upcycles the FFNs
///          auto out = bert->forward(input_ids, attention_mask, token_type_ids);
class BertMoeModelImpl : public torch::nn::Module {
 public:
  explicit BertMoeModelImpl(BertMoeOptions options);

  /// input_ids [B, S] int64; attention_mask [B, S] (1 keep, 0 padding) and token_type_ids [B, S]
  /// may be undefined (no padding, all type 0). Collective over EP when there are MoE layers.
  BertMoeOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const torch::Tensor& token_type_ids = {});

  const BertMoeOptions& options() const { return options_; }
  const std::vector<BertLayer>& layers() const { return layers_; }

  BertEmbeddings embeddings{nullptr};
  torch::nn::Linear pooler{nullptr};

 private:
  BertMoeOptions options_;
  torch::nn::ModuleList layer_list_;
  std::vector<BertLayer> layers_;
};
TORCH_MODULE(BertMoeModel);

/// BertMoeModel, then the classifier on the pooled output (dropout: identity in eval).
///   usage: BertMoeForSequenceClassification model(options);
///          load_hf_weights(*model, SafetensorsCheckpoint(dir));
///          torch::Tensor logits = model->forward(ids, mask, types).logits;
class BertMoeForSequenceClassificationImpl : public torch::nn::Module {
 public:
  explicit BertMoeForSequenceClassificationImpl(BertMoeOptions options);
  BertMoeOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const torch::Tensor& token_type_ids = {});
  const BertMoeOptions& options() const { return bert->options(); }

  BertMoeModel bert{nullptr};
  torch::nn::Linear classifier{nullptr};
};
TORCH_MODULE(BertMoeForSequenceClassification);

/// Which optional parts a checkpoint provided (the rest keep their seeded initialisation).
struct BertLoadReport {
  bool pooler = false;
  bool classifier = false;
};

/// Copies a Hugging Face BERT checkpoint into the model. Names with or without the "bert."
/// prefix, LayerNorm weight/bias or the legacy gamma/beta; pooler and classifier optional. The
/// dense FFN of an MoE layer initialises each of this rank's experts (upcycling, see
/// BertMoeOptions::upcycle_noise). Throws Error naming the checkpoint and the missing or
/// mis-shaped tensor.
BertLoadReport load_hf_weights(BertMoeModelImpl& model, const SafetensorsCheckpoint& ckpt);
BertLoadReport load_hf_weights(BertMoeForSequenceClassificationImpl& model,
                               const SafetensorsCheckpoint& ckpt);

/// Sets every local expert of `moe` from one dense GELU FFN (weights as ExpertBank::Weights:
/// w_in [I, H], b_in [I], w_out [H, I], b_out [H]). Global expert e gets noise drawn from a
/// generator seeded by (seed, e), so the experts do not depend on how EP shards them.
void upcycle_experts(MoeBlockImpl& moe, const ExpertBankImpl::Weights& dense, double noise,
                     uint64_t seed);

}  // namespace switchyard
