// The clock of a ChunkedCache and its parts: entry ages, the near cache, stale-while-revalidate,
// backoffs and the circuit breaker read it. CacheOptions::clock when set (tests inject a fake
// one); otherwise the coarse system clock (a few ms of resolution, ample for TTLs): a vDSO read
// with no lock, where absl::Now() can take a process-wide spin lock that concurrent near-cache
// hits would fight over.
//
//   const CacheClock clock(options.clock);
//   if (clock.Now() - entry.created >= options.ttl) ...
//
// Thread safety: Now() may be called from any number of threads (a fake clock must allow it).

#ifndef CHUNKCACHE_SRC_CACHE_CLOCK_H_
#define CHUNKCACHE_SRC_CACHE_CLOCK_H_

#include <time.h>

#include <functional>
#include <utility>

#include "absl/time/time.h"

namespace chunkcache::internal {

class CacheClock {
 public:
  // `fake` may be empty: then the coarse system clock.
  explicit CacheClock(std::function<absl::Time()> fake) : fake_(std::move(fake)) {}

  absl::Time Now() const {
    if (fake_) return fake_();
    timespec now;
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    return absl::TimeFromTimespec(now);
  }

 private:
  const std::function<absl::Time()> fake_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_CLOCK_H_
