// Reading stored entries (docs/FORMAT.md, "Reading"): fetch the manifest, check it against this
// cache's limits, fetch the chunks in batches, verify them against the checksum, decode. A chunk
// missing because a writer replaced the entry meanwhile (a torn read) starts the read over, up to
// kMaxReadAttempts times; an entry found corrupt is a miss (NotFound), counted in corrupt_reads
// and logged. Also the operators' view of an entry (Inspect) and the undecoded bytes
// (ReadCompressed).
//
//   internal::EntryReader reader(options, backend, codec, counters, log);
//   absl::StatusOr<internal::Found> found = reader.Read(StoredKeys(prefix, key), nullptr);
//
// The reader knows nothing of the near cache beyond the copy it may be handed (`known`), and
// writes nothing.
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_
#define CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/counters.h"
#include "cache/guarded_backend.h"
#include "cache/near_cache.h"
#include "cache/rate_limited_log.h"
#include "chunkcache/chunked_cache.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"

namespace chunkcache::internal {

// How often a read starts over because a writer replaced the entry under it.
inline constexpr int kMaxReadAttempts = 4;

// A payload a read found, and where it came from.
struct Found {
  Bytes bytes;
  std::uint64_t generation = 0;
  absl::Time created;          // when the entry was written
  bool from_l1 = false;        // the near cache's bytes (fresh, or confirmed by the manifest)
  std::uint64_t checksum = 0;  // of the stored entry
};

// A stored entry fetched and verified against its checksum, not yet decoded.
struct Fetched {
  Manifest manifest;
  std::string manifest_bytes;     // holds an inline payload
  std::size_t inline_offset = 0;  // where it starts: after the header of the manifest's version
  Values chunks;
  bool known = false;  // the manifest names the generation the reader has; nothing else fetched

  // The stored bytes: the inline payload, or the chunks in order.
  std::vector<std::string_view> Parts() const;
};

class EntryReader {
 public:
  // Every argument must outlive the reader.
  EntryReader(const CacheOptions& options, GuardedBackend& backend, Codec& codec,
              CacheCounters& counters, RateLimitedLog& log);
  EntryReader(const EntryReader&) = delete;
  EntryReader& operator=(const EntryReader&) = delete;

  // The decoded payload. NotFound on a miss or a corrupt entry (counted); the backend's error if
  // it failed. With `known` (a near copy), a manifest naming its generation and checksum returns
  // its bytes without fetching chunks.
  absl::StatusOr<Found> Read(const StoredKeys& keys, const NearCache::Entry* known);

  // The manifest and stored bytes of the entry, checksum verified. With `known`, a manifest of
  // that generation and checksum is all that is fetched (Fetched::known).
  absl::StatusOr<Fetched> Fetch(const StoredKeys& keys, const NearCache::Entry* known);

  // The stored zstd frame, checked to start like one, not decoded. Counts misses and
  // compressed_gets.
  absl::StatusOr<CompressedPayload> ReadCompressed(const StoredKeys& keys);

  // ChunkedCache::Inspect: fetches every chunk, decodes nothing.
  absl::StatusOr<EntryInfo> Inspect(const StoredKeys& keys);

  // The current manifest; nothing if it is absent or unreadable (corrupt); the backend's error.
  absl::StatusOr<std::optional<Manifest>> ReadManifest(const StoredKeys& keys);

  // The current manifest, or nothing if it is absent, unreadable or the backend failed.
  std::optional<Manifest> ReadManifestQuietly(const StoredKeys& keys);

 private:
  absl::StatusOr<bool> FetchChunks(const StoredKeys& keys, const Manifest& manifest,
                                   Values& chunks);
  bool ManifestChanged(const StoredKeys& keys, const Manifest& manifest);
  absl::StatusOr<DecodedManifest> DecodeStoredManifest(const StoredKeys& keys,
                                                       std::string_view bytes) const;
  // Counts and logs a corrupt entry; the NotFound it is answered with.
  absl::Status CorruptMiss(const absl::Status& why);

  const CacheOptions& options_;
  GuardedBackend& backend_;
  Codec& codec_;
  CacheCounters& counters_;
  RateLimitedLog& log_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_
