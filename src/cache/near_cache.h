// The near cache (L1): decoded payloads kept in process, bounded in bytes, least recently used
// evicted first. A hit is a shared-pointer copy under a shard's reader lock, a striped one
// (internal::SharedMutex): concurrent hits, on one key or many, lock different cache lines; only a
// hit that changes the recency order, and inserts and erases, take the shard's writer lock.
//
// Thread safety: safe for concurrent use. The byte bound holds between calls; concurrent inserts
// may exceed it briefly by the entries being inserted.

#ifndef CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_
#define CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

// Bytes charged per entry on top of its key and payload.
inline constexpr std::size_t kNearCacheEntryOverhead = 128;

class NearCache {
 public:
  struct Entry {
    Bytes bytes;
    std::uint64_t generation = 0;  // of the stored entry these bytes were decoded from
    absl::Time created;            // when that entry was written
    absl::Time validated;          // when it was last fetched or confirmed by its manifest
    // bytes->size(), kept apart: reading it through `bytes` would touch the cache line of the
    // shared pointer's reference count, which concurrent hits on the entry keep bouncing.
    std::size_t size = 0;
    std::uint64_t checksum = 0;  // of the stored entry: generations alone can repeat (fork)
  };

  explicit NearCache(std::size_t capacity_bytes) : capacity_(capacity_bytes) {}
  NearCache(const NearCache&) = delete;
  NearCache& operator=(const NearCache&) = delete;

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

  std::size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  std::uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Node {
    std::string key;
    Bytes bytes;
    std::uint64_t generation;
    std::uint64_t checksum;
    absl::Time created;
    std::atomic<std::int64_t> validated_ns;  // written under a reader lock
    std::size_t size;
    std::size_t charge;
  };
  using Lru = std::list<Node>;  // front: most recently used
  struct Shard {
    SharedMutex mu;
    Lru lru ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<std::string_view, Lru::iterator> index
        ABSL_GUARDED_BY(mu);  // views of Node::key
  };
  static constexpr std::size_t kShards = 8;
  static constexpr std::size_t kEpochSlots = 1024;

  static std::size_t EpochSlot(std::string_view key);

  Shard& ShardOf(std::string_view key);
  void RemoveLocked(Shard& shard, Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Evicts from the back of `shard` while over the bound, never the node `keep`.
  void EvictLocked(Shard& shard, const Node* keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  bool OverBound() const { return bytes() > capacity_; }

  const std::size_t capacity_;
  std::atomic<std::size_t> bytes_{0};
  std::atomic<std::uint64_t> evictions_{0};
  // Per-key erase counts (hashed into slots), each advanced under the erased key's shard lock.
  std::array<std::atomic<std::uint64_t>, kEpochSlots> epochs_{};
  std::array<Shard, kShards> shards_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_NEAR_CACHE_H_
