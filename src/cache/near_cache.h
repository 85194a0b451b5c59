// The near cache (L1): decoded payloads kept in process, bounded in bytes, least recently used
// evicted first (an internal::ShardedLru of 8 shards under one global bound). A hit is a
// shared-pointer copy under its shard's striped reader lock, and the copy is counted on one of the
// entry's stripes (an internal::StripedSharedPtr, by CPU): concurrent hits, on one key or many,
// write different cache lines, so hits on more threads make more hits in total. Only a hit that
// changes the recency order, and inserts and erases, take the shard's writer lock. Per-key epochs
// keep a read that started before a write or an erase from putting back what that write replaced.
//
//   NearCache l1(64 << 20);
//   const std::uint64_t epoch = l1.Epoch(key);  // before reading the backend
//   ... read the entry from the backend ...
//   l1.Insert(key, {.bytes = payload, .generation = generation, .created = created,
//                   .validated = absl::Now(), .size = payload->size(), .checksum = checksum},
//             epoch);
//   std::optional<NearCache::Entry> hit = l1.Lookup(key);
//
// The bytes a hit hands out stay valid after the entry is replaced, erased or evicted, for as long
// as the caller holds them: each stripe owns the payload. Their use_count() counts one stripe.
//
// Thread safety: safe for concurrent use. The byte bound holds between calls; concurrent inserts
// may exceed it briefly by the entries being inserted.

#ifndef CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_
#define CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "internal/sharded_lru.h"
#include "internal/striped_shared_ptr.h"

namespace chunkcache::internal {

// Bytes charged per entry on top of its key, its payload and its stripes (see
// NearCache::entry_overhead()): the LRU node and index slot.
inline constexpr std::size_t kNearCacheEntryOverhead = 128;

class NearCache {
 public:
  struct Entry {
    Bytes bytes;
    std::uint64_t generation = 0;  // of the stored entry these bytes were decoded from
    absl::Time created;            // when that entry was written
    absl::Time validated;          // when it was last fetched or confirmed by its manifest
    // bytes->size(), kept apart: the string's header may share a cache line with the payload's
    // own reference count (make_shared), which copies of the payload outside the near cache bump.
    std::size_t size = 0;
    std::uint64_t checksum = 0;  // of the stored entry: generations alone can repeat (fork)
  };

  // A near cache of at most `capacity_bytes`, each entry counting its hits' copies on `stripes`
  // cache lines, one per CPU (rounded up to a power of two; fewer stripes than CPUs: CPUs share
  // them; more: memory per entry for nothing, see entry_overhead()).
  explicit NearCache(std::size_t capacity_bytes, std::size_t stripes = DefaultStripes())
      : lru_({.shards = kShards, .capacity = capacity_bytes}),
        stripes_(std::bit_ceil(std::max<std::size_t>(stripes, 1))) {}
  NearCache(const NearCache&) = delete;
  NearCache& operator=(const NearCache&) = delete;

  // The entry of `key`, which becomes the most recently used; empty if there is none.
  std::optional<Entry> Lookup(std::string_view key);

  // Adds or replaces the entry of `key`, evicting others to stay within the bound. An entry
  // larger than the whole bound is not kept (and removes the old one). With `if_epoch`, if an
  // Erase or a write-insert of `key` happened since Epoch(key) returned it, nothing is inserted
  // and the key's entry is dropped: a read or load that started before a write must not put back
  // what the write replaced, nor leave a copy that may be older than the backend's. With
  // `is_write` (the entry is what this process just stored), the key's epoch advances too, so
  // reads that started before the store cannot replace it with what they found.
  void Insert(std::string_view key, Entry entry, std::optional<std::uint64_t> if_epoch = {},
              bool is_write = false);

  // Counts the Erase calls of `key` (and of the few keys sharing its slot, so that unrelated
  // erases rarely hold back an insert); read it before a backend read or a load whose result may
  // be inserted.
  std::uint64_t Epoch(std::string_view key) const {
    return epochs_[EpochSlot(key)].load(std::memory_order_acquire);
  }

  // Records that the entry of `key` was confirmed at `when`, if it still holds `generation`.
  void MarkValidated(std::string_view key, std::uint64_t generation, absl::Time when);

  // Removes the entry of `key` (if any) and advances its epoch.
  void Erase(std::string_view key);

  // The hardware threads (CPUs), rounded up to a power of two, at most 16 (the stripes of the
  // shard locks): one stripe per CPU, 2 on 2 cores.
  static std::size_t DefaultStripes();

  // Bytes charged per entry on top of its key and payload: kNearCacheEntryOverhead and the heap
  // its stripes take (StripedSharedPtr::MemoryBytes: 368 bytes with 2 stripes, 1488 with 16).
  std::size_t entry_overhead() const {
    return kNearCacheEntryOverhead + StripedSharedPtr<const std::string>::MemoryBytes(stripes_);
  }
  std::size_t stripes() const { return stripes_; }

  std::size_t bytes() const { return lru_.bytes(); }
  std::uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  // What the LRU holds for a key: an Entry, with its validation time writable under a reader lock.
  struct Stored {
    Stored(Entry&& entry, std::size_t stripes)
        : bytes(std::move(entry.bytes), stripes),
          generation(entry.generation),
          checksum(entry.checksum),
          created(entry.created),
          validated_ns(absl::ToUnixNanos(entry.validated)),
          size(bytes.get()->size()) {}

    StripedSharedPtr<const std::string> bytes;
    std::uint64_t generation;
    std::uint64_t checksum;
    absl::Time created;
    mutable std::atomic<std::int64_t> validated_ns;
    std::size_t size;
  };
  using Lru = ShardedLru<Stored>;
  static constexpr std::size_t kShards = 8;
  static constexpr std::size_t kEpochSlots = 1024;

  static std::size_t EpochSlot(std::string_view key);

  Lru lru_;
  const std::size_t stripes_;
  std::atomic<std::uint64_t> evictions_{0};
  // Per-key erase counts (hashed into slots), each advanced under the erased key's shard lock.
  std::array<std::atomic<std::uint64_t>, kEpochSlots> epochs_{};
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_
