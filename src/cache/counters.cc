#include "cache/counters.h"

#include <cstddef>

namespace chunkcache::internal {
namespace {

std::uint64_t Value(const std::atomic<std::uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

}  // namespace

void CacheCounters::Snapshot(CacheStats& s) const {
  const std::uint64_t l1_hit_count = l1_hits.Value();
  s.gets = Value(gets) + l1_hit_count;
  s.hits = Value(hits) + l1_hit_count;
  s.misses = Value(misses);
  s.puts = Value(puts);
  s.put_errors = Value(put_errors);
  s.invalidates = Value(invalidates);
  s.loads = Value(loads);
  s.load_errors = Value(load_errors);
  s.coalesced = Value(coalesced);
  s.wait_timeouts = Value(wait_timeouts);
  s.fallbacks = Value(fallbacks);
  s.l1_hits = l1_hit_count;
  s.l1_revalidations = Value(l1_revalidations);
  s.stale_served = Value(stale_served);
  s.refreshes = Value(refreshes);
  s.refresh_errors = Value(refresh_errors);
  s.refreshes_dropped = Value(refreshes_dropped);
  s.refreshes_lease_held = Value(refreshes_lease_held);
  s.refreshes_skipped = Value(refreshes_skipped);
  s.refreshes_deferred = Value(refreshes_deferred);
  s.load_backoffs = Value(load_backoffs);
  s.unstored_served = Value(unstored_served);
  s.leases_won = Value(leases_won);
  s.leases_waited = Value(leases_waited);
  s.lease_wait_hits = Value(lease_wait_hits);
  s.lease_wait_loads = Value(lease_wait_loads);
  s.breaker_opens = Value(breaker_opens);
  s.breaker_rejections = Value(breaker_rejections);
  s.compressed_gets = Value(compressed_gets);
  s.corrupt_reads = Value(corrupt_reads);
  s.torn_retries = Value(torn_retries);
  s.backend_calls = Value(backend_calls);
  s.backend_errors = Value(backend_errors);
  s.chunks_read = Value(chunks_read);
  s.chunks_written = Value(chunks_written);
  s.bytes_put_raw = Value(bytes_put_raw);
  s.bytes_written = Value(bytes_written);
  s.bytes_read = Value(bytes_read);
  s.bytes_returned = Value(bytes_returned) + l1_bytes_returned.Value();
  for (std::size_t i = 0; i < s.backend_errors_by_code.size(); ++i) {
    s.backend_errors_by_code[i] = Value(backend_errors_by_code[i]);
  }
  s.get_latency = get_latency.Summary();
  s.get_or_load_latency = get_or_load_latency.Summary();
  s.put_latency = put_latency.Summary();
  s.load_latency = load_latency.Summary();
  s.backend_latency = backend_latency.Summary();
}

}  // namespace chunkcache::internal
