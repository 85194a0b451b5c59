// fuzz_manifest — internal::DecodeManifest on arbitrary bytes.
//
// Each input is decoded as given and, when it is at least a header long, "resealed" (its header
// checksum, bytes 56..63, recomputed) so that mutations get past the checksum to the checks
// behind it; each under two sets of limits: a cache's (max_payload_size 4 MiB, the backend's
// max_item_size 1 MiB) and none at all (every size, chunk sizes up to 2^32 - 1). Properties:
//   - a failure is DataLoss; the decoder allocates nothing but its error message;
//   - a success obeys every rule of docs/FORMAT.md "Reading" step 2: flags 0 or 1 and reserved
//     byte 0, sizes, inline flag, chunk count, and a chunk size from kMinChunkSize (what writers
//     use; smaller ones would make a reader build one key per byte) to the item limit (no writer
//     for this backend cuts larger chunks, or inlines into a longer manifest);
//   - re-encoding (EncodeManifest(manifest, inline_payload)) gives back exactly the input: the
//     decoder looks at every header byte, so no two accepted inputs mean the same entry.

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/options.h"
#include "codec.h"
#include "fuzz_util.h"
#include "manifest.h"
#include "zstd.h"

namespace chunkcache::fuzz {
namespace manifest_target {

using internal::kManifestHeaderSize;

constexpr internal::ManifestLimits kCacheLimits = {.max_payload_size = std::size_t{4} << 20,
                                                   .max_chunk_size = std::size_t{1} << 20};
constexpr internal::ManifestLimits kNoLimits = {
    .max_payload_size = std::numeric_limits<std::size_t>::max(),
    .max_chunk_size = std::numeric_limits<std::size_t>::max()};
constexpr std::size_t kHeaderChecksumOffset = 56;

// Recomputes the header checksum of `bytes` (at least a header long).
void Reseal(std::string& bytes) {
  const std::string_view covered(bytes.data(), kHeaderChecksumOffset);
  const std::uint64_t sum = internal::Checksum({&covered, 1});
  for (int i = 0; i < 8; ++i) bytes[kHeaderChecksumOffset + i] = static_cast<char>(sum >> (8 * i));
}

void CheckDecode(std::string_view bytes, const internal::ManifestLimits& limits) {
  absl::StatusOr<internal::DecodedManifest> decoded;
  {
    AllocationMeter meter;
    decoded = internal::DecodeManifest(bytes, limits);
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
  const std::string fields =
      absl::StrCat("raw ", m.raw_size, " stored ", m.stored_size, " chunk ", m.chunk_size,
                   " count ", m.chunk_count, " length ", bytes.size());
  FUZZ_CHECK(bytes.size() >= kManifestHeaderSize, fields);
  FUZZ_CHECK(std::memcmp(bytes.data(), internal::kManifestMagic, 4) == 0, fields);
  FUZZ_CHECK(bytes[4] == internal::kFormatVersion && bytes[5] == internal::kCodecZstd, fields);
  FUZZ_CHECK((bytes[6] == 0 || bytes[6] == 1) && bytes[7] == 0, "unknown flags or reserved byte");
  FUZZ_CHECK(m.raw_size <= limits.max_payload_size, fields);
  const std::size_t bound = ZSTD_compressBound(m.raw_size);
  FUZZ_CHECK(!ZSTD_isError(bound) && m.stored_size > 0 && m.stored_size <= bound, fields);
  FUZZ_CHECK(((bytes[6] & 1) != 0) == m.is_inline(), fields);
  if (m.is_inline()) {
    FUZZ_CHECK(bytes.size() == kManifestHeaderSize + m.stored_size, fields);
    FUZZ_CHECK(bytes.size() <= limits.max_chunk_size, fields);
    FUZZ_CHECK(decoded->inline_payload == bytes.substr(kManifestHeaderSize), fields);
    FUZZ_CHECK(decoded->inline_payload.data() == bytes.data() + kManifestHeaderSize,
               "the inline payload must point into the decoded bytes");
  } else {
    FUZZ_CHECK(bytes.size() == kManifestHeaderSize && decoded->inline_payload.empty(), fields);
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

  const std::string reencoded = internal::EncodeManifest(m, decoded->inline_payload);
  FUZZ_CHECK(reencoded == bytes, "re-encoding differs from the input; " + fields);

  absl::StatusOr<internal::DecodedManifest> again = internal::DecodeManifest(reencoded, limits);
  FUZZ_CHECK(again.ok(), again.status().ToString());
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
  if (bytes.size() >= kManifestHeaderSize) {
    std::string resealed(bytes);
    Reseal(resealed);
    CheckDecode(resealed, kCacheLimits);
    CheckDecode(resealed, kNoLimits);
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzManifest(data, size);
}
#endif
