// fuzz_manifest — internal::DecodeManifest on arbitrary bytes, read from the stored key
// "cc:{doc}".
//
// Each input is decoded as given and, when it is at least a version-1 header long, "resealed"
// (its header checksum recomputed: bytes 56..63 over 0..55 if byte 4 says version 1, else bytes
// 64..71 over 0..63) so that mutations get past the checksum to the checks behind it, and
// "rebound" (a version-2 header's key hash, bytes 56..63, set to the hash of "cc:{doc}", then
// resealed) so that they get past the key check too; each under two sets of limits: a cache's
// (max_payload_size 4 MiB, the backend's max_item_size 1 MiB) and none at all (every size, chunk
// sizes up to 2^32 - 1). Properties:
//   - a failure is DataLoss; the decoder allocates nothing but its error message;
//   - a success is version 1 or 2 and obeys every rule of docs/FORMAT.md "Reading" step 2: flags
//     0 or 1 and reserved byte 0, sizes, inline flag, chunk count, and a chunk size from
//     kMinChunkSize (what writers use; smaller ones would make a reader build one key per byte)
//     to the item limit (no writer for this backend cuts larger chunks, or inlines into a longer
//     manifest);
//   - a version-2 success records the hash of "cc:{doc}" and is refused under any other key; a
//     version-1 success (no key recorded) decodes the same under any key;
//   - re-encoding (EncodeManifest(manifest, "cc:{doc}", inline_payload)) gives back exactly a
//     version-2 input, and a version-1 input's fields and payload in a version-2 header: the
//     decoder looks at every header byte, so no two accepted inputs mean the same entry.

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

using internal::kManifestHeaderSize;
using internal::kManifestHeaderSizeV1;

constexpr internal::ManifestLimits kCacheLimits = {.max_payload_size = std::size_t{4} << 20,
                                                   .max_chunk_size = std::size_t{1} << 20};
constexpr internal::ManifestLimits kNoLimits = {
    .max_payload_size = std::numeric_limits<std::size_t>::max(),
    .max_chunk_size = std::numeric_limits<std::size_t>::max()};
constexpr std::string_view kStoredKey = "cc:{doc}";  // fuzz_read_path's (short) key
constexpr std::string_view kOtherKey = "cc:{doc2}";
constexpr std::size_t kKeyHashOffset = 56;  // version 2

std::uint64_t KeyHash(std::string_view stored_key) { return internal::Checksum({&stored_key, 1}); }

// The header size byte 4 of `bytes` names: 64 for version 1, else (version 2, or a version no
// reader knows) 72.
std::size_t HeaderSize(std::string_view bytes) {
  return bytes.size() > 4 && bytes[4] == 1 ? kManifestHeaderSizeV1 : kManifestHeaderSize;
}

void StoreLE64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
}

std::uint64_t LoadLE64(std::string_view bytes, std::size_t offset) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= std::uint64_t{static_cast<std::uint8_t>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

// Recomputes the header checksum of `bytes`, for the version its byte 4 names, if it is that
// header long.
void Reseal(std::string& bytes) {
  const std::size_t header = HeaderSize(bytes);
  if (bytes.size() < header) return;
  const std::string_view covered(bytes.data(), header - 8);
  StoreLE64(bytes, header - 8, internal::Checksum({&covered, 1}));
}

// Binds a version-2 (or later) header to kStoredKey and reseals it.
void Rebind(std::string& bytes) {
  if (HeaderSize(bytes) != kManifestHeaderSize || bytes.size() < kManifestHeaderSize) return;
  StoreLE64(bytes, kKeyHashOffset, KeyHash(kStoredKey));
  Reseal(bytes);
}

void CheckDecode(std::string_view bytes, const internal::ManifestLimits& limits) {
  absl::StatusOr<internal::DecodedManifest> decoded;
  {
    AllocationMeter meter;
    decoded = internal::DecodeManifest(bytes, kStoredKey, limits);
    if (AllocationMeter::Supported()) {
      FUZZ_CHECK(meter.largest() <= 1024 && meter.peak() <= 4096,
                 absl::StrCat("DecodeManifest allocated ", meter.largest(), " bytes at once, ",
                              meter.peak(), " in all"));
    }
  }
  if (!decoded.ok()) {
    FUZZ_CHECK(absl::IsDataLoss(decoded.status()), decoded.status().ToString());
    return;
  }
  const internal::Manifest& m = decoded->manifest;
  const std::size_t header = HeaderSize(bytes);
  const std::string fields = absl::StrCat("version ", int{decoded->version}, " raw ", m.raw_size,
                                          " stored ", m.stored_size, " chunk ", m.chunk_size,
                                          " count ", m.chunk_count, " length ", bytes.size());
  FUZZ_CHECK(bytes.size() >= header, fields);
  FUZZ_CHECK(std::memcmp(bytes.data(), internal::kManifestMagic, 4) == 0, fields);
  FUZZ_CHECK((decoded->version == 1 || decoded->version == 2) && bytes[4] == decoded->version &&
                 bytes[5] == internal::kCodecZstd,
             fields);
  FUZZ_CHECK((bytes[6] == 0 || bytes[6] == 1) && bytes[7] == 0, "unknown flags or reserved byte");
  FUZZ_CHECK(m.raw_size <= limits.max_payload_size, fields);
  const std::size_t bound = ZSTD_compressBound(m.raw_size);
  FUZZ_CHECK(!ZSTD_isError(bound) && m.stored_size > 0 && m.stored_size <= bound, fields);
  FUZZ_CHECK(((bytes[6] & 1) != 0) == m.is_inline(), fields);
  if (m.is_inline()) {
    FUZZ_CHECK(bytes.size() == header + m.stored_size, fields);
    FUZZ_CHECK(bytes.size() <= limits.max_chunk_size, fields);
    FUZZ_CHECK(decoded->inline_payload == bytes.substr(header), fields);
    FUZZ_CHECK(decoded->inline_payload.data() == bytes.data() + header,
               "the inline payload must point into the decoded bytes");
  } else {
    FUZZ_CHECK(bytes.size() == header && decoded->inline_payload.empty(), fields);
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

  // The key binding: version 2 names kStoredKey and no other; version 1 names none.
  const absl::StatusOr<internal::DecodedManifest> elsewhere =
      internal::DecodeManifest(bytes, kOtherKey, limits);
  if (decoded->version == 1) {
    FUZZ_CHECK(elsewhere.ok() && elsewhere->manifest.generation == m.generation &&
                   elsewhere->inline_payload == decoded->inline_payload,
               "a version-1 manifest decodes differently under another key: " +
                   elsewhere.status().ToString());
  } else {
    FUZZ_CHECK(LoadLE64(bytes, kKeyHashOffset) == KeyHash(kStoredKey),
               "a version-2 manifest decoded under a key it does not name; " + fields);
    FUZZ_CHECK(absl::IsDataLoss(elsewhere.status()),
               "a version-2 manifest decoded under another key: " + elsewhere.status().ToString());
  }

  const std::string reencoded = internal::EncodeManifest(m, kStoredKey, decoded->inline_payload);
  if (decoded->version == 2) {
    FUZZ_CHECK(reencoded == bytes, "re-encoding differs from the input; " + fields);
  } else {
    // Version 1 is version 2 without the key hash: bytes 0-55 but the version byte, and the
    // payload after the header.
    FUZZ_CHECK(reencoded.size() == bytes.size() + (kManifestHeaderSize - kManifestHeaderSizeV1) &&
                   reencoded.substr(0, 4) == bytes.substr(0, 4) &&
                   reencoded.substr(5, 51) == bytes.substr(5, 51) &&
                   reencoded.substr(kManifestHeaderSize) == bytes.substr(kManifestHeaderSizeV1),
               "a version-1 manifest re-encoded as version 2 differs in its fields; " + fields);
  }

  absl::StatusOr<internal::DecodedManifest> again =
      internal::DecodeManifest(reencoded, kStoredKey, limits);
  FUZZ_CHECK(again.ok() && again->version == internal::kFormatVersion, again.status().ToString());
  const internal::Manifest& n = again->manifest;
  FUZZ_CHECK(n.generation == m.generation && n.raw_size == m.raw_size &&
                 n.stored_size == m.stored_size && n.chunk_size == m.chunk_size &&
                 n.chunk_count == m.chunk_count && n.checksum == m.checksum &&
                 n.created_unix_ms == m.created_unix_ms &&
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
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzManifest(data, size);
}
#endif
