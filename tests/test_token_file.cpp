// Token files: round trips through the writer and the memory-mapped reader, and one clear line
// for each way a file can be wrong.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "common/errors.h"
#include "data/token_file.h"

using namespace switchyard;
namespace fs = std::filesystem;

namespace {

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("sy_tok_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::vector<uint32_t>> documents(const TokenDocuments& docs) {
  std::vector<std::vector<uint32_t>> out;
  for (int64_t d = 0; d < docs.size(); ++d) {
    const auto doc = docs.document(d);
    out.emplace_back(doc.begin(), doc.end());
  }
  return out;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

template <typename T>
void poke(std::string& bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

}  // namespace

TEST(TokenFile, RoundTripsDocumentsIncludingEmptyOnes) {
  const std::vector<std::vector<uint32_t>> docs = {{5, 6, 7}, {}, {9}, {1, 2, 3, 4, 8}};
  for (size_t n : {size_t(0), size_t(1), size_t(2), docs.size()}) {  // odd and even token counts
    const std::vector<std::vector<uint32_t>> part(docs.begin(), docs.begin() + std::ptrdiff_t(n));
    const fs::path path = temp_file("round" + std::to_string(n) + ".tok");
    write_token_file(path.string(), TokenDocuments::from_vectors(part, 10, 0));
    EXPECT_FALSE(fs::exists(path.string() + ".partial"));
    const TokenDocuments back = read_token_file(path.string());
    EXPECT_EQ(documents(back), part);
    EXPECT_EQ(back.vocab_size(), 10u);
    EXPECT_EQ(back.eos_id(), std::optional<uint32_t>(0));
    EXPECT_EQ(fs::file_size(path) % 8, 0u);
    fs::remove(path);
  }
}

TEST(TokenFile, StreamingWriterAndNoEos) {
  const fs::path path = temp_file("stream.tok");
  {
    TokenFileWriter w(path.string(), 100, std::nullopt);
    w.add(std::vector<uint32_t>{1, 2});
    w.add(std::vector<uint32_t>{99});
    EXPECT_EQ(w.documents(), 2);
    EXPECT_EQ(w.tokens(), 3);
    EXPECT_TRUE(fs::exists(path.string() + ".partial"));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_THROW(w.add(std::vector<uint32_t>{100}), Error);
    w.finish();
  }
  const auto back = read_token_file(path.string());
  EXPECT_EQ(documents(back), (std::vector<std::vector<uint32_t>>{{1, 2}, {99}}));
  EXPECT_EQ(back.eos_id(), std::nullopt);
  {
    TokenFileWriter abandoned((path.string() + "2"), 100, 1);
    abandoned.add(std::vector<uint32_t>{1});
  }  // never finished: no file, no partial left behind
  EXPECT_FALSE(fs::exists(path.string() + "2"));
  EXPECT_FALSE(fs::exists(path.string() + "2.partial"));
  EXPECT_THROW(TokenFileWriter(path.string(), 10, 10), ConfigError);
  fs::remove(path);
}

TEST(TokenFile, CorruptFilesAreRefusedWithOneLine) {
  const fs::path good = temp_file("good.tok"), bad = temp_file("bad.tok");
  // 3 documents, 5 tokens (odd: 4 bytes of padding before the offsets), vocab 10, eos 0.
  write_token_file(good.string(), TokenDocuments::from_vectors({{1, 2}, {3}, {4, 5}}, 10, 0));
  const std::string bytes = read_bytes(good);
  ASSERT_EQ(bytes.size(), 64u + 20 + 4 + 32);
  auto error = [&](const std::function<void(std::string&)>& corrupt) {
    std::string b = bytes;
    corrupt(b);
    write_bytes(bad, b);
    try {
      read_token_file(bad.string());
    } catch (const ConfigError& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
      EXPECT_EQ(message.rfind(bad.string() + ": ", 0), 0u) << message;
      return message;
    }
    return std::string("(accepted)");
  };
  auto has = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos;
  };
  EXPECT_EQ(error([](std::string&) {}), "(accepted)");
  EXPECT_TRUE(has(error([](std::string& b) { b.resize(10); }), "shorter than the 64-byte header"));
  EXPECT_TRUE(has(error([](std::string& b) { b.clear(); }), "0 bytes"));
  EXPECT_TRUE(has(error([](std::string& b) { b[0] = 'X'; }), "no SYTOKENS magic"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint32_t>(b, 8, 2); }),
                  "version 2, this build reads version 1"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint32_t>(b, 12, 128); }), "header size 128"));
  EXPECT_TRUE(has(error([](std::string& b) { b.resize(b.size() - 8); }), "(truncated)"));
  EXPECT_TRUE(has(error([](std::string& b) { b += "extra!!!"; }), "make 120"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint64_t>(b, 24, 7); }), "7 tokens"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint64_t>(b, 24, ~uint64_t(0) / 2); }),
                  "more than 120 bytes hold"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint32_t>(b, 32, 0); }), "vocab size 0"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint32_t>(b, 36, 10); }),
                  "eos id 10 not below vocab size 10"));
  EXPECT_TRUE(has(error([](std::string& b) { poke<uint32_t>(b, 64 + 8, 10); }),
                  "token 2 is id 10, not below vocab size 10"));
  EXPECT_TRUE(
      has(error([](std::string& b) { poke<uint64_t>(b, 88, 1); }), "offsets run from 1 to 5"));
  EXPECT_TRUE(
      has(error([](std::string& b) { poke<uint64_t>(b, 88 + 24, 4); }), "offsets run from 0 to 4"));
  EXPECT_TRUE(has(error([](std::string& b) {
                    poke<uint64_t>(b, 88 + 8, 4);
                    poke<uint64_t>(b, 88 + 16, 3);
                  }),
                  "document 1 ends at 3 before it starts (4)"));
  // Without the id check, ids are not read on open.
  std::string b = bytes;
  poke<uint32_t>(b, 64, 77);
  write_bytes(bad, b);
  EXPECT_EQ(read_token_file(bad.string(), {.check_ids = false}).document(0)[0], 77u);
  EXPECT_THROW(read_token_file(temp_file("missing.tok").string()), ConfigError);
  fs::remove(good);
  fs::remove(bad);
}
