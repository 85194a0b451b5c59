// fuzz_manifest — internal::DecodeManifest on arbitrary bytes.
//
// Each input is decoded as given and, when it is at least a header long, "resealed" (its header
// checksum, bytes 56..63, recomputed) so that mutations get past the checksum to the checks
// behind it; each with max_payload_size 4 MiB and with no limit at all. Properties:
//   - a failure is DataLoss; the decoder allocates nothing but its error message;
//   - a success obeys every rule of docs/FORMAT.md "Reading" step 2 (sizes, flag, chunk count),
//     and a chunked manifest has a chunk size of at least kMinChunkSize (what writers use; smaller
//     ones would make a reader build one key per byte);
//   - re-encoding (EncodeManifest(manifest, inline_payload)) gives back the input bytes, except
//     for what the decoder does not look at: the flag bits other than bit 0 and the reserved byte
//     7 (FORMAT.md says they are 0; the decoder accepts any value and the encoder writes 0), and
//     therefore the header checksum that covers them. So: re-encoded == input with byte 6 &= 1,
//     byte 7 = 0 and the header checksum recomputed; and exactly the input when those are 0.

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

constexpr std::size_t kMaxPayload = std::size_t{4} << 20;
constexpr std::size_t kNoLimit = std::numeric_limits<std::size_t>::max();
constexpr std::size_t kHeaderChecksumOffset = 56;

// Recomputes the header checksum of `bytes` (at least a header long).
void Reseal(std::string& bytes) {
  const std::string_view covered(bytes.data(), kHeaderChecksumOffset);
  const std::uint64_t sum = internal::Checksum({&covered, 1});
  for (int i = 0; i < 8; ++i) bytes[kHeaderChecksumOffset + i] = static_cast<char>(sum >> (8 * i));
}

void CheckDecode(std::string_view bytes, std::size_t max_payload_size) {
  absl::StatusOr<internal::DecodedManifest> decoded;
  {
    AllocationMeter meter;
    decoded = internal::DecodeManifest(bytes, max_payload_size);
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
  FUZZ_CHECK(m.raw_size <= max_payload_size, fields);
  const std::size_t bound = ZSTD_compressBound(m.raw_size);
  FUZZ_CHECK(!ZSTD_isError(bound) && m.stored_size > 0 && m.stored_size <= bound, fields);
  FUZZ_CHECK(((bytes[6] & 1) != 0) == m.is_inline(), fields);
  if (m.is_inline()) {
    FUZZ_CHECK(bytes.size() == kManifestHeaderSize + m.stored_size, fields);
    FUZZ_CHECK(decoded->inline_payload == bytes.substr(kManifestHeaderSize), fields);
    FUZZ_CHECK(decoded->inline_payload.data() == bytes.data() + kManifestHeaderSize,
               "the inline payload must point into the decoded bytes");
  } else {
    FUZZ_CHECK(bytes.size() == kManifestHeaderSize && decoded->inline_payload.empty(), fields);
    FUZZ_CHECK(m.chunk_size >= kMinChunkSize, fields);
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
  std::string expected(bytes);
  expected[6] = static_cast<char>(expected[6] & 1);
  expected[7] = 0;
  Reseal(expected);
  FUZZ_CHECK(reencoded == expected,
             "re-encoding differs from the input beyond ignored bits; " + fields);
  if (bytes[6] == expected[6] && bytes[7] == 0) FUZZ_CHECK(reencoded == bytes, fields);

  absl::StatusOr<internal::DecodedManifest> again =
      internal::DecodeManifest(reencoded, max_payload_size);
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
  CheckDecode(bytes, kMaxPayload);
  CheckDecode(bytes, kNoLimit);
  if (bytes.size() >= kManifestHeaderSize) {
    std::string resealed(bytes);
    Reseal(resealed);
    CheckDecode(resealed, kMaxPayload);
    CheckDecode(resealed, kNoLimit);
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzManifest(data, size);
}
#endif
