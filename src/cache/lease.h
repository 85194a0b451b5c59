// The cross-process lease on a key (CacheOptions::lease_ttl): before loading a missing key, a
// process takes the key's lease with Backend::SetIfAbsent; processes that find it taken wait for
// the holder's entry, polling the manifest (lease_poll_initial doubling up to lease_poll_max),
// instead of loading too. A waiter loads by itself when the lease disappears without an entry
// (its holder died or failed) or after lease_ttl. A backend without SetIfAbsent (Unimplemented)
// turns leasing off for good, with one warning to the log.
//
//   internal::Leases leases(options, token, backend, reader, clock, counters, log);
//   internal::Leases::Outcome lease = leases.TakeOrAwait(keys, deadline);
//   if (lease.found.has_value()) return lease.found->bytes;  // the holder stored it
//   ... load and store ...
//   if (lease.held) leases.Release(keys);
//
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_LEASE_H_
#define CHUNKCACHE_SRC_CACHE_LEASE_H_

#include <atomic>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/entry_reader.h"
#include "cache/guarded_backend.h"
#include "cache/rate_limited_log.h"
#include "chunkcache/options.h"
#include "format/keys.h"

namespace chunkcache::internal {

class Leases {
 public:
  struct Outcome {
    std::optional<Found> found;  // the entry another process stored while this one waited
    absl::Time found_read_at = absl::InfinitePast();  // when the read that found it started
    bool held = false;  // this process holds the lease: load, store, release
  };

  // `token` is the value of the leases this object takes (unique to it). Every reference must
  // outlive this object.
  Leases(const CacheOptions& options, std::string token, GuardedBackend& backend,
         EntryReader& reader, const CacheClock& clock, CacheCounters& counters,
         RateLimitedLog& log);
  Leases(const Leases&) = delete;
  Leases& operator=(const Leases&) = delete;

  // lease_ttl is set and the backend has not said it cannot lease.
  bool enabled() const;

  // Takes the key's lease, or waits (until lease_ttl or `deadline`) for the process holding it
  // to store the entry. Loads are left to the caller: with the lease held, or without one when
  // the backend cannot lease or failed, the holder vanished without storing, or the wait ended.
  Outcome TakeOrAwait(const StoredKeys& keys, absl::Time deadline);

  // One attempt at the key's lease: true if taken, false if another process holds it.
  absl::StatusOr<bool> Take(const StoredKeys& keys);

  // Deletes the key's lease, best effort (else it expires with lease_ttl).
  void Release(const StoredKeys& keys);

 private:
  // SetIfAbsent on `lease_key`; on Unimplemented, turns leasing off (and says so, once).
  absl::StatusOr<bool> TakeKey(const std::string& lease_key);

  const CacheOptions& options_;
  const std::string token_;
  GuardedBackend& backend_;
  EntryReader& reader_;
  const CacheClock& clock_;
  CacheCounters& counters_;
  RateLimitedLog& log_;
  std::atomic<bool> unsupported_{false};
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_LEASE_H_
