// GPTQ unpacking. Codes are 4-bit nibbles packed eight to an int32, least significant first:
// along the input dimension in qweight, along the output dimension in qzeros.
#include "models/gptq.h"

#include <bit>
#include <nlohmann/json.hpp>

#include "common/errors.h"

namespace switchyard {
namespace {

// [rows, cols] int32 -> [rows, cols, 8] nibbles (values 0..15), least significant first.
torch::Tensor unpack_nibbles(const torch::Tensor& packed) {
  auto shifts = torch::arange(0, 32, 4, torch::kInt);
  // An arithmetic shift of a negative int32 fills with ones; the mask drops them.
  return packed.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and(0xF).to(torch::kByte);
}

struct TensorReader {
  const SafetensorsCheckpoint& ckpt;
  const std::string& prefix;

  torch::Tensor get(const std::string& part, torch::ScalarType dtype,
                    std::vector<int64_t> shape) const {
    const std::string name = prefix + part;
    if (!ckpt.contains(name))
      throw Error(detail::concat(ckpt.path(), ": GPTQ tensor '", name, "' is missing"));
    auto t = ckpt.get(name);
    if (t.scalar_type() != dtype || t.sizes() != shape)
      throw Error(detail::concat(ckpt.path(), ": GPTQ tensor '", name, "' is ", t.scalar_type(),
                                 " ", t.sizes(), ", expected ", dtype, " ",
                                 torch::IntArrayRef(shape)));
    return t;
  }
};

}  // namespace

std::optional<GptqConfig> GptqConfig::from_hf_config(const nlohmann::json& config,
                                                     const std::string& where) {
  if (!config.contains("quantization_config") || config["quantization_config"].is_null())
    return std::nullopt;
  const auto& q = config["quantization_config"];
  auto fail = [&](const std::string& key, const std::string& what) -> Error {
    return Error(where + ": quantization_config." + key + ": " + what);
  };
  if (!q.is_object()) throw fail("", "must be an object");
  // Typed reads: a field of another type is one clear error, not a JSON type_error.
  auto flag = [&](const char* key, bool absent) {
    if (!q.contains(key) || q[key].is_null()) return absent;
    if (!q[key].is_boolean()) throw fail(key, "must be true or false, got " + q[key].dump());
    return q[key].get<bool>();
  };
  auto text = [&](const char* key, const std::string& absent) {
    if (!q.contains(key) || q[key].is_null()) return absent;
    if (!q[key].is_string()) throw fail(key, "must be a string, got " + q[key].dump());
    return q[key].get<std::string>();
  };
  const std::string method = text("quant_method", "gptq");
  if (method != "gptq") throw fail("quant_method", "'" + method + "' is not supported (only gptq)");
  GptqConfig c;
  if (q.contains("bits")) {
    if (!q["bits"].is_number_integer()) throw fail("bits", "must be an integer");
    c.bits = q["bits"].get<int64_t>();
  }
  if (c.bits != 4) throw fail("bits", detail::concat(c.bits, " bits: only 4-bit GPTQ is loaded"));
  if (q.contains("group_size")) {
    if (!q["group_size"].is_number_integer()) throw fail("group_size", "must be an integer");
    c.group_size = q["group_size"].get<int64_t>();
  }
  // -1 (one group per row) would need the input width here; hub checkpoints use 32..128.
  if (c.group_size <= 0 || c.group_size % 8 != 0)
    throw fail("group_size", detail::concat(c.group_size, ": a positive multiple of 8 is needed"));
  if (flag("desc_act", false))
    throw fail("desc_act", "act-order checkpoints (desc_act: true) are not supported");
  c.sym = flag("sym", true);
  const std::string format = text("checkpoint_format", "gptq");
  if (format != "gptq" && format != "gptq_v2")
    throw fail("checkpoint_format", "'" + format + "': expected gptq or gptq_v2");
  c.zeros_minus_one = format == "gptq";
  return c;
}

Int4Codes read_gptq_linear(const SafetensorsCheckpoint& ckpt, const std::string& prefix,
                           const GptqConfig& config, int64_t out, int64_t in) {
  const int64_t g = config.group_size;
  if (in % g != 0 || in % 8 != 0 || out % 8 != 0)
    throw Error(detail::concat(ckpt.path(), ": GPTQ layer '", prefix, "' is [", out, ", ", in,
                               "]: in must be a multiple of the group size ", g,
                               " and of 8, out a multiple of 8"));
  const int64_t groups = in / g;
  const TensorReader r{ckpt, prefix};
  auto qweight = r.get("qweight", torch::kInt, {in / 8, out});
  auto qzeros = r.get("qzeros", torch::kInt, {groups, out / 8});
  auto scales = r.get("scales", torch::kHalf, {groups, out});
  if (ckpt.contains(prefix + "g_idx")) {
    auto g_idx = ckpt.get(prefix + "g_idx");
    auto expected = torch::arange(in, torch::kLong).div(g, "floor");
    if (g_idx.sizes() != torch::IntArrayRef{in} || !torch::equal(g_idx.to(torch::kLong), expected))
      throw Error(detail::concat(ckpt.path(), ": GPTQ tensor '", prefix,
                                 "g_idx' is not input column / group_size (act-order layouts "
                                 "are not supported)"));
  }
  Int4Codes c;
  // Why no unpacking: nibble j of word (r, o) is input 8r + j, least significant first, so on a
  // little-endian host byte b of that word holds inputs 8r + 2b (low) and 8r + 2b + 1 (high):
  // QuantizedWeight's layout already. Transposing the words to [out, in/8] is the whole repack;
  // the round trip through a byte per code (int32 shifts, a byte transpose, repacking) took
  // about two thirds of `switchyard train`'s start on the full-size checkpoint that
  // scripts/random_gptq_checkpoint.py writes (2 cores, 2026-12-07).
  static_assert(std::endian::native == std::endian::little, "GPTQ words are read little-endian");
  // [out, in/8] int32 -> [out, in/2] bytes. Into a fresh tensor: contiguous() leaves an empty
  // transpose's strides as they are, which view() refuses (found by fuzz_gptq).
  c.packed = torch::empty({out, in / 8}, torch::kInt).copy_(qweight.t()).view(torch::kByte);
  auto zeros =
      unpack_nibbles(qzeros).reshape({groups, out});  // [groups, out/8, 8] -> [groups, out]
  if (config.zeros_minus_one) zeros = zeros + 1;      // uint8: 15 + 1 = 16 stays exact
  c.zero = zeros.t().contiguous();
  c.scale = scales.to(torch::kFloat).t().contiguous();
  return c;
}

}  // namespace switchyard
