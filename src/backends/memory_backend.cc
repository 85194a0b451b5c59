#include "chunkcache/memory_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

using internal::Mutex;
using internal::MutexLock;

// Key length that the automatic shard reduction leaves room for besides a max-size value.
constexpr std::size_t kKeyAllowance = 1024;

// Longest key prefix quoted in an error message.
constexpr std::size_t kMaxQuotedKey = 64;

std::size_t Charge(std::string_view key, std::string_view value) {
  return key.size() + value.size() + kMemoryBackendItemOverhead;
}

// The number of shards to use: as many as asked for, but no more than leave each shard room for
// one max-size item.
int ShardCount(const MemoryBackendOptions& options) {
  constexpr std::size_t kExtra = kMemoryBackendItemOverhead + kKeyAllowance;
  constexpr std::size_t kMax = std::numeric_limits<std::size_t>::max();
  const std::size_t largest_item =
      options.max_item_size > kMax - kExtra ? kMax : options.max_item_size + kExtra;
  const std::size_t fitting = std::max<std::size_t>(options.capacity_bytes / largest_item, 1);
  return static_cast<int>(std::min<std::size_t>(std::max(options.shards, 1), fitting));
}

// The key as it appears in error messages: C-escaped, and cut short if long.
std::string QuoteKey(std::string_view key) {
  // Debian's Abseil has its own string_view type, distinct from std::string_view.
  const absl::string_view quoted(key.data(), std::min(key.size(), kMaxQuotedKey));
  if (quoted.size() == key.size()) return absl::StrCat("\"", absl::CHexEscape(quoted), "\"");
  return absl::StrCat("\"", absl::CHexEscape(quoted), "\"... (", key.size(), " bytes)");
}

absl::Status ValidateTtl(absl::Duration ttl) {
  if (ttl > absl::ZeroDuration()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "ttl must be positive (or absl::InfiniteDuration()), got ", absl::FormatDuration(ttl)));
}

absl::Time ExpiryFor(absl::Time now, absl::Duration ttl) {
  return ttl == absl::InfiniteDuration() ? absl::InfiniteFuture() : now + ttl;
}

}  // namespace

// One lock's worth of the cache: an LRU list, an index into it, and the byte count it holds.
// Thread safety: safe for concurrent use; every method takes the shard's mutex.
class MemoryBackend::Shard {
 public:
  struct Entry {
    std::string key;
    // Shared so that readers copy the bytes out after releasing the lock.
    std::shared_ptr<const std::string> value;
    absl::Time expiry;
    std::size_t charge;
  };
  // Also used to carry entries across the lock: a new entry is built in a one-element list
  // outside it and spliced in, and removed entries are spliced out and destroyed after it, so
  // that no large allocation or free happens while other threads wait.
  using EntryList = std::list<Entry>;

  explicit Shard(std::size_t capacity) : capacity_(capacity) {}

  // The live value under `key`, which becomes the most recently used; null if absent or expired.
  std::shared_ptr<const std::string> Lookup(std::string_view key, absl::Time now,
                                            EntryList* removed) {
    MutexLock lock(&mu_);
    const auto found = index_.find(key);
    if (found == index_.end()) {
      ++stats_.misses;
      return nullptr;
    }
    const EntryList::iterator entry = found->second;
    if (Expired(*entry, now)) {
      ++stats_.expirations;
      ++stats_.misses;
      Remove(entry, removed);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, entry);
    ++stats_.hits;
    return entry->value;
  }

  // Stores the single entry of `item`, replacing any entry with its key. The entry's charge must
  // not exceed the shard's capacity.
  void Insert(EntryList* item, absl::Time now, EntryList* removed) {
    MutexLock lock(&mu_);
    if (const auto found = index_.find(item->front().key); found != index_.end()) {
      Remove(found->second, removed);
    }
    Add(item, now, removed);
  }

  // Stores the single entry of `item` unless a live entry has its key; true if stored.
  bool InsertIfAbsent(EntryList* item, absl::Time now, EntryList* removed) {
    MutexLock lock(&mu_);
    if (const auto found = index_.find(item->front().key); found != index_.end()) {
      if (!Expired(*found->second, now)) return false;
      ++stats_.expirations;
      Remove(found->second, removed);
    }
    Add(item, now, removed);
    return true;
  }

  void Erase(std::string_view key, absl::Time now, EntryList* removed) {
    MutexLock lock(&mu_);
    const auto found = index_.find(key);
    if (found == index_.end()) return;
    ++(Expired(*found->second, now) ? stats_.expirations : stats_.deletes);
    Remove(found->second, removed);
  }

  // Adds this shard's counters to `total`.
  void AddStatsTo(MemoryBackendStats* total) const {
    MutexLock lock(&mu_);
    total->items += index_.size();
    total->bytes += bytes_;
    total->hits += stats_.hits;
    total->misses += stats_.misses;
    total->sets += stats_.sets;
    total->deletes += stats_.deletes;
    total->evictions += stats_.evictions;
    total->expirations += stats_.expirations;
  }

 private:
  static bool Expired(const Entry& entry, absl::Time now) { return now >= entry.expiry; }

  // Makes room for the single entry of `item` and moves it to the front of the LRU list. Its key
  // must not be in the index.
  void Add(EntryList* item, absl::Time now, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::size_t charge = item->front().charge;
    while (bytes_ + charge > capacity_ && !lru_.empty()) {
      const EntryList::iterator last = std::prev(lru_.end());
      ++(Expired(*last, now) ? stats_.expirations : stats_.evictions);
      Remove(last, removed);
    }
    lru_.splice(lru_.begin(), *item);
    index_.emplace(lru_.front().key, lru_.begin());
    bytes_ += charge;
    ++stats_.sets;
  }

  // Unlinks `entry` and hands it to `removed`, to be destroyed once the lock is released.
  void Remove(EntryList::iterator entry, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    index_.erase(std::string_view(entry->key));
    bytes_ -= entry->charge;
    removed->splice(removed->end(), lru_, entry);
  }

  const std::size_t capacity_;
  mutable Mutex mu_;
  // Most recently used first.
  EntryList lru_ ABSL_GUARDED_BY(mu_);
  // Keys view the `key` of the list entries they point to, which stay put while listed.
  absl::flat_hash_map<std::string_view, EntryList::iterator> index_ ABSL_GUARDED_BY(mu_);
  std::size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Only the counters; items and bytes are read from index_ and bytes_.
  MemoryBackendStats stats_ ABSL_GUARDED_BY(mu_);
};

MemoryBackend::MemoryBackend(MemoryBackendOptions options)
    : max_item_size_(options.max_item_size),
      shard_capacity_(options.capacity_bytes / ShardCount(options)),
      clock_(options.clock ? std::move(options.clock) : std::function<absl::Time()>(absl::Now)) {
  const int count = ShardCount(options);
  shards_.reserve(count);
  for (int i = 0; i < count; ++i) shards_.push_back(std::make_unique<Shard>(shard_capacity_));
}

MemoryBackend::~MemoryBackend() = default;

MemoryBackend::Shard& MemoryBackend::ShardFor(std::string_view key) const {
  // The high half of the hash picks the shard: flat_hash_map uses the low bits inside a shard,
  // and keys sharing them would crowd its probe groups.
  const std::uint64_t hash = absl::Hash<std::string_view>{}(key);
  return *shards_[(hash >> 32) % shards_.size()];
}

absl::Status MemoryBackend::ValidateItem(std::string_view key, std::string_view value) const {
  if (key.empty()) {
    return absl::InvalidArgumentError("the key is empty; keys need at least one byte");
  }
  if (value.size() > max_item_size_) {
    return absl::InvalidArgumentError(absl::StrCat("the value of key ", QuoteKey(key), " has ",
                                                   value.size(), " bytes, over max_item_size (",
                                                   max_item_size_, " bytes)"));
  }
  if (Charge(key, value) > shard_capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("key ", QuoteKey(key), " needs ", Charge(key, value), " bytes (key + value + ",
                     kMemoryBackendItemOverhead, " overhead), more than a shard holds (",
                     shard_capacity_, " bytes; raise capacity_bytes or lower shards)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::optional<std::string>>> MemoryBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  const absl::Time now = clock_();
  std::vector<std::optional<std::string>> values;
  values.reserve(keys.size());
  for (const std::string_view key : keys) {
    Shard::EntryList removed;
    const std::shared_ptr<const std::string> value = ShardFor(key).Lookup(key, now, &removed);
    if (value == nullptr) {
      values.emplace_back(std::nullopt);
    } else {
      values.emplace_back(*value);
    }
  }
  return values;
}

absl::Status MemoryBackend::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
  if (absl::Status status = ValidateTtl(ttl); !status.ok()) return status;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (absl::Status status = ValidateItem(items[i].key, items[i].value); !status.ok()) {
      return absl::Status(status.code(), absl::StrCat("MultiSet item ", i, ": ", status.message(),
                                                      "; nothing of the batch was stored"));
    }
  }
  const absl::Time now = clock_();
  const absl::Time expiry = ExpiryFor(now, ttl);
  for (const KeyValue& item : items) {
    Shard::EntryList entry;
    entry.push_back({std::string(item.key), std::make_shared<const std::string>(item.value), expiry,
                     Charge(item.key, item.value)});
    Shard::EntryList removed;
    ShardFor(item.key).Insert(&entry, now, &removed);
  }
  return absl::OkStatus();
}

absl::Status MemoryBackend::Delete(absl::Span<const std::string_view> keys) {
  const absl::Time now = clock_();
  for (const std::string_view key : keys) {
    Shard::EntryList removed;
    ShardFor(key).Erase(key, now, &removed);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> MemoryBackend::SetIfAbsent(std::string_view key, std::string_view value,
                                                absl::Duration ttl) {
  if (absl::Status status = ValidateTtl(ttl); !status.ok()) return status;
  if (absl::Status status = ValidateItem(key, value); !status.ok()) return status;
  const absl::Time now = clock_();
  Shard::EntryList entry;
  entry.push_back({std::string(key), std::make_shared<const std::string>(value),
                   ExpiryFor(now, ttl), Charge(key, value)});
  Shard::EntryList removed;
  return ShardFor(key).InsertIfAbsent(&entry, now, &removed);
}

MemoryBackendStats MemoryBackend::Stats() const {
  MemoryBackendStats total;
  for (const std::unique_ptr<Shard>& shard : shards_) shard->AddStatsTo(&total);
  return total;
}

std::shared_ptr<Backend> NewMemoryBackend(MemoryBackendOptions options) {
  return std::make_shared<MemoryBackend>(std::move(options));
}

}  // namespace chunkcache
