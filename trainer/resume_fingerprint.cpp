// See resume_fingerprint.h.
#include "trainer/resume_fingerprint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "common/fnv1a.h"
#include "routers/router_registry.h"

namespace switchyard {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kWholeFileBytes = 1 << 20;  // files up to this size are hashed whole
constexpr uint64_t kSampleBytes = 64 << 10;    // else: three samples (start, middle, end)

void hash_bytes(Fnv1a64& h, const fs::path& path, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot read (for the resume fingerprint)");
  std::vector<char> buf;
  auto take = [&](uint64_t offset, uint64_t n) {
    buf.resize(n);
    in.seekg(std::streamoff(offset));
    in.read(buf.data(), std::streamsize(n));
    h.update(std::string_view(buf.data(), size_t(in.gcount())));
  };
  if (size <= kWholeFileBytes) {
    take(0, size);
  } else {
    take(0, kSampleBytes);
    take(size / 2, kSampleBytes);
    take(size - kSampleBytes, kSampleBytes);
  }
}

std::string hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string file_fingerprint(const std::string& path) {
  const fs::path root(path);
  Fnv1a64 h;
  uint64_t total = 0;
  if (fs::is_directory(root)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const uint64_t size = fs::file_size(f);
      h.update(f.filename().string() + "\n" + std::to_string(size) + "\n");
      hash_bytes(h, f, size);
      total += size;
    }
  } else if (fs::is_regular_file(root)) {
    total = fs::file_size(root);
    hash_bytes(h, root, total);
  } else {
    throw Error(path + ": no such file or folder (for the resume fingerprint)");
  }
  return std::to_string(total) + " bytes, " + hex(h.value());
}

config::ResumeFingerprint resume_fingerprint(const RunConfig& config, int world_size) {
  config::ResumeFingerprint f;
  const auto& t = config.train();
  if (!config.model().checkpoint().empty())
    f.set_base(config.model().checkpoint() + ": " + file_fingerprint(config.model().checkpoint()));
  if (!config.data().train_path().empty())
    f.set_data(config.data().train_path() + ": " + file_fingerprint(config.data().train_path()));
  f.set_global_batch(int64_t(t.micro_batch_size()) * world_size * t.grad_accumulation());
  f.set_seq_len(t.seq_len());
  f.set_seed(t.seed());
  f.set_router(router_entry(router_kind(config.router())).name);
  return f;
}

const std::vector<std::string>& resume_fingerprint_items() {
  static const std::vector<std::string> items = {"base",    "data", "global_batch",
                                                 "seq_len", "seed", "router"};
  return items;
}

void check_resume_fingerprint(const config::ResumeFingerprint& saved,
                              const config::ResumeFingerprint& now, const std::string& folder,
                              const std::vector<std::string>& allowed) {
  for (const auto& a : allowed)
    if (std::find(resume_fingerprint_items().begin(), resume_fingerprint_items().end(), a) ==
        resume_fingerprint_items().end())
      throw ConfigError("--allow-resume-change " + a +
                        ": expected base, data, global_batch, seq_len, seed or router");
  if (!saved.has_router()) return;  // written before fingerprints
  std::string changed;
  auto compare = [&](const char* item, const std::string& what, const std::string& was,
                     const std::string& is) {
    if (was == is || std::find(allowed.begin(), allowed.end(), item) != allowed.end()) return;
    changed += (changed.empty() ? "" : "; ") + what + " was " + (was.empty() ? "none" : was) +
               ", is " + (is.empty() ? "none" : is);
  };
  compare("base", "the base model", saved.base(), now.base());
  compare("data", "the training data", saved.data(), now.data());
  compare("global_batch", "the global batch (micro_batch_size x ranks x grad_accumulation)",
          std::to_string(saved.global_batch()), std::to_string(now.global_batch()));
  compare("seq_len", "train.seq_len", std::to_string(saved.seq_len()),
          std::to_string(now.seq_len()));
  compare("seed", "train.seed", std::to_string(saved.seed()), std::to_string(now.seed()));
  compare("router", "the router", saved.router(), now.router());
  if (!changed.empty())
    throw ConfigError("--resume: this run differs from the one that wrote " + folder + ": " +
                      changed +
                      " (--allow-resume-change ITEM resumes anyway: base, data, global_batch, "
                      "seq_len, seed, router)");
}

}  // namespace switchyard
