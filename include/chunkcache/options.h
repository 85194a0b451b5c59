// chunkcache/options.h — the knobs of a ChunkedCache.
//
// CacheOptions is a plain struct: set the fields you care about and pass it to the ChunkedCache
// constructor. Every field says what it does and its default. Out-of-range values are reported
// by each operation as InvalidArgument (the constructor cannot fail), so a bad configuration is
// visible on the first call.

#ifndef CHUNKCACHE_OPTIONS_H_
#define CHUNKCACHE_OPTIONS_H_

#include <cstddef>
#include <string>

#include "absl/time/time.h"

namespace chunkcache {

// Longest logical key accepted, in bytes. Longer keys are InvalidArgument.
inline constexpr std::size_t kMaxKeySize = 1024;

// Smallest chunk_size accepted: a manifest header must fit in one item.
inline constexpr std::size_t kMinChunkSize = 128;

struct CacheOptions {
  // Prepended to every stored key, so several caches (or versions of a deployment) can share one
  // backend. Any bytes; escaped like the logical key (docs/FORMAT.md).
  // Default: "cc:".
  std::string key_prefix = "cc:";

  // Largest stored item, in bytes. The effective size is min(chunk_size, backend's
  // max_item_size()); must be at least kMinChunkSize.
  // Default: 1 MiB (the seed's serverless cache item limit).
  std::size_t chunk_size = std::size_t{1} << 20;

  // zstd compression level, from 1 (fastest) to 19 (smallest); negative levels trade ratio for
  // speed as in zstd itself.
  // Default: 3 (zstd's default).
  int compression_level = 3;

  // zstd worker threads used by one Put. 0 compresses in the calling thread; N > 0 uses zstd's
  // multithreaded mode with N workers (pays off for payloads of several MB and a spare core).
  // Default: 0.
  int compression_workers = 0;

  // Time to live of a stored entry (its manifest). absl::InfiniteDuration() means no expiry.
  // Default: 1 hour.
  absl::Duration ttl = absl::Hours(1);

  // Extra time to live given to chunks beyond the manifest's, so that a reader that has just read
  // a live manifest never finds its chunks expired.
  // Default: 1 minute.
  absl::Duration chunk_ttl_grace = absl::Minutes(1);

  // Largest JSON payload accepted by Put and returned by Get, in bytes. Put of a larger payload is
  // ResourceExhausted; a stored entry claiming more is treated as corrupt. Also bounds every
  // allocation a read makes, whatever the stored bytes claim.
  // Default: 64 MiB.
  std::size_t max_payload_size = std::size_t{64} << 20;

  // Validate payloads as JSON (simdjson) before storing them. Turn off only when the producer is
  // trusted and every cycle counts.
  // Default: true.
  bool validate_json = true;

  // Delete the chunks of the entry a Put replaces (best effort, after the new manifest is
  // written) instead of leaving them to expire. Readers that raced with the replacement retry.
  // Default: true.
  bool delete_replaced_chunks = true;

  // How long a GetOrLoad caller waits for another caller's load of the same key before it gets
  // DeadlineExceeded. The loading caller itself is not bounded by this.
  // Default: 30 seconds.
  absl::Duration load_wait_timeout = absl::Seconds(30);
};

}  // namespace chunkcache

#endif  // CHUNKCACHE_OPTIONS_H_
