#include "cache/circuit_breaker.h"

namespace chunkcache::internal {

bool CircuitBreaker::IsBackendFailure(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsResourceExhausted(status) || absl::IsInternal(status);
}

CircuitBreaker::Gate CircuitBreaker::Pass() {
  if (!enabled() || failures_in_a_row_.load(std::memory_order_relaxed) < threshold_) {
    return Gate::kClosed;
  }
  if (absl::ToUnixNanos(clock_.Now()) < open_until_ns_.load(std::memory_order_relaxed)) {
    return Gate::kReject;
  }
  return probe_in_flight_.exchange(true, std::memory_order_acq_rel) ? Gate::kReject : Gate::kProbe;
}

std::optional<int> CircuitBreaker::Record(const absl::Status& status, Gate gate) {
  if (!enabled()) return std::nullopt;
  const bool probe = gate == Gate::kProbe;
  if (!IsBackendFailure(status)) {
    failures_in_a_row_.store(0, std::memory_order_relaxed);
    if (probe) probe_in_flight_.store(false, std::memory_order_release);
    return std::nullopt;
  }
  const int failures = failures_in_a_row_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::optional<int> opened;
  if (probe || failures >= threshold_) {
    open_until_ns_.store(absl::ToUnixNanos(clock_.Now() + cooldown_), std::memory_order_relaxed);
    opened = failures;
  }
  if (probe) probe_in_flight_.store(false, std::memory_order_release);
  return opened;
}

bool CircuitBreaker::IsOpen() const {
  return failures_in_a_row_.load(std::memory_order_relaxed) >= threshold_ &&
         (absl::ToUnixNanos(clock_.Now()) < open_until_ns_.load(std::memory_order_relaxed) ||
          probe_in_flight_.load(std::memory_order_relaxed));
}

}  // namespace chunkcache::internal
