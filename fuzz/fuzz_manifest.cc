// fuzz_manifest — internal::DecodeManifest on arbitrary bytes, read from the stored key
// "cc:{doc}".
//
// Each input is decoded as given and, when it is at least a version-1 header long, "resealed"
// (its header checksum recomputed for the version byte 4 names: bytes 56..63 over 0..55 for
// version 1, 64..71 over 0..63 for version 2, else version 3's 72..79 over 0..71) so that
// mutations get past the checksum to the checks behind it, and "rebound" (a version-2 or 3
// header's key hash, bytes 56..63, set to the hash of "cc:{doc}", then resealed) so that they get
// past the key check too; a version-3 header is also "retabled" (its table checksum, bytes
// 40..47, recomputed over the frame table its frame count (bytes 68..71) names, as far as the
// bytes hold it, then rebound) so that mutations of the frame table reach the frame checks. Each
// under two sets of limits: a cache's (max_payload_size 4 MiB, the backend's max_item_size 1 MiB)
// and none at all (every size, chunk sizes up to 2^32 - 1). Properties:
//   - a failure is DataLoss; the decoder allocates nothing but its frame list (16 bytes a frame,
//     at most one frame per 12 bytes of input) and its error message;
//   - a success is version 1, 2 or 3 and obeys every rule of docs/FORMAT.md "Reading" step 2:
//     flags 0 or 1 and reserved byte 0, sizes, inline flag, chunk count, a chunk size from
//     kMinChunkSize (what writers use; smaller ones would make a reader build one key per byte)
//     to the item limit (no writer for this backend cuts larger chunks, or writes a longer
//     manifest); version 3: raw size and frame size at least 1, frame count ceil(raw / frame
//     size), the table present and matching its checksum, every frame 1 to ZSTD_compressBound of
//     its raw size, adding up to the stored size; versions 1 and 2: one frame, of the raw size,
//     whose checksum is the payload checksum;
//   - a version-2 or 3 success records the hash of "cc:{doc}" and is refused under any other key;
//     a version-1 success (no key recorded) decodes the same under any key;
//   - re-encoding (EncodeManifest(manifest, "cc:{doc}", inline_payload)) gives back exactly a
//     version-3 input, and a version-1 or 2 input's fields, frame and payload in a version-3
//     manifest: the decoder looks at every header and table byte, so no two accepted inputs mean
//     the same entry.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/options.h"
#include "format/codec.h"
#include "format/manifest.h"
#include "fuzz_util.h"
#include "zstd.h"

namespace chunkcache::fuzz {
namespace manifest_target {

using internal::kFrameEntrySize;
using internal::kManifestHeaderSize;
using internal::kManifestHeaderSizeV1;
using internal::kManifestHeaderSizeV2;

constexpr internal::ManifestLimits kCacheLimits = {.max_payload_size = std::size_t{4} << 20,
                                                   .max_chunk_size = std::size_t{1} << 20};
constexpr internal::ManifestLimits kNoLimits = {
    .max_payload_size = std::numeric_limits<std::size_t>::max(),
    .max_chunk_size = std::numeric_limits<std::size_t>::max()};
constexpr std::string_view kStoredKey = "cc:{doc}";  // fuzz_read_path's (short) key
constexpr std::string_view kOtherKey = "cc:{doc2}";
constexpr std::size_t kKeyHashOffset = 56;        // versions 2 and 3
constexpr std::size_t kTableChecksumOffset = 40;  // version 3
constexpr std::size_t kFrameSizeOffset = 64;      // version 3
constexpr std::size_t kFrameCountOffset = 68;     // version 3

std::uint64_t Xxh3(std::string_view bytes) { return internal::Checksum({&bytes, 1}); }
std::uint64_t KeyHash(std::string_view stored_key) { return Xxh3(stored_key); }

// The header size byte 4 of `bytes` names: 64 for version 1, 72 for version 2, else (version 3,
// or a version no reader knows) 80.
std::size_t HeaderSize(std::string_view bytes) {
  if (bytes.size() <= 4) return kManifestHeaderSize;
  if (bytes[4] == 1) return kManifestHeaderSizeV1;
  if (bytes[4] == 2) return kManifestHeaderSizeV2;
  return kManifestHeaderSize;
}

void StoreLE64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
}

template <typename T>
T LoadLE(std::string_view bytes, std::size_t offset) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(static_cast<std::uint8_t>(bytes[offset + i])) << (8 * i);
  }
  return value;
}
std::uint64_t LoadLE64(std::string_view bytes, std::size_t offset) {
  return LoadLE<std::uint64_t>(bytes, offset);
}

// Recomputes the header checksum of `bytes`, for the version its byte 4 names, if it is that
// header long.
void Reseal(std::string& bytes) {
  const std::size_t header = HeaderSize(bytes);
  if (bytes.size() < header) return;
  StoreLE64(bytes, header - 8, Xxh3(std::string_view(bytes.data(), header - 8)));
}

// Binds a version-2 or 3 (or unknown) header to kStoredKey and reseals it.
void Rebind(std::string& bytes) {
  if (HeaderSize(bytes) == kManifestHeaderSizeV1 || bytes.size() < HeaderSize(bytes)) return;
  StoreLE64(bytes, kKeyHashOffset, KeyHash(kStoredKey));
  Reseal(bytes);
}

// Recomputes a version-3 header's table checksum over the table its frame count names (as much
// of it as the bytes hold), then rebinds it.
void Retable(std::string& bytes) {
  if (HeaderSize(bytes) != kManifestHeaderSize || bytes.size() < kManifestHeaderSize) return;
  const std::uint64_t count = LoadLE<std::uint32_t>(bytes, kFrameCountOffset);
  const std::size_t table =
      std::min<std::uint64_t>(kFrameEntrySize * count, bytes.size() - kManifestHeaderSize);
  StoreLE64(bytes, kTableChecksumOffset,
            Xxh3(std::string_view(bytes).substr(kManifestHeaderSize, table)));
  Rebind(bytes);
}

void CheckDecode(std::string_view bytes, const internal::ManifestLimits& limits) {
  absl::StatusOr<internal::DecodedManifest> decoded;
  {
    AllocationMeter meter;
    decoded = internal::DecodeManifest(bytes, kStoredKey, limits);
    if (AllocationMeter::Supported()) {
      // The frame list (16 bytes a frame, at most one frame per 12 bytes of input) and a message.
      const std::size_t frames = sizeof(internal::Frame) * (bytes.size() / kFrameEntrySize);
      FUZZ_CHECK(meter.largest() <= std::max<std::size_t>(1024, frames + 64) &&
                     meter.peak() <= frames + 4096,
                 absl::StrCat("DecodeManifest allocated ", meter.largest(), " bytes at once, ",
                              meter.peak(), " in all, for ", bytes.size(), " bytes"));
    }
  }
  if (!decoded.ok()) {
    FUZZ_CHECK(absl::IsDataLoss(decoded.status()), decoded.status().ToString());
    return;
  }
  const internal::Manifest& m = decoded->manifest;
  const std::size_t header = HeaderSize(bytes);
  const std::string fields =
      absl::StrCat("version ", int{decoded->version}, " raw ", m.raw_size, " stored ",
                   m.stored_size, " chunk ", m.chunk_size, " count ", m.chunk_count, " frame size ",
                   m.frame_size, " frames ", m.frames.size(), " length ", bytes.size());
  FUZZ_CHECK(bytes.size() >= header, fields);
  FUZZ_CHECK(std::memcmp(bytes.data(), internal::kManifestMagic, 4) == 0, fields);
  FUZZ_CHECK(decoded->version >= 1 && decoded->version <= 3 && bytes[4] == decoded->version &&
                 bytes[5] == internal::kCodecZstd,
             fields);
  FUZZ_CHECK((bytes[6] == 0 || bytes[6] == 1) && bytes[7] == 0, "unknown flags or reserved byte");
  FUZZ_CHECK(m.raw_size <= limits.max_payload_size, fields);
  FUZZ_CHECK(!m.frames.empty(), fields);
  std::size_t table = 0;
  if (decoded->version == 3) {
    const std::uint32_t count = LoadLE<std::uint32_t>(bytes, kFrameCountOffset);
    FUZZ_CHECK(m.raw_size >= 1 && m.frame_size >= 1, fields);
    FUZZ_CHECK(m.frame_size == LoadLE<std::uint32_t>(bytes, kFrameSizeOffset), fields);
    FUZZ_CHECK(count == m.frames.size() &&
                   count == m.raw_size / m.frame_size + (m.raw_size % m.frame_size != 0),
               fields);
    table = kFrameEntrySize * count;
    FUZZ_CHECK(bytes.size() >= header + table, fields);
    FUZZ_CHECK(m.checksum == Xxh3(bytes.substr(header, table)) &&
                   m.checksum == LoadLE64(bytes, kTableChecksumOffset) &&
                   m.checksum == internal::FrameTableChecksum(m.frames),
               "a frame table that does not match its checksum; " + fields);
    std::uint64_t stored = 0, raw = 0;
    for (std::size_t j = 0; j < m.frames.size(); ++j) {
      const internal::Frame& frame = m.frames[j];
      const std::size_t raw_j = m.FrameRawSize(j);
      FUZZ_CHECK(frame.stored_size == LoadLE<std::uint32_t>(bytes, header + kFrameEntrySize * j) &&
                     frame.checksum == LoadLE64(bytes, header + kFrameEntrySize * j + 4),
                 absl::StrCat("frame ", j, " is not the table's; ", fields));
      FUZZ_CHECK(raw_j >= 1 && raw_j <= m.frame_size, absl::StrCat("frame ", j, "; ", fields));
      FUZZ_CHECK(
          frame.stored_size >= 1 && frame.stored_size <= ZSTD_compressBound(raw_j),
          absl::StrCat("frame ", j, " of ", frame.stored_size, " bytes for ", raw_j, "; ", fields));
      stored += frame.stored_size;
      raw += raw_j;
    }
    FUZZ_CHECK(stored == m.stored_size && raw == m.raw_size,
               "frames that do not add up to the sizes; " + fields);
  } else {
    const std::size_t bound = ZSTD_compressBound(m.raw_size);
    FUZZ_CHECK(!ZSTD_isError(bound) && m.stored_size > 0 && m.stored_size <= bound, fields);
    FUZZ_CHECK(m.frames.size() == 1 && m.frames[0].stored_size == m.stored_size &&
                   m.frames[0].checksum == m.checksum && m.frame_size == m.raw_size &&
                   m.checksum == LoadLE64(bytes, kTableChecksumOffset),
               "versions 1 and 2 are one frame; " + fields);
  }
  FUZZ_CHECK(((bytes[6] & 1) != 0) == m.is_inline(), fields);
  FUZZ_CHECK(bytes.size() <= limits.max_chunk_size, fields);
  if (m.is_inline()) {
    FUZZ_CHECK(bytes.size() == header + table + m.stored_size, fields);
    FUZZ_CHECK(decoded->inline_payload == bytes.substr(header + table), fields);
    FUZZ_CHECK(decoded->inline_payload.data() == bytes.data() + header + table,
               "the inline payload must point into the decoded bytes");
  } else {
    FUZZ_CHECK(bytes.size() == header + table && decoded->inline_payload.empty(), fields);
    FUZZ_CHECK(m.chunk_size >= kMinChunkSize && m.chunk_size <= limits.max_chunk_size, fields);
    const std::uint64_t count = (m.stored_size + m.chunk_size - 1) / m.chunk_size;
    FUZZ_CHECK(count == m.chunk_count, fields);
    // Every chunk but the last is full; the last holds the rest, 1 to chunk_size bytes.
    const std::uint32_t last = m.chunk_count - 1;
    if (m.chunk_count > 1) FUZZ_CHECK(m.ChunkSize(0) == m.chunk_size, fields);
    if (m.chunk_count > 2) FUZZ_CHECK(m.ChunkSize(last - 1) == m.chunk_size, fields);
    FUZZ_CHECK(m.ChunkSize(last) >= 1 && m.ChunkSize(last) <= m.chunk_size, fields);
    FUZZ_CHECK(std::uint64_t{m.chunk_size} * last + m.ChunkSize(last) == m.stored_size, fields);
  }

  // The key binding: versions 2 and 3 name kStoredKey and no other; version 1 names none.
  const absl::StatusOr<internal::DecodedManifest> elsewhere =
      internal::DecodeManifest(bytes, kOtherKey, limits);
  if (decoded->version == 1) {
    FUZZ_CHECK(elsewhere.ok() && elsewhere->manifest.generation == m.generation &&
                   elsewhere->inline_payload == decoded->inline_payload,
               "a version-1 manifest decodes differently under another key: " +
                   elsewhere.status().ToString());
  } else {
    FUZZ_CHECK(LoadLE64(bytes, kKeyHashOffset) == KeyHash(kStoredKey),
               "a version-2 or 3 manifest decoded under a key it does not name; " + fields);
    FUZZ_CHECK(
        absl::IsDataLoss(elsewhere.status()),
        "a version-2 or 3 manifest decoded under another key: " + elsewhere.status().ToString());
  }

  // Some version-1 and 2 entries have no version-3 form: version 3 records frame sizes in 4
  // bytes (a frame of 4 GiB or more: only without a payload limit; writers cut frames of at most
  // kMaxFrameSize, 1 GiB), and refuses a raw size of 0 (which versions 1 and 2 read, but no writer
  // stored: Put refuses an empty payload).
  if (m.raw_size == 0 || m.frame_size > std::numeric_limits<std::uint32_t>::max() ||
      m.stored_size > std::numeric_limits<std::uint32_t>::max()) {
    return;
  }
  // Re-encoded as version 3 (the table checksum follows the frames: for versions 1 and 2 it
  // replaces the payload checksum).
  internal::Manifest as_v3 = m;
  as_v3.checksum = internal::FrameTableChecksum(m.frames);
  const std::string reencoded =
      internal::EncodeManifest(as_v3, kStoredKey, decoded->inline_payload);
  if (decoded->version == 3) {
    FUZZ_CHECK(reencoded == bytes, "re-encoding differs from the input; " + fields);
  } else {
    // Bytes 0-39 and 48-55 of every version mean the same (but the version byte); then the
    // payload after the header (and, in version 3, the one-frame table).
    FUZZ_CHECK(
        reencoded.size() == bytes.size() + (kManifestHeaderSize - header) + kFrameEntrySize &&
            reencoded.substr(0, 4) == bytes.substr(0, 4) &&
            reencoded.substr(5, 35) == bytes.substr(5, 35) &&
            reencoded.substr(48, 8) == bytes.substr(48, 8) &&
            reencoded.substr(kManifestHeaderSize + kFrameEntrySize) == bytes.substr(header),
        "a version-1 or 2 manifest re-encoded as version 3 differs in its fields; " + fields);
  }

  // A re-encoded version 1 or 2 is longer: decoded without the item limit.
  const internal::ManifestLimits again_limits = {.max_payload_size = limits.max_payload_size,
                                                 .max_chunk_size = kNoLimits.max_chunk_size};
  absl::StatusOr<internal::DecodedManifest> again =
      internal::DecodeManifest(reencoded, kStoredKey, again_limits);
  FUZZ_CHECK(again.ok() && again->version == internal::kFormatVersion, again.status().ToString());
  const internal::Manifest& n = again->manifest;
  bool same_frames = n.frames.size() == m.frames.size() && n.frame_size == m.frame_size;
  for (std::size_t j = 0; same_frames && j < n.frames.size(); ++j) {
    same_frames = n.frames[j].stored_size == m.frames[j].stored_size &&
                  n.frames[j].checksum == m.frames[j].checksum;
  }
  FUZZ_CHECK(n.generation == m.generation && n.raw_size == m.raw_size &&
                 n.stored_size == m.stored_size && n.chunk_size == m.chunk_size &&
                 n.chunk_count == m.chunk_count && n.checksum == as_v3.checksum &&
                 n.created_unix_ms == m.created_unix_ms && same_frames &&
                 again->inline_payload == decoded->inline_payload,
             "a re-encoded manifest decodes to other fields; " + fields);
}

}  // namespace manifest_target

int FuzzManifest(const std::uint8_t* data, std::size_t size) {
  using namespace manifest_target;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  CheckDecode(bytes, kCacheLimits);
  CheckDecode(bytes, kNoLimits);
  if (bytes.size() >= kManifestHeaderSizeV1) {
    std::string resealed(bytes);
    Reseal(resealed);
    CheckDecode(resealed, kCacheLimits);
    CheckDecode(resealed, kNoLimits);
    std::string rebound(bytes);
    Rebind(rebound);
    if (rebound != resealed && rebound != bytes) {
      CheckDecode(rebound, kCacheLimits);
      CheckDecode(rebound, kNoLimits);
    }
    std::string retabled(bytes);
    Retable(retabled);
    if (retabled != rebound && retabled != resealed && retabled != bytes) {
      CheckDecode(retabled, kCacheLimits);
      CheckDecode(retabled, kNoLimits);
    }
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzManifest(data, size);
}
#endif
