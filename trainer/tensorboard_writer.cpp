#include "trainer/tensorboard_writer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "common/crc32c.h"
#include "common/errors.h"

namespace switchyard {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

void append_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char((v >> (8 * i)) & 0xFFu));
}

}  // namespace

std::string tfrecord(std::string_view data) {
  std::string length;
  append_le(length, data.size(), 8);
  std::string out = length;
  append_le(out, masked_crc32c(length), 4);
  out.append(data);
  append_le(out, masked_crc32c(data), 4);
  return out;
}

tensorboard::HistogramProto make_histogram(const std::vector<double>& values, int buckets) {
  SY_CHECK(!values.empty(), "make_histogram: no values");
  SY_CHECK(buckets >= 1, "make_histogram: buckets = ", buckets, ", expected at least 1");
  tensorboard::HistogramProto h;
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  h.set_min(*lo);
  h.set_max(*hi);
  h.set_num(double(values.size()));
  double sum = 0, squares = 0;
  for (double v : values) sum += v, squares += v * v;
  h.set_sum(sum);
  h.set_sum_squares(squares);
  // Equal values get one bucket ending at them; otherwise `buckets` buckets cover [min, max],
  // the first one also holding min itself (bucket 0 reaches down to -DBL_MAX).
  const int n = *hi > *lo ? buckets : 1;
  const double width = (*hi - *lo) / n;
  std::vector<double> counts(n, 0.0);
  for (double v : values)
    counts[width > 0 ? std::min(n - 1, std::max(0, int(std::ceil((v - *lo) / width)) - 1)) : 0] +=
        1;
  for (int i = 0; i < n; ++i) {
    h.add_bucket_limit(i == n - 1 ? *hi : *lo + width * (i + 1));
    h.add_bucket(counts[i]);
  }
  return h;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  const auto stamp = std::to_string(int64_t(now_seconds()));
  const std::string base = dir + "/events.out.tfevents." + stamp + "." + host_name();
  path_ = base;
  for (int i = 1; std::filesystem::exists(path_); ++i) path_ = base + "." + std::to_string(i);
  out_.open(path_, std::ios::binary);
  SY_CHECK(out_.good(), path_, ": cannot open for writing");
  tensorboard::Event first;
  first.set_wall_time(now_seconds());
  first.set_file_version("brain.Event:2");
  write_event(first);
}

void TensorBoardWriter::scalar(const std::string& tag, double value) {
  auto* v = pending_.add_value();
  v->set_tag(tag);
  v->set_simple_value(float(value));
}

void TensorBoardWriter::histogram(const std::string& tag, const std::vector<double>& values,
                                  int buckets) {
  auto* v = pending_.add_value();
  v->set_tag(tag);
  *v->mutable_histo() = make_histogram(values, buckets);
}

void TensorBoardWriter::write_step(int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  event.mutable_summary()->Swap(&pending_);
  write_event(event);
}

void TensorBoardWriter::write_event(const tensorboard::Event& event) {
  out_ << tfrecord(event.SerializeAsString());
  out_.flush();
  SY_CHECK(out_.good(), path_, ": write failed");
}

}  // namespace switchyard
