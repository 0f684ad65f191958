// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing, and
// TensorFlow's "masked" form of it. Table-driven, one byte at a time: event files are small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace switchyard {

/// CRC-32C of `data`, continuing from `crc` (0 to start).
///   usage: uint32_t c = crc32c("123456789");   // 0xE3069283
uint32_t crc32c(std::string_view data, uint32_t crc = 0);

/// TensorFlow's masking, so a CRC stored next to the data it covers does not checksum itself
/// to a fixed value: ((crc >> 15) | (crc << 17)) + 0xA282EAD8.
///   usage: uint32_t stored = masked_crc32c(payload);
uint32_t masked_crc32c(std::string_view data);

}  // namespace switchyard
