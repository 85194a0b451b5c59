// chunkcache/options.h — the knobs of a ChunkedCache.
//
// CacheOptions is a plain struct: set the fields you care about and pass it to the ChunkedCache
// constructor. Every field says what it does and its default. ValidateCacheOptions checks a
// configuration up front, so that a service can refuse a bad one at start-up:
//
//   chunkcache::CacheOptions options;
//   options.ttl = absl::Minutes(10);
//   options.soft_ttl = absl::Minutes(5);
//   if (absl::Status s = chunkcache::ValidateCacheOptions(options); !s.ok()) return s;
//   chunkcache::ChunkedCache cache(backend, options);
//
// The constructor cannot fail: a ChunkedCache built with out-of-range values answers every call
// with the same InvalidArgument status.

#ifndef CHUNKCACHE_OPTIONS_H_
#define CHUNKCACHE_OPTIONS_H_

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace chunkcache {

// Longest logical key accepted, in bytes. Longer keys are InvalidArgument.
inline constexpr std::size_t kMaxKeySize = 1024;

// Bounds of CacheOptions::frame_size, compression_workers and decode_workers.
inline constexpr std::size_t kMinFrameSize = std::size_t{64} << 10;
inline constexpr std::size_t kMaxFrameSize = std::size_t{1} << 30;
inline constexpr int kMaxWorkers = 64;

// Smallest chunk_size accepted: a manifest header must fit in one item.
inline constexpr std::size_t kMinChunkSize = 128;

// Severity of a message passed to CacheOptions::log.
enum class LogLevel { kInfo, kWarning, kError };

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

  // Threads that compress one Put. 0: the calling thread validates and compresses. N > 0: N
  // threads of a pool owned by the cache compress the payload's frames in parallel while the
  // calling thread validates the JSON (a one-frame payload of 1 MiB or more is compressed by
  // zstd's own N workers instead); the calling thread compresses too only when no pool thread is
  // free. As with zstd's own workers, N busy threads: more than the cores cost more than they
  // gain. Pays off for payloads of several frames and a spare core. 0 to 64. Default: 0.
  int compression_workers = 0;

  // Threads that help one Get (or GetOrLoad, Refresh) decode. 0: the calling thread verifies
  // and decodes each frame as its bytes arrive. N > 0: up to N threads of a pool owned by the
  // cache decode frames in parallel with the calling thread, which keeps fetching. GetStream
  // always decodes on the calling thread (in order, one frame at a time). 0 to 64. Default: 0.
  int decode_workers = 0;

  // Raw (JSON) bytes per independently compressed zstd frame of a stored payload (docs/FORMAT.md,
  // "Payload"): the unit a reader verifies, decodes in parallel and streams. The writer evens
  // the frames out (a 10.5 MB payload is 6 frames of 1.75 MB) and grows them if the frame table
  // would not fit in one item. Smaller frames stream sooner and spread over more threads, but
  // compress worse: at level 3 on the reference catalogue, 2 MiB costs 0.5 % of stored size
  // against one frame, 1 MiB 1.1 %, 256 KiB 7.8 %. 64 KiB to 1 GiB. Default: 2 MiB.
  std::size_t frame_size = std::size_t{2} << 20;

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

  // ---- Protecting the origin ----------------------------------------------------------------

  // After a load of a key fails (the loader's error, or it threw), GetOrLoad callers of that key
  // in this process get that error (message marked "retry after ...") without calling the loader
  // until a backoff passes: load_retry_initial after the first failure, doubling with each
  // failure in a row up to load_retry_max, each wait drawn at random from [half, all] of it. A
  // successful load resets it. Background refreshes back off the same way. Both must be positive,
  // initial <= max. Defaults: 100 ms and 5 seconds.
  absl::Duration load_retry_initial = absl::Milliseconds(100);
  absl::Duration load_retry_max = absl::Seconds(5);

  // How long a loaded value that could not be stored (the backend failed or refused it) keeps
  // serving GetOrLoad callers of its key in this process, so that an unwell backend does not
  // turn every request into an origin load. Kept within max(l1_capacity_bytes, max_payload_size)
  // bytes over all keys. Zero turns it off. Default: 1 second.
  absl::Duration unstored_hold = absl::Seconds(1);

  // ---- Near cache (L1) ----------------------------------------------------------------------

  // Bytes of decoded payloads kept in this process (payload + key + an overhead per entry of
  // about 500 bytes on 2 CPUs, 1.6 KB on 16 or more: one reference count per CPU stripe, so that
  // hits on different cores touch different cache lines), least recently used evicted first. A
  // payload larger than the whole bound is not kept. 0 turns the near cache off. Default: 0 (off).
  std::size_t l1_capacity_bytes = 0;

  // How long after it was fetched (or last revalidated) an L1 entry is served with no backend
  // call at all. After that, a Get reads only the manifest: the same generation keeps serving the
  // L1 bytes (no chunk download), a new generation is fetched and replaces them. This is also how
  // long a Put or Invalidate by another process may go unseen by this one. Must be less than ttl.
  // Default: 1 second.
  absl::Duration l1_fresh_for = absl::Seconds(1);

  // ---- Stale-while-revalidate ---------------------------------------------------------------

  // Age (since its Put) after which an entry is stale: GetOrLoad still returns it at once, and
  // starts one background refresh of the key through the loader it was given (one at a time per
  // key). Until ttl the stale entry keeps being served, whether refreshes succeed or fail. A
  // refresh first re-reads the manifest and loads nothing if someone refreshed the entry
  // meanwhile; after a failed refresh the key's next one waits for a backoff
  // (load_retry_initial .. load_retry_max), and while another process holds the key's lease, for
  // lease_ttl. Must be less than ttl; zero turns stale-while-revalidate off. Default: zero (off).
  absl::Duration soft_ttl = absl::ZeroDuration();

  // Threads running background refreshes (started on the first refresh).
  // Default: 1.
  int refresh_threads = 1;

  // Refreshes waiting for a thread, at most; a refresh that finds the queue full is dropped
  // (counted in refreshes_dropped) and retried by a later GetOrLoad.
  // Default: 64.
  std::size_t max_queued_refreshes = 64;

  // ---- Cross-process lease ------------------------------------------------------------------

  // With a backend that implements SetIfAbsent (Redis, memory), a GetOrLoad miss first takes a
  // lease on the key for this long; processes that find the lease taken wait for the entry,
  // polling the manifest, instead of loading too. A waiter loads by itself when the lease
  // disappears without an entry (its holder died or failed) or after lease_ttl. Set it above the
  // loader's usual duration. Zero turns the lease off; a backend without SetIfAbsent skips it
  // (and the cache says so once through `log`).
  // Default: zero (off).
  absl::Duration lease_ttl = absl::ZeroDuration();

  // First and longest pause between a lease waiter's polls (doubling from the first).
  // Defaults: 10 ms and 200 ms.
  absl::Duration lease_poll_initial = absl::Milliseconds(10);
  absl::Duration lease_poll_max = absl::Milliseconds(200);

  // ---- Circuit breaker ----------------------------------------------------------------------

  // After this many backend calls in a row fail with Unavailable, DeadlineExceeded,
  // ResourceExhausted or Internal, the backend is skipped for breaker_cooldown: Get, Put and
  // Invalidate fail at once with Unavailable and GetOrLoad serves through the loader. After the
  // cool-down exactly one call (the probe) tries the backend again while every other call keeps
  // being skipped; the probe's success closes the breaker, its failure reopens it at once.
  // 0 turns the breaker off. Default: 0 (off).
  int breaker_failure_threshold = 0;

  // How long an open breaker skips the backend.
  // Default: 5 seconds.
  absl::Duration breaker_cooldown = absl::Seconds(5);

  // ---- Logging ------------------------------------------------------------------------------

  // Receives the library's warnings: corrupt entries read, backend failures answered through the
  // loader, failed background refreshes and stores, the circuit breaker opening. Each kind of
  // message is passed at most once per second (later ones within the second are counted and
  // reported with the next). Messages name keys and statuses, never credentials. Called from the
  // thread that met the condition (a caller's, or a refresh thread): make it thread-safe and
  // quick. Empty means no output at all.
  // Default: empty.
  std::function<void(LogLevel level, std::string_view message)> log;

  // ---- Testing ------------------------------------------------------------------------------

  // The clock for entry ages, the near cache, stale-while-revalidate and the breaker (inject a
  // fake one in tests, together with MemoryBackendOptions::clock). Empty means absl::Now.
  // Default: empty.
  std::function<absl::Time()> clock;
};

// OK if every field of `options` is within its range; otherwise InvalidArgument naming the field
// (or fields) at fault. ChunkedCache applies the same check, plus one of the backend (not null,
// max_item_size() at least kMinChunkSize).
absl::Status ValidateCacheOptions(const CacheOptions& options);

}  // namespace chunkcache

#endif  // CHUNKCACHE_OPTIONS_H_
