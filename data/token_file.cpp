// The reader checks the header against the file size before touching anything it describes,
// so a truncated or foreign file is one clear error and never an out-of-bounds read.
#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/errors.h"

namespace switchyard {

static_assert(std::endian::native == std::endian::little, "token files are little-endian");

namespace {

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t num_documents;
  uint64_t num_tokens;
  uint32_t vocab_size;
  uint32_t eos_id;
  char zero[24];
};
static_assert(sizeof(Header) == kTokenFileHeaderBytes);

uint64_t offsets_position(uint64_t num_tokens) {
  return (kTokenFileHeaderBytes + 4 * num_tokens + 7) / 8 * 8;
}

struct Mapping {
  void* data = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (data) munmap(data, bytes);
  }
};

}  // namespace

// ---- writer ----------------------------------------------------------------------------------

TokenFileWriter::TokenFileWriter(const std::string& path, uint32_t vocab_size,
                                 std::optional<uint32_t> eos_id)
    : path_(path), partial_(path + ".partial"), vocab_size_(vocab_size), eos_id_(eos_id) {
  if (vocab_size == 0 || vocab_size == kTokenFileNoEos)
    throw ConfigError(detail::concat(path, ": vocab size ", vocab_size, " cannot be stored"));
  if (eos_id && *eos_id >= vocab_size)
    throw ConfigError(
        detail::concat(path, ": eos id ", *eos_id, " not below vocab size ", vocab_size));
  file_ = std::fopen(partial_.c_str(), "wb");
  if (!file_) throw Error(partial_ + ": cannot create: " + std::strerror(errno));
  const Header placeholder{};
  write(&placeholder, sizeof placeholder);
}

TokenFileWriter::~TokenFileWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(partial_.c_str());
  }
}

void TokenFileWriter::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, file_) != bytes)
    throw Error(partial_ + ": write failed: " + std::strerror(errno));
}

void TokenFileWriter::add(std::span<const uint32_t> document) {
  SY_CHECK(file_, path_, ": add after finish");
  for (uint32_t id : document)
    if (id >= vocab_size_)
      throw Error(detail::concat(path_, ": document ", documents(), " has id ", id,
                                 ", not below vocab size ", vocab_size_));
  write(document.data(), document.size_bytes());
  offsets_.push_back(offsets_.back() + document.size());
}

void TokenFileWriter::finish() {
  SY_CHECK(file_, path_, ": finished twice");
  const uint64_t tokens = offsets_.back();
  const uint64_t padding = offsets_position(tokens) - (kTokenFileHeaderBytes + 4 * tokens);
  const uint32_t zero = 0;
  write(&zero, padding);
  write(offsets_.data(), offsets_.size() * sizeof(uint64_t));
  Header h{};
  std::memcpy(h.magic, kTokenFileMagic, sizeof h.magic);
  h.version = kTokenFileVersion;
  h.header_bytes = kTokenFileHeaderBytes;
  h.num_documents = offsets_.size() - 1;
  h.num_tokens = tokens;
  h.vocab_size = vocab_size_;
  h.eos_id = eos_id_ ? *eos_id_ : kTokenFileNoEos;
  if (std::fseek(file_, 0, SEEK_SET) != 0) throw Error(partial_ + ": seek failed");
  write(&h, sizeof h);
  const bool flushed = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    std::remove(partial_.c_str());
    throw Error(partial_ + ": flush failed: " + std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(partial_, path_, ec);
  if (ec) {
    std::remove(partial_.c_str());
    throw Error(path_ + ": rename failed: " + ec.message());
  }
}

void write_token_file(const std::string& path, const TokenDocuments& docs) {
  TokenFileWriter w(path, docs.vocab_size(), docs.eos_id());
  for (int64_t d = 0; d < docs.size(); ++d) w.add(docs.document(d));
  w.finish();
}

// ---- reader ----------------------------------------------------------------------------------

TokenDocuments read_token_file(const std::string& path, const TokenFileReadOptions& options) {
  auto bad = [&](const std::string& why) { return ConfigError(path + ": " + why); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw bad(std::string("cannot open token file: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw bad("not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < kTokenFileHeaderBytes) {
    ::close(fd);
    throw bad(detail::concat("not a token file: ", size, " bytes, shorter than the ",
                             kTokenFileHeaderBytes, "-byte header"));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->data = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (mapping->data == MAP_FAILED) {
    mapping->data = nullptr;
    throw bad(std::string("mmap failed: ") + std::strerror(errno));
  }
  mapping->bytes = size;
  const auto* bytes = static_cast<const char*>(mapping->data);

  Header h;
  std::memcpy(&h, bytes, sizeof h);
  if (std::memcmp(h.magic, kTokenFileMagic, sizeof h.magic) != 0)
    throw bad("not a token file (no SYTOKENS magic)");
  if (h.version != kTokenFileVersion)
    throw bad(detail::concat("token file version ", h.version, ", this build reads version ",
                             kTokenFileVersion));
  if (h.header_bytes != kTokenFileHeaderBytes)
    throw bad(detail::concat("header size ", h.header_bytes, ", expected ", kTokenFileHeaderBytes));
  if (h.vocab_size == 0) throw bad("vocab size 0");
  if (h.eos_id != kTokenFileNoEos && h.eos_id >= h.vocab_size)
    throw bad(detail::concat("eos id ", h.eos_id, " not below vocab size ", h.vocab_size));
  // Sizes are bounded by the file before any arithmetic that could overflow.
  if (h.num_tokens > size / 4 || h.num_documents > size / 8)
    throw bad(detail::concat("header promises ", h.num_tokens, " tokens and ", h.num_documents,
                             " documents, more than ", size, " bytes hold"));
  const uint64_t offsets_at = offsets_position(h.num_tokens);
  const uint64_t expected = offsets_at + 8 * (h.num_documents + 1);
  if (size != expected)
    throw bad(detail::concat("size ", size, " bytes, but ", h.num_tokens, " tokens and ",
                             h.num_documents, " documents make ", expected,
                             size < expected ? " (truncated)" : ""));
  std::span<const uint32_t> tokens(reinterpret_cast<const uint32_t*>(bytes + kTokenFileHeaderBytes),
                                   h.num_tokens);
  std::span<const uint64_t> offsets(reinterpret_cast<const uint64_t*>(bytes + offsets_at),
                                    h.num_documents + 1);
  if (offsets.front() != 0 || offsets.back() != h.num_tokens)
    throw bad(detail::concat("document offsets run from ", offsets.front(), " to ", offsets.back(),
                             ", not from 0 to ", h.num_tokens));
  for (size_t d = 0; d + 1 < offsets.size(); ++d)
    if (offsets[d + 1] < offsets[d])
      throw bad(detail::concat("document ", d, " ends at ", offsets[d + 1], " before it starts (",
                               offsets[d], ")"));
  if (options.check_ids)
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] >= h.vocab_size)
        throw bad(detail::concat("token ", i, " is id ", tokens[i], ", not below vocab size ",
                                 h.vocab_size));
  const std::optional<uint32_t> eos =
      h.eos_id == kTokenFileNoEos ? std::nullopt : std::optional<uint32_t>(h.eos_id);
  return TokenDocuments(tokens, offsets, h.vocab_size, eos, std::move(mapping));
}

}  // namespace switchyard
