#include "format/manifest.h"

#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/options.h"
#include "xxhash.h"
#include "zstd.h"

namespace chunkcache::internal {
namespace {

// Field offsets in the header (little-endian integers). Bytes 0-55 mean the same in every
// version (offset 40: version 3's table checksum where earlier versions had the payload's);
// version 1 puts its header checksum at 56, version 2 its key hash at 56 and its header checksum
// at 64, version 3 its key hash at 56, frame size and count at 64 and 68, its header checksum at
// 72 and the frame table at 80.
constexpr std::size_t kVersionOffset = 4;
constexpr std::size_t kCodecOffset = 5;
constexpr std::size_t kFlagsOffset = 6;
constexpr std::size_t kReservedOffset = 7;
constexpr std::size_t kGenerationOffset = 8;
constexpr std::size_t kRawSizeOffset = 16;
constexpr std::size_t kStoredSizeOffset = 24;
constexpr std::size_t kChunkSizeOffset = 32;
constexpr std::size_t kChunkCountOffset = 36;
constexpr std::size_t kChecksumOffset = 40;
constexpr std::size_t kCreatedOffset = 48;
constexpr std::size_t kKeyHashOffset = 56;     // from version 2
constexpr std::size_t kFrameSizeOffset = 64;   // version 3
constexpr std::size_t kFrameCountOffset = 68;  // version 3
constexpr std::uint8_t kFlagInline = 1;

// The header checksum is its last 8 bytes, over everything before them.
constexpr std::size_t HeaderChecksumOffset(std::size_t header_size) { return header_size - 8; }

// The header size of `version`, or 0 if this reader does not read it.
constexpr std::size_t HeaderSize(std::uint8_t version) {
  switch (version) {
    case 1:
      return kManifestHeaderSizeV1;
    case 2:
      return kManifestHeaderSizeV2;
    case 3:
      return kManifestHeaderSize;
    default:
      return 0;
  }
}

std::uint64_t KeyHash(std::string_view stored_key) {
  return XXH3_64bits(stored_key.data(), stored_key.size());
}

// Little-endian fixed-width integers, whatever the host's byte order.
template <typename T>
void StoreLE(char* dst, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    dst[i] = static_cast<char>(static_cast<std::uint8_t>(value >> (8 * i)));
  }
}

template <typename T>
T LoadLE(const char* src) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(static_cast<std::uint8_t>(src[i])) << (8 * i);
  }
  return value;
}

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("chunkcache: bad manifest: ", what));
}

void StoreFrameTable(char* p, const std::vector<Frame>& frames) {
  for (const Frame& frame : frames) {
    StoreLE<std::uint32_t>(p, static_cast<std::uint32_t>(frame.stored_size));
    StoreLE<std::uint64_t>(p + 4, frame.checksum);
    p += kFrameEntrySize;
  }
}

// ceil(a / b) for b > 0, without overflow.
std::uint64_t CeilDiv(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

// The frame fields of version 3 (frame size, count and table) checked against the header's
// sizes and the bytes present; fills m.frame_size and m.frames.
absl::Status DecodeFrameTable(std::string_view bytes, Manifest& m) {
  const char* p = bytes.data();
  m.frame_size = LoadLE<std::uint32_t>(p + kFrameSizeOffset);
  const std::uint32_t count = LoadLE<std::uint32_t>(p + kFrameCountOffset);
  if (m.raw_size == 0) return Corrupt("raw size 0");
  if (m.frame_size == 0) return Corrupt("frame size 0");
  if (CeilDiv(m.raw_size, m.frame_size) != count) {
    return Corrupt(absl::StrFormat("frame count %d does not match raw size %d in frames of %d",
                                   count, m.raw_size, m.frame_size));
  }
  // Before the table is read: the count comes from stored bytes.
  if ((bytes.size() - kManifestHeaderSize) / kFrameEntrySize < count) {
    return Corrupt(
        absl::StrFormat("%d bytes cannot hold a table of %d frames", bytes.size(), count));
  }
  const char* table = p + kManifestHeaderSize;
  const std::size_t table_size = kFrameEntrySize * count;
  if (XXH3_64bits(table, table_size) != m.checksum) return Corrupt("frame table checksum mismatch");
  m.frames.resize(count);
  std::uint64_t stored = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    Frame& frame = m.frames[i];
    frame.stored_size = LoadLE<std::uint32_t>(table + kFrameEntrySize * i);
    frame.checksum = LoadLE<std::uint64_t>(table + kFrameEntrySize * i + 4);
    // Writers compress each frame into a buffer of its ZSTD_compressBound: zstd never writes more.
    const std::size_t bound = ZSTD_compressBound(m.FrameRawSize(i));
    if (frame.stored_size == 0 || ZSTD_isError(bound) || frame.stored_size > bound) {
      return Corrupt(absl::StrFormat("frame %d: stored size %d impossible for raw size %d", i,
                                     frame.stored_size, m.FrameRawSize(i)));
    }
    stored += frame.stored_size;  // at most 2^32 frames of under 2^32 bytes: no overflow
  }
  if (stored != m.stored_size) {
    return Corrupt(
        absl::StrFormat("frames add up to %d bytes, the header says %d", stored, m.stored_size));
  }
  return absl::OkStatus();
}

}  // namespace

std::size_t Manifest::ChunkSize(std::uint32_t index) const {
  if (index + 1 < chunk_count) return chunk_size;
  return stored_size - std::uint64_t{chunk_size} * (chunk_count - 1);
}

std::size_t Manifest::FrameRawSize(std::size_t index) const {
  if (index + 1 < frames.size()) return frame_size;
  return raw_size - frame_size * (frames.size() - 1);
}

std::uint64_t FrameTableChecksum(const std::vector<Frame>& frames) {
  std::string table(kFrameEntrySize * frames.size(), '\0');
  StoreFrameTable(table.data(), frames);
  return XXH3_64bits(table.data(), table.size());
}

std::string EncodeManifest(const Manifest& m, std::string_view stored_key,
                           std::string_view inline_payload) {
  // The layout below is version 3's.
  static_assert(kFormatVersion == 3 && HeaderSize(kFormatVersion) == kManifestHeaderSize);
  const std::size_t table_size = kFrameEntrySize * m.frames.size();
  std::string out(kManifestHeaderSize + table_size + inline_payload.size(), '\0');
  char* p = out.data();
  std::memcpy(p, kManifestMagic, sizeof(kManifestMagic));
  p[kVersionOffset] = static_cast<char>(kFormatVersion);
  p[kCodecOffset] = static_cast<char>(kCodecZstd);
  p[kFlagsOffset] = static_cast<char>(m.is_inline() ? kFlagInline : 0);
  StoreLE<std::uint64_t>(p + kGenerationOffset, m.generation);
  StoreLE<std::uint64_t>(p + kRawSizeOffset, m.raw_size);
  StoreLE<std::uint64_t>(p + kStoredSizeOffset, m.stored_size);
  StoreLE<std::uint32_t>(p + kChunkSizeOffset, m.chunk_size);
  StoreLE<std::uint32_t>(p + kChunkCountOffset, m.chunk_count);
  StoreLE<std::uint64_t>(p + kChecksumOffset, m.checksum);
  StoreLE<std::uint64_t>(p + kCreatedOffset, static_cast<std::uint64_t>(m.created_unix_ms));
  StoreLE<std::uint64_t>(p + kKeyHashOffset, KeyHash(stored_key));
  StoreLE<std::uint32_t>(p + kFrameSizeOffset, static_cast<std::uint32_t>(m.frame_size));
  StoreLE<std::uint32_t>(p + kFrameCountOffset, static_cast<std::uint32_t>(m.frames.size()));
  constexpr std::size_t kSum = HeaderChecksumOffset(kManifestHeaderSize);
  StoreLE<std::uint64_t>(p + kSum, XXH3_64bits(p, kSum));
  StoreFrameTable(p + kManifestHeaderSize, m.frames);
  if (!inline_payload.empty()) {
    std::memcpy(p + kManifestHeaderSize + table_size, inline_payload.data(), inline_payload.size());
  }
  return out;
}

absl::StatusOr<DecodedManifest> DecodeManifest(std::string_view bytes, std::string_view stored_key,
                                               const ManifestLimits& limits) {
  if (bytes.size() < kManifestHeaderSizeV1) return Corrupt("shorter than its header");
  const char* p = bytes.data();
  if (std::memcmp(p, kManifestMagic, sizeof(kManifestMagic)) != 0) return Corrupt("bad magic");
  const std::uint8_t version = static_cast<std::uint8_t>(p[kVersionOffset]);
  const std::size_t header_size = HeaderSize(version);
  if (header_size == 0) {
    return Corrupt(absl::StrFormat("unsupported format version %d", version));
  }
  if (bytes.size() < header_size) return Corrupt("shorter than its header");
  const std::size_t sum_offset = HeaderChecksumOffset(header_size);
  if (LoadLE<std::uint64_t>(p + sum_offset) != XXH3_64bits(p, sum_offset)) {
    return Corrupt("header checksum mismatch");
  }
  // After the checksum: a damaged header is reported as damaged, not as another key's.
  if (version >= 2) {
    const std::uint64_t written_under = LoadLE<std::uint64_t>(p + kKeyHashOffset);
    const std::uint64_t read_under = KeyHash(stored_key);
    if (written_under != read_under) {
      return Corrupt(
          absl::StrFormat("written under another key (key hash %016x, the key read has %016x)",
                          written_under, read_under));
    }
  }
  if (static_cast<std::uint8_t>(p[kCodecOffset]) != kCodecZstd) return Corrupt("unknown codec");
  // Versions 1 to 3 define flag bit 0 only. A writer that gave another bit (or the reserved
  // byte) a meaning would have changed what the bytes say: not an entry of these versions, so not
  // guessed at.
  const std::uint8_t flags = static_cast<std::uint8_t>(p[kFlagsOffset]);
  if ((flags & ~kFlagInline) != 0) {
    return Corrupt(absl::StrFormat("unknown flag bits 0x%02x", flags & ~kFlagInline));
  }
  if (p[kReservedOffset] != 0) return Corrupt("non-zero reserved byte");

  DecodedManifest d;
  d.version = version;
  Manifest& m = d.manifest;
  m.generation = LoadLE<std::uint64_t>(p + kGenerationOffset);
  m.raw_size = LoadLE<std::uint64_t>(p + kRawSizeOffset);
  m.stored_size = LoadLE<std::uint64_t>(p + kStoredSizeOffset);
  m.chunk_size = LoadLE<std::uint32_t>(p + kChunkSizeOffset);
  m.chunk_count = LoadLE<std::uint32_t>(p + kChunkCountOffset);
  m.checksum = LoadLE<std::uint64_t>(p + kChecksumOffset);
  m.created_unix_ms = static_cast<std::int64_t>(LoadLE<std::uint64_t>(p + kCreatedOffset));
  const bool inline_flag = (flags & kFlagInline) != 0;

  if (m.raw_size > limits.max_payload_size) {
    return Corrupt(absl::StrFormat("raw size %d exceeds max_payload_size %d", m.raw_size,
                                   limits.max_payload_size));
  }
  std::size_t table_size = 0;
  if (version >= 3) {
    if (absl::Status s = DecodeFrameTable(bytes, m); !s.ok()) return s;
    table_size = kFrameEntrySize * m.frames.size();
  } else {
    // One frame. Writers compress into a buffer of ZSTD_compressBound(raw size): zstd never
    // writes more.
    const std::size_t bound = ZSTD_compressBound(m.raw_size);  // an error code past zstd's limit
    if (m.stored_size == 0 || ZSTD_isError(bound) || m.stored_size > bound) {
      return Corrupt(
          absl::StrFormat("stored size %d impossible for raw size %d", m.stored_size, m.raw_size));
    }
    m.frame_size = m.raw_size;
    m.frames.push_back({m.stored_size, m.checksum});
  }
  const std::size_t before_payload = header_size + table_size;
  if (inline_flag != m.is_inline()) return Corrupt("inline flag and chunk count disagree");
  if (bytes.size() > limits.max_chunk_size) {
    return Corrupt(absl::StrFormat("a manifest of %d bytes exceeds the item limit %d", bytes.size(),
                                   limits.max_chunk_size));
  }
  if (m.is_inline()) {
    if (bytes.size() != before_payload + m.stored_size) {
      return Corrupt("inline payload size does not match the header");
    }
    d.inline_payload = bytes.substr(before_payload);
    return d;
  }
  if (bytes.size() != before_payload) return Corrupt("trailing bytes after the header");
  // No writer cuts chunks smaller than kMinChunkSize (smaller ones would make a reader ask for,
  // and hold the keys of, one chunk per byte), nor larger than its backend's item limit.
  if (m.chunk_size < kMinChunkSize) {
    return Corrupt(
        absl::StrFormat("chunk size %d below the minimum %d", m.chunk_size, kMinChunkSize));
  }
  if (m.chunk_size > limits.max_chunk_size) {
    return Corrupt(absl::StrFormat("chunk size %d exceeds the item limit %d", m.chunk_size,
                                   limits.max_chunk_size));
  }
  // ceil(stored / chunk), without overflow for a stored size near 2^64.
  const std::uint64_t count = CeilDiv(m.stored_size, m.chunk_size);
  if (count != std::uint64_t{m.chunk_count}) {
    return Corrupt(absl::StrFormat("chunk count %d does not match stored size %d in chunks of %d",
                                   m.chunk_count, m.stored_size, m.chunk_size));
  }
  return d;
}

}  // namespace chunkcache::internal
