// A cache's calls to its Backend, each guarded the same way: refused at once (DeadlineExceeded)
// when the calling thread's CallDeadline() has passed, refused (Unavailable) while the circuit
// breaker is open, counted (backend_calls, backend_errors by code, bytes read and written) and
// timed (backend_latency); an exception the backend throws becomes an Internal status.
//
//   internal::GuardedBackend backend(std::move(inner), options, clock, counters, log);
//   absl::StatusOr<std::optional<std::string>> manifest = backend.Get(keys.manifest());
//   absl::Status stored = backend.MultiSet(items, options.ttl);
//
// Thread safety: safe for concurrent use (the inner Backend must be, as every Backend is).

#ifndef CHUNKCACHE_SRC_CACHE_GUARDED_BACKEND_H_
#define CHUNKCACHE_SRC_CACHE_GUARDED_BACKEND_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cache/circuit_breaker.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/rate_limited_log.h"
#include "chunkcache/backend.h"
#include "chunkcache/options.h"

namespace chunkcache::internal {

// One value per key asked for; std::nullopt where the key is absent.
using Values = std::vector<std::optional<std::string>>;

class GuardedBackend {
 public:
  // The breaker follows options.breaker_failure_threshold and breaker_cooldown. `clock`,
  // `counters` and `log` must outlive this object. `backend` may be null only if no call is made.
  GuardedBackend(std::shared_ptr<Backend> backend, const CacheOptions& options,
                 const CacheClock& clock, CacheCounters& counters, RateLimitedLog& log);
  GuardedBackend(const GuardedBackend&) = delete;
  GuardedBackend& operator=(const GuardedBackend&) = delete;

  std::size_t max_item_size() const { return backend_->max_item_size(); }

  // Backend::MultiGet; an answer with the wrong number of values is Internal (and counted).
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys);
  // Backend::MultiGetEach. The backend must hand every key over once, in order: anything else is
  // Internal (and counted), and nothing more reaches `sink`. An error `sink` returns is returned
  // as it is and counts neither as a backend error nor against the breaker.
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys, const ItemSink& sink);
  // MultiGet of one key.
  absl::StatusOr<std::optional<std::string>> Get(std::string_view key);
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl);
  absl::Status Delete(absl::Span<const std::string_view> keys);
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl);

  // True while the circuit breaker skips the backend.
  bool breaker_open() const { return breaker_.IsOpen(); }

 private:
  // Runs `call` (a Backend method) with every guard; defined in the .cc, its only user.
  template <typename Call>
  auto Guarded(Call call) -> decltype(call());
  void CountError(const absl::Status& status);

  const std::shared_ptr<Backend> backend_;
  const int breaker_failure_threshold_;
  const absl::Duration breaker_cooldown_;
  CircuitBreaker breaker_;
  CacheCounters& counters_;
  RateLimitedLog& log_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_GUARDED_BACKEND_H_
