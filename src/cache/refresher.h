// The stale-while-revalidate refresh pool: a bounded queue of background refreshes and the threads
// that run them (started on the first refresh, up to CacheOptions::refresh_threads). At most one
// refresh per key is queued or running. A refresh that fails makes the key's next ones back off
// (load_retry_initial doubling up to load_retry_max); one that finds another process refreshing
// the key defers the key's next ones; a refresh that finds the queue full, or no thread, is
// dropped. Exceptions a refresh throws are errors of that refresh, never escape to the thread.
//
//   internal::Refresher refresher(options, [&](const internal::RefreshTask& task) {
//     return RefreshOne(task);  // re-read, load, store: a RefreshOutcome
//   }, clock, counters, log);
//   refresher.Schedule(key, loader);  // from a stale read; returns at once
//   refresher.Stop();                 // before what the run function uses is destroyed
//
// Fork: a child inherits the queue but none of the threads; it forgets both (never joining a
// thread of another process) and starts its own threads on its first refresh.
// Lifetime: a task's loader may hold the last reference to the cache that owns this refresher;
// the cache is then destroyed on the refresh thread, whose Stop detaches that thread, which
// returns without touching the refresher again.
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_REFRESHER_H_
#define CHUNKCACHE_SRC_CACHE_REFRESHER_H_

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/load_memo.h"
#include "cache/rate_limited_log.h"
#include "chunkcache/chunked_cache.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

// A background refresh: the key and the loader a GetOrLoad gave for it.
struct RefreshTask {
  std::string key;
  Loader loader;
};

// What running one refresh came to.
struct RefreshOutcome {
  // Not OK: the refresh failed (counted in refresh_errors, logged); the key's refreshes back off.
  absl::Status status = absl::OkStatus();
  // Another process is refreshing the key: no refresh of it before then.
  std::optional<absl::Time> defer_until = std::nullopt;
};

class Refresher {
 public:
  using Run = std::function<RefreshOutcome(const RefreshTask&)>;

  // Reads refresh_threads, max_queued_refreshes, load_retry_initial and load_retry_max. `run`
  // refreshes one key on a refresh thread. Every reference must outlive the refresher.
  Refresher(const CacheOptions& options, Run run, const CacheClock& clock, CacheCounters& counters,
            RateLimitedLog& log);
  // Stop().
  ~Refresher();
  Refresher(const Refresher&) = delete;
  Refresher& operator=(const Refresher&) = delete;

  // Queues one refresh of `key` unless one is queued or running already, the key's refreshes are
  // backing off (counted in refreshes_deferred), the queue is full or no thread can be started
  // (counted in refreshes_dropped), or the refresher is stopping.
  void Schedule(std::string_view key, const Loader& loader);

  // Drops the queued refreshes and waits for those under way; nothing runs after it. Idempotent.
  void Stop();

 private:
  void Loop();
  // Runs one task; never lets anything escape to the thread.
  void RunTask(const RefreshTask& task);
  void AdoptAfterForkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_threads_;
  const std::size_t max_queued_;
  const Run run_;
  const CacheClock& clock_;
  CacheCounters& counters_;
  RateLimitedLog& log_;
  LoadMemo backoff_;  // keys whose refreshes back off (failures, leases held elsewhere)

  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<RefreshTask> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> refreshing_ ABSL_GUARDED_BY(mu_);  // queued or running
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  pid_t pid_ ABSL_GUARDED_BY(mu_) = getpid();  // the process owning the threads
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_REFRESHER_H_
