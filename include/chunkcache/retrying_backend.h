// chunkcache/retrying_backend.h — a Backend decorator that retries transient failures.
//
// RetryingBackend wraps an inner Backend and calls it again, after a randomised exponential
// backoff ("full jitter"), when a call fails with a transient error: Unavailable (a server down or
// restarting), DeadlineExceeded (a slow reply) or ResourceExhausted (throttling). Use it in front
// of a network backend whose failures come in short bursts; the memory backend never needs it.
//
//   absl::StatusOr<std::shared_ptr<chunkcache::RedisBackend>> redis =
//       chunkcache::NewRedisBackend({});
//   if (!redis.ok()) return redis.status();
//   absl::StatusOr<std::shared_ptr<chunkcache::RetryingBackend>> retrying =
//       chunkcache::NewRetryingBackend(*redis, {.max_attempts = 5});
//   if (!retrying.ok()) return retrying.status();
//   chunkcache::ChunkedCache cache(*retrying);
//
// MultiGet, MultiSet and Delete are idempotent and are retried. SetIfAbsent is not: when a reply
// is lost after the store succeeded, a retry would find the key present and wrongly report
// false, so SetIfAbsent is forwarded exactly once. MultiGetEach is retried only until its first
// item is handed over (the sink must not see an index twice): a failure after that, and any error
// the sink returns, is returned as is. max_item_size() forwards to the inner backend.
//
// When a call gives up, it returns the last error's code with a message that says how many
// attempts were made (and the inner message), so a throttled backend stays ResourceExhausted and
// an unreachable one Unavailable.
//
// Thread safety: a RetryingBackend is safe for concurrent use by any number of threads, provided
// the inner backend is (every Backend must be) and the injected sleep and clock functions are.

#ifndef CHUNKCACHE_RETRYING_BACKEND_H_
#define CHUNKCACHE_RETRYING_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"

namespace chunkcache {

struct RetryingBackendOptions {
  // Attempts per call, the first included; 1 disables retries. Must be at least 1.
  // Default: 4.
  int max_attempts = 4;

  // Backoff before retry n (1-based) is uniformly random in [0, min(backoff_cap, backoff_base *
  // 2^(n-1))] ("full jitter": concurrent callers that failed together do not retry together).
  // Neither may be negative, and backoff_cap may not be below backoff_base.
  // Defaults: 10 milliseconds and 1 second.
  absl::Duration backoff_base = absl::Milliseconds(10);
  absl::Duration backoff_cap = absl::Seconds(1);

  // Time allowed for one call, all its attempts and backoffs included, measured from its start.
  // A retry whose backoff would end at or past it is not made: the call gives up and returns the
  // last error instead. An attempt in progress is not interrupted (bound it with the inner
  // backend's own timeouts). Must be positive; absl::InfiniteDuration() means no limit.
  // Default: 5 seconds.
  absl::Duration deadline = absl::Seconds(5);

  // Status codes that are retried; any other error is returned at once. kOk may not appear.
  // Default: Unavailable, DeadlineExceeded, ResourceExhausted.
  std::vector<absl::StatusCode> retry_on = {absl::StatusCode::kUnavailable,
                                            absl::StatusCode::kDeadlineExceeded,
                                            absl::StatusCode::kResourceExhausted};

  // Waits for the given backoff. Called from many threads at once, so it must be thread-safe.
  // Meant for tests, which can then retry without sleeping (record the backoffs, advance a fake
  // clock).
  // Default: empty, meaning absl::SleepFor.
  std::function<void(absl::Duration)> sleep;

  // Time source for the deadline. Called from many threads at once, so it must be thread-safe.
  // Meant for tests, together with `sleep`.
  // Default: empty, meaning absl::Now.
  std::function<absl::Time()> clock;
};

// Counters of a RetryingBackend since its creation. Read one by one without a lock, so a
// snapshot taken under concurrent use may be off by the calls in flight.
struct RetryingBackendStats {
  std::uint64_t calls = 0;     // MultiGet/MultiGetEach/MultiSet/Delete/SetIfAbsent calls
  std::uint64_t attempts = 0;  // calls made to the inner backend, first attempts included
  std::uint64_t retries = 0;   // attempts after the first (attempts - calls)
  std::uint64_t gave_up = 0;   // calls that returned a retryable error: out of attempts or time
  std::uint64_t succeeded_after_retry = 0;  // calls that failed at first and then succeeded
};

// Retries the idempotent calls of an inner Backend; see the top of this file. MultiGet, MultiSet
// and Delete are retried on the codes of retry_on. SetIfAbsent is forwarded once and its result
// returned unchanged; it counts in calls and attempts only.
//
// Thread safety: safe for concurrent use.
class RetryingBackend : public Backend {
 public:
  virtual RetryingBackendStats Stats() const = 0;

  // The options in force: those given, with `sleep` and `clock` filled in when empty.
  virtual const RetryingBackendOptions& options() const = 0;

  virtual const std::shared_ptr<Backend>& inner() const = 0;
};

// Returns a RetryingBackend over `inner`. InvalidArgument for a null `inner` or bad options:
// max_attempts below 1, a negative backoff, backoff_cap below backoff_base, a non-positive
// deadline, or kOk in retry_on.
absl::StatusOr<std::shared_ptr<RetryingBackend>> NewRetryingBackend(
    std::shared_ptr<Backend> inner, RetryingBackendOptions options = {});

}  // namespace chunkcache

#endif  // CHUNKCACHE_RETRYING_BACKEND_H_
