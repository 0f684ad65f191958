// libFuzzer target: token files (data/token_file.h). Oracles, per input:
//  1. the bytes as a whole file: read_token_file throws switchyard::Error, or gives documents
//     whose offsets run from 0 to the token count without decreasing and whose ids (and eos)
//     are below the vocab size; writing them and reading back gives the same documents.
//  2. the bytes as documents (vocab size, eos, then lengths and ids): TokenFileWriter refuses an
//     id not below the vocab size with Error, otherwise read(write(docs)) == docs.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "data/token_file.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

namespace {

void check_valid(const TokenDocuments& d) {
  const auto offsets = d.offsets();
  FUZZ_CHECK(!offsets.empty() && offsets.front() == 0);
  FUZZ_CHECK(offsets.back() == uint64_t(d.num_tokens()));
  for (size_t i = 0; i + 1 < offsets.size(); ++i) FUZZ_CHECK(offsets[i] <= offsets[i + 1]);
  for (uint32_t id : d.tokens()) FUZZ_CHECK(id < d.vocab_size());
  FUZZ_CHECK(!d.eos_id() || *d.eos_id() < d.vocab_size());
}

bool same(const TokenDocuments& a, const TokenDocuments& b) {
  if (a.size() != b.size() || a.vocab_size() != b.vocab_size() || a.eos_id() != b.eos_id())
    return false;
  for (int64_t i = 0; i < a.size(); ++i) {
    const auto x = a.document(i), y = b.document(i);
    if (!std::equal(x.begin(), x.end(), y.begin(), y.end())) return false;
  }
  return true;
}

void round_trip(const TokenDocuments& docs) {
  const std::string path = fuzz::scratch_path("round_trip.tok");
  write_token_file(path, docs);
  const TokenDocuments back = read_token_file(path);
  check_valid(back);
  FUZZ_CHECK(same(docs, back));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = fuzz::scratch_path("input.tok");
  fuzz::write_bytes(file, data, size);
  try {
    const TokenDocuments docs = read_token_file(file);
    check_valid(docs);
    round_trip(docs);
  } catch (const Error&) {
  }

  FuzzedDataProvider in(data, size);
  const uint32_t vocab = in.ConsumeIntegralInRange<uint32_t>(1, 1000);
  const uint32_t eos = in.ConsumeIntegralInRange<uint32_t>(0, 1000);
  std::vector<std::vector<uint32_t>> docs;
  bool ids_ok = true;
  while (in.remaining_bytes() > 0 && docs.size() < 64) {
    auto& doc = docs.emplace_back(in.ConsumeIntegralInRange<size_t>(0, 16));
    for (auto& id : doc) {
      id = in.ConsumeIntegralInRange<uint32_t>(0, 1024);
      ids_ok &= id < vocab;
    }
  }
  const std::optional<uint32_t> eos_id = eos < vocab ? std::optional<uint32_t>(eos) : std::nullopt;
  const std::string path = fuzz::scratch_path("written.tok");
  try {
    TokenFileWriter w(path, vocab, eos_id);
    for (const auto& doc : docs) w.add(doc);
    w.finish();
    FUZZ_CHECK(ids_ok, "an id >= vocab %u was written\n", vocab);
  } catch (const Error&) {
    FUZZ_CHECK(!ids_ok, "valid documents were refused\n");
    return 0;
  }
  const TokenDocuments back = read_token_file(path);
  check_valid(back);
  FUZZ_CHECK(same(back, TokenDocuments::from_vectors(docs, vocab, eos_id)));
  return 0;
}
