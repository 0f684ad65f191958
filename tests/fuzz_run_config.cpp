// libFuzzer target: .pbtxt run configs with `--set` overrides (configs/run_config.h). The input
// is the config text, then NUL-separated override strings. Oracles:
//  - build_run_config(file, overrides) throws switchyard::Error (ConfigError for bad input), or
//    gives a config that validate_run_config accepts;
//  - parse_run_config then apply_override throw Error, or give a config x with
//    parse(to_text(x)) == x (NaN fields compare through their text, "nan" either way).
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.h"
#include "configs/run_config.h"
#include "tests/fuzz/fuzz_support.h"

using namespace switchyard;

namespace {

void check_round_trip(const RunConfig& x) {
  const std::string text = to_text(x);
  RunConfig y;
  try {
    y = parse_run_config(text, "to_text");
  } catch (const Error& e) {
    FUZZ_CHECK(false, "to_text output refused: %s\n%s\n", e.what(), text.c_str());
  }
  const bool equal = google::protobuf::util::MessageDifferencer::Equals(x, y);
  FUZZ_CHECK(equal || (to_text(y) == text && text.find("nan") != std::string::npos),
             "parse(to_text(x)) != x:\n%s\n---\n%s\n", text.c_str(), to_text(y).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string text(input.substr(0, nul));
  std::vector<std::string> overrides;
  for (size_t at = nul; at != input.npos && overrides.size() < 8;) {
    const size_t next = input.find('\0', at + 1);
    overrides.emplace_back(input.substr(at + 1, next == input.npos ? next : next - at - 1));
    at = next;
  }

  const std::string path = fuzz::scratch_path("run.pbtxt");
  fuzz::write_bytes(path, text.data(), text.size());
  try {
    const RunConfig built = build_run_config(path, overrides);
    try {
      validate_run_config(built);
    } catch (const Error& e) {
      FUZZ_CHECK(false, "build_run_config returned an invalid config: %s\n", e.what());
    }
  } catch (const Error&) {
  }

  RunConfig x;
  try {
    x = parse_run_config(text, "fuzz.pbtxt");
    for (const auto& o : overrides) apply_override(x, o);
  } catch (const Error&) {
    return 0;
  }
  check_round_trip(x);
  return 0;
}
