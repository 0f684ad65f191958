// CRC-32C against published vectors, and TensorBoard event files read back record by record:
// framing, checksums, the file_version event, scalars and histograms.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/crc32c.h"
#include "trainer/tensorboard_writer.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;

// RFC 3720 (iSCSI) appendix B.4, and the customary check value of "123456789".
TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending(32, 0), descending(32, 0);
  for (int i = 0; i < 32; ++i) ascending[i] = char(i), descending[i] = char(31 - i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(Crc32c, ContinuesAcrossChunks) {
  EXPECT_EQ(crc32c("56789", crc32c("1234")), crc32c("123456789"));
}

TEST(Crc32c, MaskedIsRotatedPlusDelta) {
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789"), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
}

uint64_t read_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | uint8_t(s[at + i]);
  return v;
}

// Every record of an events file, its checksums verified.
std::vector<tensorboard::Event> read_events(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<tensorboard::Event> events;
  size_t at = 0;
  while (at < bytes.size()) {
    EXPECT_LE(at + 12, bytes.size());
    const uint64_t length = read_le(bytes, at, 8);
    EXPECT_EQ(read_le(bytes, at + 8, 4), masked_crc32c(bytes.substr(at, 8)));
    const std::string data = bytes.substr(at + 12, length);
    EXPECT_EQ(read_le(bytes, at + 12 + length, 4), masked_crc32c(data));
    tensorboard::Event e;
    EXPECT_TRUE(e.ParseFromString(data));
    events.push_back(e);
    at += 12 + length + 4;
  }
  EXPECT_EQ(at, bytes.size());
  return events;
}

TEST(TensorBoardWriter, FramedEventsReadBack) {
  const fs::path dir = fs::temp_directory_path() / ("sy_tb_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string first_path;
  {
    TensorBoardWriter tb(dir.string());
    first_path = tb.path();
    EXPECT_EQ(fs::path(first_path).filename().string().rfind("events.out.tfevents.", 0), 0u);
    tb.scalar("train/loss", 2.5);
    tb.histogram("load/layer0/expert_tokens", {1, 2, 2, 10}, 3);
    tb.write_step(7);
    tb.scalar("train/loss", 2.25);
    tb.write_step(8);
  }
  const auto events = read_events(first_path);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_GT(events[0].wall_time(), 1.6e9);
  EXPECT_EQ(events[1].step(), 7);
  ASSERT_EQ(events[1].summary().value_size(), 2);
  EXPECT_EQ(events[1].summary().value(0).tag(), "train/loss");
  EXPECT_FLOAT_EQ(events[1].summary().value(0).simple_value(), 2.5f);
  const auto& h = events[1].summary().value(1).histo();
  EXPECT_EQ(h.min(), 1);
  EXPECT_EQ(h.max(), 10);
  EXPECT_EQ(h.num(), 4);
  EXPECT_EQ(h.sum(), 15);
  EXPECT_EQ(h.sum_squares(), 109);
  ASSERT_EQ(h.bucket_limit_size(), 3);  // (-inf, 4], (4, 7], (7, 10]
  EXPECT_EQ(h.bucket_limit(0), 4);
  EXPECT_EQ(h.bucket(0), 3);
  EXPECT_EQ(h.bucket(1), 0);
  EXPECT_EQ(h.bucket(2), 1);
  EXPECT_EQ(events[2].step(), 8);
  ASSERT_EQ(events[2].summary().value_size(), 1);  // values do not carry over between steps
  // A second writer in the same second gets a file of its own.
  TensorBoardWriter again(dir.string());
  EXPECT_NE(again.path(), first_path);
  EXPECT_EQ(read_events(again.path()).size(), 1u);
  fs::remove_all(dir);
}

TEST(TensorBoardWriter, EqualValuesMakeOneBucket) {
  const auto h = make_histogram({5, 5, 5}, 30);
  ASSERT_EQ(h.bucket_limit_size(), 1);
  EXPECT_EQ(h.bucket_limit(0), 5);
  EXPECT_EQ(h.bucket(0), 3);
}

}  // namespace
}  // namespace switchyard
