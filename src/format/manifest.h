// The manifest: the small item that describes one stored version of a logical key and commits it.
// The one module that reads or writes manifest bytes; the layout is docs/FORMAT.md's.

#ifndef CHUNKCACHE_SRC_FORMAT_MANIFEST_H_
#define CHUNKCACHE_SRC_FORMAT_MANIFEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace chunkcache::internal {

inline constexpr char kManifestMagic[4] = {'C', 'C', 'M', 'F'};
// The version writers write. Readers read it and every earlier one (docs/FORMAT.md, "Versioning").
inline constexpr std::uint8_t kFormatVersion = 3;
inline constexpr std::uint8_t kCodecZstd = 1;
// The header writers write (version kFormatVersion); the frame table, then an inline payload,
// follow it.
inline constexpr std::size_t kManifestHeaderSize = 80;
// Version 2's header: one frame, no frame table.
inline constexpr std::size_t kManifestHeaderSizeV2 = 72;
// Version 1's header: no key hash.
inline constexpr std::size_t kManifestHeaderSizeV1 = 64;
// Bytes of one frame table entry: compressed size (4) and checksum (8).
inline constexpr std::size_t kFrameEntrySize = 12;

// One independently compressed zstd frame of a payload.
struct Frame {
  std::uint64_t stored_size = 0;  // its compressed bytes
  std::uint64_t checksum = 0;     // XXH3-64 (seed 0) of them
};

struct Manifest {
  std::uint64_t generation = 0;   // identifies this version's chunks
  std::uint64_t raw_size = 0;     // JSON bytes
  std::uint64_t stored_size = 0;  // compressed bytes (all chunks, or the inline payload)
  std::uint32_t chunk_size = 0;   // size of every chunk but the last
  std::uint32_t chunk_count = 0;  // 0: the payload is inline, after the header
  // Identifies the payload: version 3, the XXH3-64 (seed 0) of the frame table (which holds every
  // frame's checksum); versions 1 and 2, of the compressed bytes.
  std::uint64_t checksum = 0;
  std::int64_t created_unix_ms = 0;
  std::uint64_t frame_size = 0;  // raw bytes of every frame but the last
  // In order; their stored sizes add up to stored_size. Versions 1 and 2: one frame, whose
  // checksum is `checksum`.
  std::vector<Frame> frames;

  bool is_inline() const { return chunk_count == 0; }
  // Size of chunk `index` (all full but the last).
  std::size_t ChunkSize(std::uint32_t index) const;
  // Raw bytes of frame `index` (all frame_size but the last).
  std::size_t FrameRawSize(std::size_t index) const;
};

// XXH3-64 (seed 0) of the frame table of `frames` as stored (Manifest::checksum in version 3).
std::uint64_t FrameTableChecksum(const std::vector<Frame>& frames);

// Bytes of the manifest header and frame table for `frame_count` frames (version kFormatVersion).
constexpr std::size_t ManifestSize(std::size_t frame_count) {
  return kManifestHeaderSize + kFrameEntrySize * frame_count;
}

// The header (version kFormatVersion) and frame table followed by `inline_payload` (empty for a
// chunked entry). `manifest.checksum` must be FrameTableChecksum(manifest.frames).
// `stored_key` is the backend key the manifest is stored under (StoredKeys::manifest()): the
// header records its hash, which binds the entry to that key.
std::string EncodeManifest(const Manifest& manifest, std::string_view stored_key,
                           std::string_view inline_payload);

struct DecodedManifest {
  Manifest manifest;
  std::uint8_t version = 0;         // the format version the bytes were written in
  std::string_view inline_payload;  // points into the decoded bytes (after header and table)
};

// What the reading cache accepts, from its own configuration (not the writer's): a manifest
// outside these limits is refused, so that whatever it claims, a read holds at most about one
// payload of memory and asks the backend only for items the backend could have stored. Both
// fields are required (no defaults).
struct ManifestLimits {
  // Largest raw (JSON) size accepted: CacheOptions::max_payload_size.
  std::size_t max_payload_size;
  // Largest item the reader's backend holds: Backend::max_item_size(). A writer cuts chunks of at
  // most this many bytes and inlines a payload only if the whole manifest fits in one item, so a
  // larger chunk size or a longer inline manifest was not written for this backend.
  std::size_t max_chunk_size;
};

// Parses and checks `bytes`, read from the backend key `stored_key`, against every reader rule of
// docs/FORMAT.md ("Reading", step 2): magic, a version this reader reads (1 to 3), header
// checksum, from version 2 on the key it was written under (another key's entry — a reply meant
// for another request, a copied item — is refused), codec, flags and reserved byte, sizes
// consistent with each other and within `limits`, and in version 3 the frame table. Version 1
// records no key: it is read under any key. Any failure is DataLoss saying what was wrong.
// Allocates nothing but the frame list (at most one entry per 12 bytes of `bytes`) and the error
// message.
absl::StatusOr<DecodedManifest> DecodeManifest(std::string_view bytes, std::string_view stored_key,
                                               const ManifestLimits& limits);

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_FORMAT_MANIFEST_H_
