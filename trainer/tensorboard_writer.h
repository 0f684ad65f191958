// TensorBoard event files written natively: tensorboard.Event protobufs (configs/
// tensorboard_event.proto) in TFRecord framing, readable by `tensorboard` and its Python reader.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "configs/tensorboard_event.pb.h"

namespace switchyard {

/// One TFRecord: u64 length, masked CRC-32C of those 8 bytes, the data, masked CRC-32C of the
/// data (all little-endian).
///   usage: out << tfrecord(event.SerializeAsString());
std::string tfrecord(std::string_view data);

/// A histogram of `values` in `buckets` equal-width buckets between their min and max (one
/// bucket when they are all equal), in TensorBoard's HistogramProto layout.
///   usage: *value->mutable_histo() = make_histogram({3, 5, 5, 9}, 4);
tensorboard::HistogramProto make_histogram(const std::vector<double>& values, int buckets);

/// A new events file in `dir`: events.out.tfevents.<unix time>.<host> (".1", ".2", ... added
/// when that name exists, e.g. a resume within the same second), starting with the
/// file_version event. Values given between two write_step calls go out as one Event.
///   usage: TensorBoardWriter tb(run_dir);
///          tb.scalar("train/loss", 2.31); tb.histogram("load/layer0/expert_tokens", counts);
///          tb.write_step(step);   // flushed, so a killed run keeps what it wrote
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);

  void scalar(const std::string& tag, double value);
  void histogram(const std::string& tag, const std::vector<double>& values, int buckets = 30);
  /// Writes the values given since the last call as one event at `step`, and flushes.
  void write_step(int64_t step);

  const std::string& path() const { return path_; }

 private:
  void write_event(const tensorboard::Event& event);

  std::string path_;
  std::ofstream out_;
  tensorboard::Summary pending_;
};

}  // namespace switchyard
