#include "cache/lease.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace chunkcache::internal {

Leases::Leases(const CacheOptions& options, std::string token, GuardedBackend& backend,
               EntryReader& reader, const CacheClock& clock, CacheCounters& counters,
               RateLimitedLog& log)
    : options_(options),
      token_(std::move(token)),
      backend_(backend),
      reader_(reader),
      clock_(clock),
      counters_(counters),
      log_(log) {}

bool Leases::enabled() const {
  return options_.lease_ttl > absl::ZeroDuration() && !unsupported_.load(std::memory_order_relaxed);
}

Leases::Outcome Leases::TakeOrAwait(const StoredKeys& keys, absl::Time deadline) {
  if (unsupported_.load(std::memory_order_relaxed)) return {};
  const std::string lease_key = keys.Lease();
  absl::StatusOr<bool> taken = TakeKey(lease_key);
  if (!taken.ok()) return {};
  if (*taken) {
    Add(counters_.leases_won);
    return {.found = std::nullopt, .found_read_at = absl::InfinitePast(), .held = true};
  }
  Add(counters_.leases_waited);
  const absl::Time give_up = std::min(absl::Now() + options_.lease_ttl, deadline);
  absl::Duration pause = options_.lease_poll_initial;
  while (true) {
    absl::SleepFor(std::min(pause, std::max(give_up - absl::Now(), absl::ZeroDuration())));
    pause = std::min(pause * 2, options_.lease_poll_max);
    const absl::Time read_at = clock_.Now();
    absl::StatusOr<Found> found = reader_.Read(keys, nullptr);
    if (found.ok()) {
      Add(counters_.lease_wait_hits);
      return {.found = *std::move(found), .found_read_at = read_at, .held = false};
    }
    if (!absl::IsNotFound(found.status())) return {};  // the backend failed: load without it
    taken = TakeKey(lease_key);
    if (!taken.ok() || *taken || absl::Now() >= give_up) {
      Add(counters_.lease_wait_loads);
      return {.found = std::nullopt,
              .found_read_at = absl::InfinitePast(),
              .held = taken.ok() && *taken};
    }
  }
}

absl::StatusOr<bool> Leases::Take(const StoredKeys& keys) { return TakeKey(keys.Lease()); }

absl::StatusOr<bool> Leases::TakeKey(const std::string& lease_key) {
  absl::StatusOr<bool> taken = backend_.SetIfAbsent(lease_key, token_, options_.lease_ttl);
  if (absl::IsUnimplemented(taken.status()) &&
      !unsupported_.exchange(true, std::memory_order_relaxed)) {
    log_.Warn(RateLimitedLog::kLease, [&] {
      return absl::StrCat(
          "chunkcache: lease_ttl is set, but the backend has no SetIfAbsent, so the "
          "cross-process lease is off: every process loads a missing key itself (",
          taken.status().message(), ")");
    });
  }
  return taken;
}

void Leases::Release(const StoredKeys& keys) {
  const std::string lease_key = keys.Lease();
  const std::string_view lease_view = lease_key;
  backend_.Delete({&lease_view, 1}).IgnoreError();
}

}  // namespace chunkcache::internal
