// libFuzzer target: GPTQ unpacking (models/gptq.h). The input chooses a layer shape, group size,
// checkpoint format, codes, zeros and scales; the target packs them as gptq.h documents (its own
// scalar packer), sometimes with a wrong shape, dtype, g_idx or missing tensor, writes a
// safetensors file and calls read_gptq_linear. Oracle: a layout that breaks the format is
// refused with switchyard::Error; a valid one unpacks to exactly the codes, zeros and scales
// packed (pack -> unpack round trip), and dequantize() gives [out, in] = scale * (code - zero).
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/errors.h"
#include "models/gptq.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

namespace {

// What happens to one stored tensor, drawn before the values: an input that runs out of bytes
// reads zeros, which leave the layout intact.
struct Fate {
  enum Kind { kIntact, kShape, kDtype, kMissing } kind = kIntact;
  size_t dim = 0;     // kShape: the dimension changed (== rank: one added)
  int64_t value = 0;  // kShape: its new size
};

Fate draw_fate(FuzzedDataProvider& in) {
  const uint8_t r = in.ConsumeIntegral<uint8_t>();
  Fate f;
  if (r >= 232) f.kind = Fate::kShape;  // about one in ten of each
  if (r >= 240) f.kind = Fate::kDtype;
  if (r >= 248) f.kind = Fate::kMissing;
  f.dim = r % 3;
  f.value = (r / 3) % 10;
  return f;
}

bool equal_floats(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != torch::kFloat ||
      b.scalar_type() != torch::kFloat)
    return false;
  const auto x = a.contiguous(), y = b.contiguous();
  const float *p = x.data_ptr<float>(), *q = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!(p[i] == q[i] || (std::isnan(p[i]) && std::isnan(q[i])))) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  GptqConfig cfg;
  cfg.group_size = 8 * in.ConsumeIntegralInRange<int64_t>(1, 4);
  cfg.zeros_minus_one = in.ConsumeBool();
  const int64_t out = 8 * in.ConsumeIntegralInRange<int64_t>(1, 3);
  const int64_t in_features = cfg.group_size * in.ConsumeIntegralInRange<int64_t>(1, 3);
  const int64_t groups = in_features / cfg.group_size;
  // Sometimes the caller's shape is not one GPTQ can store: refused before any tensor is read.
  const int64_t asked_in = in.ConsumeIntegral<uint8_t>() >= 240 ? in_features + 4 : in_features;
  bool ok = asked_in == in_features;
  const Fate fates[3] = {draw_fate(in), draw_fate(in), draw_fate(in)};
  const uint8_t g_idx_fate = in.ConsumeIntegral<uint8_t>();  // >= 128: stored, >= 224: act-order

  // The values packed: codes [out, in], stored zeros [groups, out], fp16 scales [groups, out].
  auto codes = torch::empty({out, in_features}, torch::kByte);
  auto zeros = torch::empty({groups, out}, torch::kByte);
  auto scales = torch::empty({groups, out}, torch::kShort);
  uint8_t* code = codes.data_ptr<uint8_t>();
  uint8_t* zero_stored = zeros.data_ptr<uint8_t>();
  for (int64_t i = 0; i < codes.numel(); ++i) code[i] = in.ConsumeIntegral<uint8_t>() & 0xF;
  for (int64_t i = 0; i < zeros.numel(); ++i) zero_stored[i] = in.ConsumeIntegral<uint8_t>() & 0xF;
  for (int64_t i = 0; i < scales.numel(); ++i)
    scales.data_ptr<int16_t>()[i] = in.ConsumeIntegral<int16_t>();
  scales = scales.view(torch::kHalf);

  // The packer, as gptq.h documents the layout: nibble j (least significant first) of
  // qweight[r, o] is code[o, 8r + j], of qzeros[g, c] the stored zero of output 8c + j.
  auto qweight = torch::empty({in_features / 8, out}, torch::kInt);
  auto qzeros = torch::empty({groups, out / 8}, torch::kInt);
  for (int64_t r = 0; r < in_features / 8; ++r)
    for (int64_t o = 0; o < out; ++o) {
      uint32_t word = 0;
      for (int j = 0; j < 8; ++j) word |= uint32_t(code[o * in_features + 8 * r + j]) << (4 * j);
      qweight.data_ptr<int32_t>()[r * out + o] = int32_t(word);
    }
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t c = 0; c < out / 8; ++c) {
      uint32_t word = 0;
      for (int j = 0; j < 8; ++j) word |= uint32_t(zero_stored[g * out + 8 * c + j]) << (4 * j);
      qzeros.data_ptr<int32_t>()[g * (out / 8) + c] = int32_t(word);
    }

  // The layout, with its drawn damage: a changed shape, a wrong dtype, a missing tensor, an
  // act-order g_idx.
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  const std::string prefix = "layer.";
  auto add = [&](const std::string& name, torch::Tensor t, const Fate& fate) {
    if (fate.kind == Fate::kMissing) {
      ok = false;
      return;
    }
    if (fate.kind == Fate::kDtype) {
      t = t.to(torch::kFloat);
      ok = false;
    }
    if (fate.kind == Fate::kShape) {
      auto shape = t.sizes().vec();
      if (fate.dim == shape.size())
        shape.push_back(1);
      else
        shape[fate.dim] = fate.value;
      if (shape != t.sizes().vec()) {
        t = torch::zeros(shape, t.options());
        ok = false;
      }
    }
    tensors.emplace_back(prefix + name, t);
  };
  add("qweight", qweight, fates[0]);
  add("qzeros", qzeros, fates[1]);
  add("scales", scales, fates[2]);
  if (g_idx_fate >= 128) {
    auto g_idx =
        torch::arange(in_features, torch::kInt).div(cfg.group_size, "floor").to(torch::kInt);
    if (g_idx_fate >= 224 && groups > 1) {
      g_idx = g_idx.flip(0);  // act-order
      ok = false;
    }
    tensors.emplace_back(prefix + "g_idx", g_idx);
  }
  const std::string path = fuzz::scratch_path("gptq.safetensors");
  save_safetensors(path, tensors);
  const SafetensorsCheckpoint ckpt(path);

  Int4Codes got;
  try {
    got = read_gptq_linear(ckpt, prefix, cfg, out, asked_in);
  } catch (const Error& e) {
    FUZZ_CHECK(!ok, "a valid GPTQ layer was refused: %s\n", e.what());
    return 0;
  }
  FUZZ_CHECK(ok, "a broken GPTQ layer was accepted\n");
  const auto zero = zeros.to(torch::kInt) + (cfg.zeros_minus_one ? 1 : 0);
  FUZZ_CHECK(got.packed.scalar_type() == torch::kByte && torch::equal(got.codes(), codes));
  FUZZ_CHECK(got.zero.scalar_type() == torch::kByte &&
             torch::equal(got.zero.to(torch::kInt), zero.t()));
  FUZZ_CHECK(equal_floats(got.scale, scales.to(torch::kFloat).t()));
  const auto w = got.dequantize(torch::kFloat);
  const auto expected =
      (codes.to(torch::kFloat) - zero.t().to(torch::kFloat).repeat_interleave(cfg.group_size, 1)) *
      scales.to(torch::kFloat).t().repeat_interleave(cfg.group_size, 1);
  FUZZ_CHECK(w.sizes() == torch::IntArrayRef({out, in_features}) && equal_floats(w, expected));
  return 0;
}
