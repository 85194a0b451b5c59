// chunkcache/stats.h — a snapshot of what a ChunkedCache has done.
//
// ChunkedCache::Stats() returns a CacheStats by value: plain counters since the cache was created
// and latency summaries. Counters are read one by one without a global lock, so a snapshot taken
// under load may be off by the operations in flight.

#ifndef CHUNKCACHE_STATS_H_
#define CHUNKCACHE_STATS_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace chunkcache {

// Summary of a latency distribution. Percentiles are upper bounds of a log-linear histogram
// bucket (at most 12.5 % above the true value); all are zero when count is zero.
// The upper bounds of the cumulative buckets in LatencyStats::buckets (Prometheus-style "le"
// bounds): 50 us to 10 s in 1-2.5-5 steps, 30 s, then +Inf (absl::InfiniteDuration()).
inline constexpr std::size_t kLatencyBuckets = 19;
std::array<absl::Duration, kLatencyBuckets> LatencyBucketBounds();

struct LatencyStats {
  std::uint64_t count = 0;            // operations measured
  absl::Duration sum;                 // of all the measured latencies
  absl::Duration mean;                // arithmetic mean
  absl::Duration p50, p90, p99, max;  // percentiles and the largest value seen
  // buckets[i]: operations that took at most LatencyBucketBounds()[i] (cumulative; the last is
  // count). A value is counted by the upper bound of its histogram bucket, so it may land one
  // bound late when it lies within 12.5 % below a bound.
  std::array<std::uint64_t, kLatencyBuckets> buckets{};
};

struct CacheStats {
  // Operations.
  // Reads by Get, GetStream and GetOrLoad: near-cache hits, and reads that went to the backend,
  // of which GetOrLoad makes one per in-process flight (its leader's; the callers that shared the
  // flight are counted in coalesced or wait_timeouts). Not counted: GetCompressed (see
  // compressed_gets), calls refused before reading (bad key, deadline passed), and the reads of
  // background refreshes and lease waits.
  std::uint64_t gets = 0;
  std::uint64_t hits = 0;         // reads answered with a verified entry (near-cache hits too)
  std::uint64_t misses = 0;       // reads that found no usable entry (absent or corrupt)
  std::uint64_t puts = 0;         // Put calls, and stores done by GetOrLoad after a load
  std::uint64_t put_errors = 0;   // Puts, and stores after a load, that failed
  std::uint64_t invalidates = 0;  // Invalidate calls

  // Loading (GetOrLoad).
  std::uint64_t loads = 0;            // loader calls
  std::uint64_t load_errors = 0;      // loader calls that returned an error or threw
  std::uint64_t coalesced = 0;        // callers that shared another caller's flight
  std::uint64_t wait_timeouts = 0;    // callers that gave up waiting (load_wait_timeout)
  std::uint64_t fallbacks = 0;        // backend failures answered through the loader
  std::uint64_t load_backoffs = 0;    // callers answered with a recent load's failure, no load
                                      // (load_retry_initial / load_retry_max)
  std::uint64_t unstored_served = 0;  // callers answered with a loaded value the backend did
                                      // not store, no load (unstored_hold)

  // Near cache (L1) and stale-while-revalidate.
  std::uint64_t l1_hits = 0;             // reads answered from L1 without any backend call
  std::uint64_t l1_revalidations = 0;    // reads that checked the manifest and kept the L1 bytes
  std::uint64_t l1_evictions = 0;        // entries evicted to stay within l1_capacity_bytes
  std::uint64_t l1_bytes = 0;            // bytes charged to L1 now
  std::uint64_t stale_served = 0;        // reads that returned an entry older than soft_ttl
  std::uint64_t refreshes = 0;           // background refreshes run
  std::uint64_t refresh_errors = 0;      // of those, the ones whose load or store failed
  std::uint64_t refreshes_dropped = 0;   // refreshes not run: the queue held
                                         // max_queued_refreshes, or no thread could start
  std::uint64_t refreshes_skipped = 0;   // refreshes that found the entry fresh again (someone
                                         // else refreshed it): no load
  std::uint64_t refreshes_deferred = 0;  // stale reads that queued no refresh: the key's
                                         // refreshes back off after a failure or a held lease
  // Refreshes not run because another process held the key's lease (it is refreshing the key):
  // with a lease, every process of the fleet but one counts these.
  std::uint64_t refreshes_lease_held = 0;

  // Cross-process lease.
  std::uint64_t leases_won = 0;        // misses that took the lease and loaded
  std::uint64_t leases_waited = 0;     // misses that found the lease taken and waited
  std::uint64_t lease_wait_hits = 0;   // of those, the ones the holder's entry answered
  std::uint64_t lease_wait_loads = 0;  // of those, the ones that loaded after all (holder gone)

  // Circuit breaker.
  bool breaker_open = false;             // the breaker skips the backend now
  std::uint64_t breaker_opens = 0;       // times it opened
  std::uint64_t breaker_rejections = 0;  // backend calls skipped while it was open

  // Compressed pass-through.
  std::uint64_t compressed_gets = 0;  // GetCompressed calls that returned an entry

  // Integrity.
  std::uint64_t corrupt_reads = 0;  // entries found but unusable: missing chunk, bad checksum...
  std::uint64_t torn_retries = 0;   // reads retried because a writer replaced the entry meanwhile

  // Backend traffic.
  std::uint64_t backend_calls = 0;   // MultiGet/MultiSet/Delete/SetIfAbsent calls (round trips)
  std::uint64_t backend_errors = 0;  // of those, the ones that failed
  std::uint64_t chunks_read = 0;     // chunk items fetched (manifests not included)
  std::uint64_t chunks_written = 0;  // chunk items stored (manifests not included)

  // Bytes.
  std::uint64_t bytes_put_raw = 0;   // JSON bytes accepted by Put
  std::uint64_t bytes_written = 0;   // bytes stored in the backend (manifests and chunks)
  std::uint64_t bytes_read = 0;      // bytes fetched from the backend
  std::uint64_t bytes_returned = 0;  // JSON bytes handed to callers by hits

  // Backend errors by status code: backend_errors_by_code[static_cast<int>(code)].
  std::array<std::uint64_t, 17> backend_errors_by_code{};

  // Latencies.
  LatencyStats get_latency;          // reads that went to the backend (not near-cache hits)
  LatencyStats get_or_load_latency;  // GetOrLoad calls past the near cache, waiting and loading
                                     // included
  LatencyStats put_latency;          // Put (validate, compress, store), and stores after a load
  LatencyStats load_latency;         // loader calls
  LatencyStats backend_latency;      // each backend call
};

// `now` minus `before` for every counter, so that a periodic exporter can report what happened
// in the interval (CloudWatch sums values). Gauges (l1_bytes, breaker_open) and latency summaries
// are taken from `now` (they cover the cache's whole life).
CacheStats StatsDelta(const CacheStats& now, const CacheStats& before);

}  // namespace chunkcache

#endif  // CHUNKCACHE_STATS_H_
