// The manifest: the small item that describes one stored version of a logical key and commits it.
// The one module that reads or writes manifest bytes; the layout is docs/FORMAT.md's.

#ifndef CHUNKCACHE_SRC_FORMAT_MANIFEST_H_
#define CHUNKCACHE_SRC_FORMAT_MANIFEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace chunkcache::internal {

inline constexpr char kManifestMagic[4] = {'C', 'C', 'M', 'F'};
// The version writers write. Readers read it and every earlier one (docs/FORMAT.md, "Versioning").
inline constexpr std::uint8_t kFormatVersion = 2;
inline constexpr std::uint8_t kCodecZstd = 1;
// The header writers write (version kFormatVersion); an inline payload follows it.
inline constexpr std::size_t kManifestHeaderSize = 72;
// Version 1's header: no key hash.
inline constexpr std::size_t kManifestHeaderSizeV1 = 64;

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

// The header (version kFormatVersion) followed by `inline_payload` (empty for a chunked entry).
// `stored_key` is the backend key the manifest is stored under (StoredKeys::manifest()): the
// header records its hash, which binds the entry to that key.
std::string EncodeManifest(const Manifest& manifest, std::string_view stored_key,
                           std::string_view inline_payload);

struct DecodedManifest {
  Manifest manifest;
  std::uint8_t version = 0;         // the format version the bytes were written in
  std::string_view inline_payload;  // points into the decoded bytes (after that version's header)
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
// docs/FORMAT.md ("Reading", step 2): magic, a version this reader reads (1 or 2), header
// checksum, from version 2 on the key it was written under (another key's entry — a reply meant
// for another request, a copied item — is refused), codec, flags and reserved byte, sizes
// consistent with each other and within `limits`. Version 1 records no key: it is read under any
// key. Any failure is DataLoss saying what was wrong. Allocates nothing but the error message.
absl::StatusOr<DecodedManifest> DecodeManifest(std::string_view bytes, std::string_view stored_key,
                                               const ManifestLimits& limits);

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_FORMAT_MANIFEST_H_
