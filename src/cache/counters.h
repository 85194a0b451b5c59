// The counters and latency histograms behind CacheStats, which every part of a ChunkedCache bumps
// as it works, and the timer that feeds the histograms.
//
//   internal::CacheCounters counters;
//   internal::Add(counters.puts);
//   { internal::ScopedTimer timer(&counters.put_latency); Store(...); }
//   CacheStats stats;
//   counters.Snapshot(stats);  // the near cache's gauges and the breaker's state are the caller's
//
// Thread safety: every counter and histogram may be bumped from any number of threads at once
// (relaxed atomics). A snapshot reads them one by one without a global lock, so under load it
// may be off by the operations in flight.

#ifndef CHUNKCACHE_SRC_CACHE_COUNTERS_H_
#define CHUNKCACHE_SRC_CACHE_COUNTERS_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/stats.h"
#include "internal/striped_counter.h"
#include "metrics/latency_histogram.h"

namespace chunkcache::internal {

// Each field counts what the CacheStats field of the same name describes.
struct CacheCounters {
  std::atomic<std::uint64_t> gets{0}, hits{0}, misses{0}, puts{0}, put_errors{0}, invalidates{0};
  std::atomic<std::uint64_t> loads{0}, load_errors{0}, coalesced{0}, wait_timeouts{0};
  std::atomic<std::uint64_t> fallbacks{0}, corrupt_reads{0}, torn_retries{0};
  std::atomic<std::uint64_t> backend_calls{0}, backend_errors{0}, chunks_read{0}, chunks_written{0};
  std::atomic<std::uint64_t> bytes_put_raw{0}, bytes_written{0}, bytes_read{0}, bytes_returned{0};
  std::atomic<std::uint64_t> l1_revalidations{0}, stale_served{0}, refreshes{0}, refresh_errors{0},
      refreshes_dropped{0};
  std::atomic<std::uint64_t> leases_won{0}, leases_waited{0}, lease_wait_hits{0},
      lease_wait_loads{0};
  std::atomic<std::uint64_t> breaker_opens{0}, breaker_rejections{0}, compressed_gets{0};
  std::atomic<std::uint64_t> load_backoffs{0}, unstored_served{0}, refreshes_skipped{0},
      refreshes_deferred{0}, refreshes_lease_held{0};
  std::array<std::atomic<std::uint64_t>, 17> backend_errors_by_code{};
  // Bumped by every near-cache hit (which is also a get, a hit and bytes returned): striped, so
  // concurrent hits do not share a cache line.
  StripedCounter l1_hits, l1_bytes_returned;

  LatencyHistogram get_latency, get_or_load_latency, put_latency, load_latency, backend_latency;

  // Fills every field of `stats` but the near cache's gauges (l1_evictions, l1_bytes) and
  // breaker_open, which are left as they are.
  void Snapshot(CacheStats& stats) const;
};

inline void Add(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

// Records the time from its construction to its destruction (absl::Now()) into a histogram.
class ScopedTimer {
 public:
  explicit ScopedTimer(LatencyHistogram* histogram) : histogram_(histogram), start_(absl::Now()) {}
  ~ScopedTimer() { histogram_->Record(absl::Now() - start_); }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  LatencyHistogram* const histogram_;
  const absl::Time start_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_COUNTERS_H_
