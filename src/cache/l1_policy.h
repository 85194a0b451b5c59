// When the near cache (L1) may answer for a ChunkedCache, and what reads and stores leave in it:
//  - a copy younger than l1_fresh_for (since it was fetched or last confirmed) and than ttl is
//    served with no backend call at all (a fresh hit);
//  - an older copy is confirmed by the manifest alone when the entry has not changed (a
//    revalidation), replaced by what the read found when it has, dropped on a miss, and served
//    when the backend fails, until ttl;
//  - a read or load that started before this process wrote the key (its epoch moved) inserts
//    nothing.
//
//   internal::L1Policy l1(options, clock, counters);
//   if (std::optional<internal::Found> hit = l1.FreshHit(key)) return hit->bytes;
//   std::optional<internal::NearCache::Entry> live = l1.Live(key, now);
//   const std::uint64_t epoch = l1.Epoch(key);
//   absl::StatusOr<internal::Found> found = reader.Read(keys, live ? &*live : nullptr);
//   l1.AfterRead(key, found, live, epoch, now);
//
// With l1_capacity_bytes 0 there is no near cache: nothing is kept and nothing answers.
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_L1_POLICY_H_
#define CHUNKCACHE_SRC_CACHE_L1_POLICY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/entry_reader.h"
#include "cache/near_cache.h"
#include "chunkcache/options.h"
#include "format/manifest.h"

namespace chunkcache::internal {

class L1Policy {
 public:
  // Every reference must outlive the policy.
  L1Policy(const CacheOptions& options, const CacheClock& clock, CacheCounters& counters);
  L1Policy(const L1Policy&) = delete;
  L1Policy& operator=(const L1Policy&) = delete;

  // The near copy of `key` if it may be served with no backend call at all; counted as an L1 hit.
  std::optional<Found> FreshHit(std::string_view key);

  // The near copy of `key` unless it has outlived ttl (then it is dropped).
  std::optional<NearCache::Entry> Live(std::string_view key, absl::Time now);

  // The key's write count (NearCache::Epoch): read it before a backend read or a load whose result
  // may be inserted. 0 without a near cache.
  std::uint64_t Epoch(std::string_view key) const;

  // Settles the near copy after a backend read of `key` that started at `now`, when the copy was
  // `live` and the key's epoch `epoch`: confirms, replaces or drops it. If the backend failed,
  // `found` becomes the live copy.
  void AfterRead(std::string_view key, absl::StatusOr<Found>& found,
                 std::optional<NearCache::Entry>& live, std::uint64_t epoch, absl::Time now);

  // Keeps `found`, an entry a backend read of `key` that started at `read_at` fetched (not the
  // near copy), unless this process wrote the key since `epoch` was read. (AfterRead does this
  // for the reads it settles.)
  void KeepRead(std::string_view key, const Found& found, std::uint64_t epoch, absl::Time read_at);

  // Keeps `bytes`, which this process just stored as the entry `stored`, unless it wrote the key
  // since `epoch` was read.
  void KeepStored(std::string_view key, const Bytes& bytes, const Manifest& stored,
                  std::uint64_t epoch);

  // Drops the near copy of `key` if it is of another entry than `current`: the next read fetches
  // the current one.
  void DropIfOlder(std::string_view key, const Manifest& current);

  // Drops the near copy of `key` and advances its epoch.
  void Erase(std::string_view key);

  std::uint64_t evictions() const;
  std::size_t bytes() const;

 private:
  const CacheOptions& options_;
  const CacheClock& clock_;
  CacheCounters& counters_;
  const std::unique_ptr<NearCache> cache_;  // null when off
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_L1_POLICY_H_
