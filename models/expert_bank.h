// A rank's local experts, stored stacked ([experts, out, in]) and run on contiguous per-expert
// row slices: SwiGLU experts (Qwen) or GELU MLP experts with biases (BERT).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "models/weight_quant.h"

namespace switchyard {

enum class ExpertKind {
  kSwiGlu,   ///< down(silu(gate(x)) * up(x)), no biases (Qwen2-MoE)
  kGeluMlp,  ///< out(gelu(in(x) + b_in)) + b_out, exact-erf GELU (BERT)
};

/// How an expert bank multiplies its slices.
enum class GroupedGemm {
  kAuto,       ///< grouped GEMM (at::_grouped_mm) for bf16 on CUDA (quantized banks too: each
               ///< GEMM dequantises the bank in one kernel) and for fp32 banks on the CPU, and
               ///< bf16 ones where its bf16 GEMMs are torch's own (models/cpu_linear.h),
               ///< where it takes the shapes (below); slice loop elsewhere
  kSliceLoop,  ///< one matmul per expert on its contiguous slice
  kGroupedMm,  ///< at::_grouped_mm everywhere (tests use it on CPU); shapes it does not take
               ///< are a one-line error. It takes rows that start on 16-byte boundaries: the
               ///< hidden and intermediate widths a multiple of 16 bytes (8 bf16, 4 fp32)
};

struct ExpertBankOptions {
  ExpertBankOptions(int64_t hidden_size, int64_t intermediate_size, int64_t num_experts)
      : hidden_size_(hidden_size),
        intermediate_size_(intermediate_size),
        num_experts_(num_experts) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, intermediate_size);
  TORCH_ARG(int64_t, num_experts);  ///< experts held here (the local slots under EP)
  TORCH_ARG(ExpertKind, kind) = ExpertKind::kSwiGlu;
  TORCH_ARG(GroupedGemm, gemm) = GroupedGemm::kAuto;
  /// Quantized from the start (frozen; codes initialised expert by expert).
  TORCH_ARG(QuantOptions, quant);
};

/// While one is alive on this thread, expert banks are built without their random
/// initialisation (float weights left as allocated, codes zero), for loaders that set every slot
/// next (load_model). Initialising a quantized bank quantizes random weights expert by expert,
/// 1,440 experts for the full-size int4 model at EP 1, all of them overwritten by the checkpoint.
///   usage: { SkipExpertInit skip; model = build(...); } load_hf_weights(*model, ckpt);
class SkipExpertInit {
 public:
  SkipExpertInit();
  ~SkipExpertInit();
  SkipExpertInit(const SkipExpertInit&) = delete;
  SkipExpertInit& operator=(const SkipExpertInit&) = delete;

 private:
  bool saved_;
};

/// Parameters (HF transformers v5 fused layout for SwiGLU):
///   w_in  [E, 2I, H] (SwiGLU: gate rows then up rows) or [E, I, H] (GELU), b_in [E, I] (GELU)
///   w_out [E, H, I], b_out [E, H] (GELU)
///   usage: ExpertBank experts(ExpertBankOptions(2048, 1408, 15));
///          auto y = experts->forward(tokens.hidden, tokens.tokens_per_expert);
class ExpertBankImpl : public torch::nn::Module {
 public:
  explicit ExpertBankImpl(ExpertBankOptions options);
  void reset_parameters();

  /// x [R, H], rows grouped by expert with tokens_per_expert[e] rows for local expert e -> [R, H].
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& tokens_per_expert);

  /// One expert's weights as views of the stacked parameters (b_in/b_out undefined for SwiGLU).
  struct Weights {
    torch::Tensor w_in, b_in, w_out, b_out;
  };
  /// All local experts' views from one unbind per parameter. Indexing w_in[e] per expert instead
  /// would give each expert a full-size [E, ...] gradient in backward: E times the memory traffic.
  /// In a quantized bank w_in/w_out stay undefined here; forward_expert dequantises them.
  std::vector<Weights> per_expert() const;

  /// Expert e (local index) on all rows of x; `w` is per_expert()[e].
  torch::Tensor forward_expert(int64_t e, const Weights& w, const torch::Tensor& x) const;
  /// Local expert e on all rows of x (the shared expert, a bank of one, uses this).
  torch::Tensor forward_one(int64_t e, const torch::Tensor& x) const {
    return forward_expert(e, per_expert().at(size_t(e)), x);
  }

  /// Freezes the bank and replaces w_in/w_out by quantized codes (buffers), dequantised in
  /// forward and again in backward: one expert at a time on the slice loop, the whole bank for a
  /// grouped GEMM. Gradients still flow to the input (router fine-tuning).
  void quantize_(const QuantOptions& options);
  bool quantized() const { return quant_in_ != nullptr; }
  const QuantizedWeight* quantized_in() const { return quant_in_.get(); }
  const QuantizedWeight* quantized_out() const { return quant_out_.get(); }

  /// Sets local expert e from full-precision weights w_in_e [2I or I, H] and w_out_e [H, I]
  /// (quantizing them when the bank is quantized). Loaders use this, one expert at a time.
  void load_expert(int64_t e, const torch::Tensor& w_in_e, const torch::Tensor& w_out_e) {
    load_expert(e, std::vector<torch::Tensor>{w_in_e}, w_out_e);
  }
  /// The same with w_in_e given as row blocks, stacked in order (a SwiGLU checkpoint's gate_proj
  /// then up_proj): a full-precision bank copies each straight into its slot, with no
  /// concatenated [2I, H] temporary per expert.
  void load_expert(int64_t e, const std::vector<torch::Tensor>& w_in_rows,
                   const torch::Tensor& w_out_e);
  /// Sets local expert e from 4-bit codes as they are (GPTQ checkpoints): the bank must be int4
  /// with zero points in the codes' group size. w_in_e holds gate rows then up rows for SwiGLU.
  void load_expert_codes(int64_t e, const Int4Codes& w_in_e, const Int4Codes& w_out_e);
  /// Sets local expert e's biases b_in_e [I] and b_out_e [H] (GELU banks only; never quantized).
  void load_expert_biases(int64_t e, const torch::Tensor& b_in_e, const torch::Tensor& b_out_e);
  /// Local expert e's full-precision weights {w_in [2I or I, H], w_out [H, I]} in `dtype`,
  /// dequantized when the bank is quantized (export, inspection).
  std::pair<torch::Tensor, torch::Tensor> expert_weights(int64_t e, torch::Dtype dtype) const;
  /// Bytes of the expert weights as stored (codes and scales when quantized).
  int64_t weight_bytes() const;
  /// Number of expert weights (and biases) this bank represents, quantized or not.
  int64_t num_logical_parameters() const;

  /// LibTorch's Module::to(dtype) converts every tensor, integer codes included; here only
  /// floating-point parameters change dtype (codes and their fp32 scales keep theirs).
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  using torch::nn::Module::to;

  const ExpertBankOptions& options() const { return options_; }

  torch::Tensor w_in, b_in, w_out, b_out;

 private:
  torch::Tensor activate(const torch::Tensor& h) const;
  torch::Tensor slice_loop(const torch::Tensor& x, const std::vector<int64_t>& counts);
  torch::Tensor grouped_mm(const torch::Tensor& x, const std::vector<int64_t>& counts);
  void adopt_quantized(QuantizedWeight in, QuantizedWeight out);

  ExpertBankOptions options_;
  std::shared_ptr<QuantizedWeight> quant_in_, quant_out_;
};
TORCH_MODULE(ExpertBank);

}  // namespace switchyard
