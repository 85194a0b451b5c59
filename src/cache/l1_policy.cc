#include "cache/l1_policy.h"

#include <utility>

namespace chunkcache::internal {
namespace {

NearCache::Entry EntryOf(const Found& found, absl::Time validated) {
  return {found.bytes, found.generation,    found.created,
          validated,   found.bytes->size(), found.checksum};
}

// The bytes of a near copy, as a read answers with them.
Found FoundOf(NearCache::Entry&& entry) {
  return Found{std::move(entry.bytes), entry.generation, entry.created, true, entry.checksum};
}

}  // namespace

L1Policy::L1Policy(const CacheOptions& options, const CacheClock& clock, CacheCounters& counters)
    : options_(options),
      clock_(clock),
      counters_(counters),
      cache_(options.l1_capacity_bytes > 0 ? std::make_unique<NearCache>(options.l1_capacity_bytes)
                                           : nullptr) {}

std::optional<Found> L1Policy::FreshHit(std::string_view key) {
  if (cache_ == nullptr) return std::nullopt;
  std::optional<NearCache::Entry> entry = cache_->Lookup(key);
  if (!entry.has_value()) return std::nullopt;
  const absl::Time now = clock_.Now();
  if (now - entry->validated >= options_.l1_fresh_for || now - entry->created >= options_.ttl) {
    return std::nullopt;
  }
  counters_.l1_hits.Add();
  counters_.l1_bytes_returned.Add(entry->size);
  return FoundOf(*std::move(entry));
}

std::optional<NearCache::Entry> L1Policy::Live(std::string_view key, absl::Time now) {
  if (cache_ == nullptr) return std::nullopt;
  std::optional<NearCache::Entry> entry = cache_->Lookup(key);
  if (entry.has_value() && now - entry->created >= options_.ttl) {
    cache_->Erase(key);
    return std::nullopt;
  }
  return entry;
}

std::uint64_t L1Policy::Epoch(std::string_view key) const {
  return cache_ != nullptr ? cache_->Epoch(key) : 0;
}

void L1Policy::AfterRead(std::string_view key, absl::StatusOr<Found>& found,
                         std::optional<NearCache::Entry>& live, std::uint64_t epoch,
                         absl::Time now) {
  if (cache_ == nullptr) return;
  if (found.ok() && found->from_l1) {
    cache_->MarkValidated(key, found->generation, now);
    Add(counters_.l1_revalidations);
  } else if (found.ok()) {
    KeepRead(key, *found, epoch, now);
  } else if (absl::IsNotFound(found.status())) {
    cache_->Erase(key);
  } else if (live.has_value()) {
    // The backend failed: the near copy, younger than ttl, beats failing or loading.
    found = FoundOf(*std::move(live));
  }
}

void L1Policy::KeepRead(std::string_view key, const Found& found, std::uint64_t epoch,
                        absl::Time read_at) {
  if (cache_ == nullptr) return;
  cache_->Insert(key, EntryOf(found, read_at), epoch);
}

void L1Policy::KeepStored(std::string_view key, const Bytes& bytes, const Manifest& stored,
                          std::uint64_t epoch) {
  if (cache_ == nullptr) return;
  const Found found{bytes, stored.generation, absl::FromUnixMillis(stored.created_unix_ms), false,
                    stored.checksum};
  cache_->Insert(key, EntryOf(found, clock_.Now()), epoch, /*is_write=*/true);
}

void L1Policy::DropIfOlder(std::string_view key, const Manifest& current) {
  if (cache_ == nullptr) return;
  std::optional<NearCache::Entry> copy = cache_->Lookup(key);
  if (copy.has_value() &&
      (copy->generation != current.generation || copy->checksum != current.checksum)) {
    cache_->Erase(key);
  }
}

void L1Policy::Erase(std::string_view key) {
  if (cache_ != nullptr) cache_->Erase(key);
}

std::uint64_t L1Policy::evictions() const { return cache_ != nullptr ? cache_->evictions() : 0; }

std::size_t L1Policy::bytes() const { return cache_ != nullptr ? cache_->bytes() : 0; }

}  // namespace chunkcache::internal
