// Randomised exponential backoff, shared by the retrying decorator, the Momento backend and the
// cache's failed-load memo.
//
//   absl::Duration wait = chunkcache::internal::FullJitter(
//       chunkcache::internal::ExponentialCeiling(attempt, base, cap), bitgen);

#ifndef CHUNKCACHE_SRC_INTERNAL_BACKOFF_H_
#define CHUNKCACHE_SRC_INTERNAL_BACKOFF_H_

#include <algorithm>
#include <cstdint>

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace chunkcache::internal {

// min(cap, base * 2^(attempt-1)) for attempt >= 1 (base for attempt <= 1), without overflow.
inline absl::Duration ExponentialCeiling(int attempt, absl::Duration base, absl::Duration cap) {
  absl::Duration ceiling = base;
  for (int i = 1; i < attempt && ceiling < cap; ++i) ceiling *= 2;
  return std::min(ceiling, cap);
}

// "Full jitter": uniform in [0, ceiling], to the nanosecond. Callers that failed together do not
// retry together. `bitgen` is the caller's (absl::BitGen is not thread-safe: one per thread, or
// one under the caller's lock).
template <typename URBG>
absl::Duration FullJitter(absl::Duration ceiling, URBG& bitgen) {
  if (ceiling <= absl::ZeroDuration()) return absl::ZeroDuration();
  const std::int64_t ns = absl::ToInt64Nanoseconds(ceiling);
  return absl::Nanoseconds(absl::Uniform<std::int64_t>(absl::IntervalClosed, bitgen, 0, ns));
}

// "Equal jitter": uniform in [ceiling/2, ceiling]. At least half the backoff always passes, so a
// bound on attempts per unit of time holds, while many processes still spread out.
template <typename URBG>
absl::Duration EqualJitter(absl::Duration ceiling, URBG& bitgen) {
  if (ceiling <= absl::ZeroDuration()) return absl::ZeroDuration();
  const std::int64_t ns = absl::ToInt64Nanoseconds(ceiling);
  return absl::Nanoseconds(
      absl::Uniform<std::int64_t>(absl::IntervalClosed, bitgen, ns - ns / 2, ns));
}

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_BACKOFF_H_
