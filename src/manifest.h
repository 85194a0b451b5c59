// The manifest: the small item that describes one stored version of a logical key and commits it.
// The one module that reads or writes manifest bytes; the layout is docs/FORMAT.md's.

#ifndef CHUNKCACHE_SRC_MANIFEST_H_
#define CHUNKCACHE_SRC_MANIFEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace chunkcache::internal {

inline constexpr char kManifestMagic[4] = {'C', 'C', 'M', 'F'};
inline constexpr std::uint8_t kFormatVersion = 1;
inline constexpr std::uint8_t kCodecZstd = 1;
inline constexpr std::size_t kManifestHeaderSize = 64;

struct Manifest {
  std::uint64_t generation = 0;   // identifies this version's chunks
  std::uint64_t raw_size = 0;     // JSON bytes
  std::uint64_t stored_size = 0;  // compressed bytes (all chunks, or the inline payload)
  std::uint32_t chunk_size = 0;   // size of every chunk but the last
  std::uint32_t chunk_count = 0;  // 0: the payload is inline, after the header
  std::uint64_t checksum = 0;     // XXH3-64 (seed 0) of the compressed bytes
  std::int64_t created_unix_ms = 0;

  bool is_inline() const { return chunk_count == 0; }
  // Size of chunk `index` (all full but the last).
  std::size_t ChunkSize(std::uint32_t index) const;
};

// The header followed by `inline_payload` (empty for a chunked entry).
std::string EncodeManifest(const Manifest& manifest, std::string_view inline_payload);

struct DecodedManifest {
  Manifest manifest;
  std::string_view inline_payload;  // points into the decoded bytes
};

// Parses and checks `bytes`: magic, version, codec, header checksum, consistent sizes, and a
// raw size of at most `max_payload_size`. Any failure is DataLoss saying what was wrong.
absl::StatusOr<DecodedManifest> DecodeManifest(std::string_view bytes,
                                               std::size_t max_payload_size);

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_MANIFEST_H_
