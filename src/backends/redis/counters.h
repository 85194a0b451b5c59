// backends/redis/counters.h — the counters behind RedisBackend::Stats(), kept by the backend's
// parts (commands, cluster routing, node pools).
//
//   Counters counters;
//   Counters::Add(counters.round_trips);
//   RedisBackendStats stats = counters.Snapshot();
//
// Thread safety: safe for concurrent use (relaxed atomics: each counter is exact, a snapshot is
// not one instant).

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_COUNTERS_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_COUNTERS_H_

#include <atomic>
#include <cstdint>

#include "chunkcache/redis_backend.h"

namespace chunkcache::redis {

struct Counters {
  using Counter = std::atomic<std::uint64_t>;

  static void Add(Counter& counter, std::uint64_t n = 1) {
    counter.fetch_add(n, std::memory_order_relaxed);
  }

  // Every counter; node_pools is left 0 (it is not a counter).
  RedisBackendStats Snapshot() const {
    const auto get = [](const Counter& counter) { return counter.load(std::memory_order_relaxed); };
    return {.calls = get(calls),
            .round_trips = get(round_trips),
            .commands = get(commands),
            .connections_opened = get(connections_opened),
            .connection_failures = get(connection_failures),
            .connections_discarded = get(connections_discarded),
            .redirects = get(redirects),
            .slot_map_refreshes = get(slot_map_refreshes),
            .failover_retries = get(failover_retries),
            .errors = get(errors)};
  }

  // The fields of RedisBackendStats, each described there.
  Counter calls{0}, round_trips{0}, commands{0}, connections_opened{0}, connection_failures{0},
      connections_discarded{0}, redirects{0}, slot_map_refreshes{0}, failover_retries{0}, errors{0};
};

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_COUNTERS_H_
