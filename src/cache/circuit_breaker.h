// The circuit breaker in front of a cache's backend (CacheOptions::breaker_failure_threshold and
// breaker_cooldown). Closed: calls pass. After `failure_threshold` failures in a row that say the
// backend is unwell (IsBackendFailure), it opens: calls are rejected until `cooldown` has passed.
// Then it is half-open: exactly one call, the probe, passes while the others are still rejected;
// the probe's success closes the breaker, its failure opens it again at once.
//
//   internal::CircuitBreaker breaker(3, absl::Seconds(5), clock);
//   const internal::CircuitBreaker::Gate gate = breaker.Pass();
//   if (gate == internal::CircuitBreaker::Gate::kReject) return absl::UnavailableError(...);
//   absl::Status status = backend->MultiSet(items, ttl);
//   if (std::optional<int> opened = breaker.Record(status, gate)) Log(*opened, status);
//
// A threshold of 0 turns it off: Pass() is always kClosed and it never opens.
// Thread safety: safe for concurrent use (atomics).

#ifndef CHUNKCACHE_SRC_CACHE_CIRCUIT_BREAKER_H_
#define CHUNKCACHE_SRC_CACHE_CIRCUIT_BREAKER_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache/clock.h"

namespace chunkcache::internal {

class CircuitBreaker {
 public:
  // What the breaker lets a call do.
  enum class Gate {
    kClosed,  // pass
    kProbe,   // pass, as the half-open breaker's one call: report its outcome with Record
    kReject,  // do not call the backend
  };

  // `clock` must outlive the breaker.
  CircuitBreaker(int failure_threshold, absl::Duration cooldown, const CacheClock& clock)
      : threshold_(failure_threshold), cooldown_(cooldown), clock_(clock) {}
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  bool enabled() const { return threshold_ > 0; }

  // Decides whether a call may go to the backend now.
  Gate Pass();

  // Records the outcome of a call that `gate` let through. If it opened the breaker, returns the
  // failures in a row it counted.
  std::optional<int> Record(const absl::Status& status, Gate gate);

  // True while calls are rejected: open, or half-open with the probe under way.
  bool IsOpen() const;

  // Failures that say the backend is unwell rather than the call being wrong: Unavailable,
  // DeadlineExceeded, ResourceExhausted, Internal.
  static bool IsBackendFailure(const absl::Status& status);

 private:
  const int threshold_;
  const absl::Duration cooldown_;
  const CacheClock& clock_;
  std::atomic<int> failures_in_a_row_{0};
  std::atomic<std::int64_t> open_until_ns_{std::numeric_limits<std::int64_t>::min()};
  std::atomic<bool> probe_in_flight_{false};  // the half-open breaker's one call is under way
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_CIRCUIT_BREAKER_H_
