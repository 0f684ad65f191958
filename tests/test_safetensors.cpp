// safetensors I/O: files written by the pinned Python `safetensors` read here, files written here
// read there, sharded checkpoints, and every kind of corrupt file giving one clear error that
// names the file and the tensor — never a crash or an out-of-bounds read.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "models/safetensors.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

const std::vector<std::pair<std::string, torch::ScalarType>> kDtypes = {
    {"F64", torch::kDouble},    {"F32", torch::kFloat}, {"F16", torch::kHalf},
    {"BF16", torch::kBFloat16}, {"I64", torch::kLong},  {"I32", torch::kInt},
    {"I16", torch::kShort},     {"I8", torch::kChar},   {"U8", torch::kByte},
    {"BOOL", torch::kBool}};
const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {
    {"matrix", {3, 5}}, {"scalar", {}}, {"empty", {0, 4}}, {"cube", {2, 3, 4}}};

// Same values as scripts/safetensors_reference.py's expected().
torch::Tensor expected(torch::ScalarType t, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  auto v = torch::arange(n, torch::kDouble);
  if (t == torch::kBool) return v.remainder(3).eq(1).reshape(shape);
  if (c10::isFloatingType(t)) return (v * 0.5 - 3.0).to(t).reshape(shape);
  return v.remainder(100).sub(t == torch::kByte ? 0 : 50).to(t).reshape(shape);
}

std::vector<std::pair<std::string, torch::Tensor>> all_tensors() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [d, t] : kDtypes)
    for (const auto& [s, shape] : kShapes) out.emplace_back(d + "." + s, expected(t, shape));
  return out;
}

std::string ref_dir() {
  const char* d = std::getenv("SWITCHYARD_REF_DIR");
  return d ? std::string(d) + "/safetensors" : "";
}

fs::path temp_dir() {
  auto p =
      fs::temp_directory_path() / ("switchyard_st_" + std::to_string(::getpid()) + "_" +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::create_directories(p);
  return p;
}

// A file from raw parts: header length (as given), header text, data bytes.
std::string write_raw(const fs::path& p, uint64_t header_len, const std::string& header,
                      const std::string& data) {
  std::ofstream f(p, std::ios::binary);
  for (int i = 0; i < 8; ++i) f.put(char((header_len >> (8 * i)) & 0xff));
  f << header << data;
  return p.string();
}
std::string write_raw(const fs::path& p, const std::string& header, const std::string& data) {
  return write_raw(p, header.size(), header, data);
}

// Opening must throw an Error whose one-line message contains every part of `want`.
void expect_open_error(const std::string& path, const std::vector<std::string>& want) {
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& w : want) EXPECT_NE(msg.find(w), std::string::npos) << msg << " lacks " << w;
  }
}

}  // namespace

TEST(HfReference, SafetensorsWrittenByPythonReadHere) {
  if (ref_dir().empty()) GTEST_SKIP() << "SWITCHYARD_REF_DIR not set";
  auto f = SafetensorsFile::open(ref_dir() + "/dtypes.safetensors");
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  for (const auto& [name, want] : all_tensors()) {
    ASSERT_TRUE(f->contains(name)) << name;
    auto got = f->get(name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(got, want)) << name;
  }
  SafetensorsCheckpoint ckpt(ref_dir() + "/sharded");
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a.weight", "b.bias", "c.weight"}));
  EXPECT_TRUE(torch::equal(ckpt.get("a.weight"), expected(torch::kFloat, {4, 6})));
  EXPECT_TRUE(torch::equal(ckpt.get("b.bias"), expected(torch::kBFloat16, {7})));
  EXPECT_TRUE(torch::equal(ckpt.get("c.weight"), expected(torch::kHalf, {2, 2})));
  EXPECT_THROW(ckpt.get("d.weight"), Error);
}

TEST(HfReference, SafetensorsWrittenHereReadByPython) {
  const std::string py = SWITCHYARD_PYTHON;  // the venv's, compiled in (tests/CMakeLists.txt)
  const auto path = (temp_dir() / "ours.safetensors").string();
  save_safetensors(path, all_tensors(), {{"format", "pt"}, {"writer", "switchyard"}});
  const std::string cmd =
      py + " " + SWITCHYARD_SOURCE_DIR + "/scripts/safetensors_reference.py verify " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  fs::remove_all(fs::path(path).parent_path());
}

TEST(Safetensors, RoundTripIsZeroCopyAndCopyOnWrite) {
  const auto dir = temp_dir();
  const auto path = (dir / "t.safetensors").string();
  save_safetensors(path, all_tensors(), {{"k", "v"}});
  // Atomic write: only the target remains, no temporary file.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->header().metadata.at("k"), "v");
  for (const auto& [name, want] : all_tensors()) EXPECT_TRUE(torch::equal(f->get(name), want));
  auto t = f->get("F32.matrix");
  t.fill_(42);  // private mapping: the file does not change
  auto again = SafetensorsFile::open(path)->get("F32.matrix");
  EXPECT_TRUE(torch::equal(again, expected(torch::kFloat, {3, 5})));
  // A tensor outlives its file object.
  torch::Tensor kept;
  { kept = SafetensorsFile::open(path)->get("I64.cube"); }
  EXPECT_TRUE(torch::equal(kept, expected(torch::kLong, {2, 3, 4})));
  EXPECT_THROW(f->get("nope"), Error);
  EXPECT_THROW(save_safetensors(path, {{"a", torch::ones(2)}, {"a", torch::ones(2)}}), Error);
  EXPECT_THROW(save_safetensors((dir / "no/such/dir/x.safetensors").string(), all_tensors()),
               Error);
  fs::remove_all(dir);
}

TEST(Safetensors, CorruptFilesGiveOneLineNamingFileAndTensor) {
  const auto dir = temp_dir();
  auto p = [&](const char* n) { return dir / n; };
  const std::string f32_2x2 = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  const std::string data16(16, '\0');

  {
    std::ofstream(p("short")) << "abc";
    expect_open_error(p("short").string(), {"short", "truncated"});
  }
  expect_open_error(write_raw(p("beyond"), 1000, "{}", ""), {"beyond", "beyond the end"});
  expect_open_error(write_raw(p("huge"), uint64_t(200) << 20, "{}", ""), {"huge", "100 MB"});
  expect_open_error(write_raw(p("json"), "{\"w\": [", ""), {"json", "invalid JSON"});
  expect_open_error(write_raw(p("notobj"), "[1,2]", ""), {"notobj", "not a JSON object"});
  expect_open_error(write_raw(p("dup"), "{" + f32_2x2 + "," + f32_2x2 + "}", data16),
                    {"dup", "duplicate name 'w'"});
  expect_open_error(
      write_raw(p("range"), R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", "x"),
      {"range", "tensor 'w'", "out of range"});
  expect_open_error(
      write_raw(p("bytes"), R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", data16),
      {"bytes", "tensor 'w'", "need 24 bytes"});
  expect_open_error(write_raw(p("overlap"),
                              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              data16),
                    {"overlap", "tensor 'b' overlaps tensor 'a'"});
  expect_open_error(
      write_raw(p("dtype"), R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", data16),
      {"dtype", "tensor 'w'", "unknown dtype 'Q7'"});
  expect_open_error(
      write_raw(p("neg"), R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data16),
      {"neg", "tensor 'w'", "non-negative"});
  expect_open_error(write_raw(p("overflow"),
                              R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],)"
                              R"("data_offsets":[0,8]}})",
                              data16),
                    {"overflow", "tensor 'w'", "too many"});
  expect_open_error(write_raw(p("missing"), R"({"w":{"dtype":"F32","shape":[2]}})", data16),
                    {"missing", "tensor 'w'", "data_offsets"});
  expect_open_error(write_raw(p("deep"), std::string(50, '[') + std::string(50, ']'), ""),
                    {"deep"});
  expect_open_error(write_raw(p("meta"), R"({"__metadata__":{"a":1}})", ""),
                    {"meta", "__metadata__"});
  expect_open_error((dir / "absent").string(), {"absent", "cannot open"});
  // Every prefix of a valid file fails cleanly (or, at full length, loads).
  const auto good = (dir / "good.safetensors").string();
  save_safetensors(good, all_tensors());
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t n = 0; n < bytes.size(); n += 7) {
    std::ofstream(p("prefix"), std::ios::binary) << bytes.substr(0, n);
    EXPECT_THROW(SafetensorsFile::open(p("prefix").string()), Error) << n << " bytes";
  }
  fs::remove_all(dir);
}

TEST(Safetensors, CheckpointFolderErrors) {
  const auto dir = temp_dir();
  EXPECT_THROW(SafetensorsCheckpoint((dir / "none").string()), Error);
  EXPECT_THROW(SafetensorsCheckpoint(dir.string()), Error);  // empty folder
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "missing.safetensors", "b": "../escape.safetensors"}})";
  EXPECT_THROW(SafetensorsCheckpoint(dir.string()), Error);
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "missing.safetensors"}})";
  SafetensorsCheckpoint ckpt(dir.string());
  try {
    ckpt.get("a");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}
