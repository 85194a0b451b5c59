#include "cache/near_cache.h"

#include <algorithm>
#include <bit>
#include <thread>
#include <utility>

#include "absl/hash/hash.h"

namespace chunkcache::internal {

std::size_t NearCache::EpochSlot(std::string_view key) {
  // The LRU picks the shard with the hash's high half; the slot takes lower bits so that it
  // spreads the keys of one shard.
  return (absl::Hash<std::string_view>{}(key) >> 16) % kEpochSlots;
}

std::size_t NearCache::DefaultStripes() {
  static const std::size_t stripes = std::clamp<std::size_t>(
      std::bit_ceil(std::size_t{std::thread::hardware_concurrency()}), 1, 16);
  return stripes;
}

std::optional<NearCache::Entry> NearCache::Lookup(std::string_view key) {
  std::optional<Entry> found;
  lru_.Lookup(key, [&found](const Stored& stored) {
    found.emplace(Entry{stored.bytes.Get(), stored.generation, stored.created,
                        absl::FromUnixNanos(stored.validated_ns.load(std::memory_order_relaxed)),
                        stored.size, stored.checksum});
    return true;
  });
  return found;
}

void NearCache::Insert(std::string_view key, Entry entry, std::optional<std::uint64_t> if_epoch,
                       bool is_write) {
  const std::size_t charge = key.size() + entry.bytes->size() + entry_overhead();
  Lru::NodeList node = Lru::NewNode(key, std::move(entry), stripes_);
  node.front().charge = charge;
  Lru::Removed removed;
  lru_.Insert(
      &node,
      [&](const Stored* /*existing*/) {
        // Erase advances the key's epoch under the same shard lock: checked under it too, an
        // invalidation cannot slip between the check and the insert.
        const bool outdated = if_epoch.has_value() && *if_epoch != Epoch(key);
        if (is_write || outdated) epochs_[EpochSlot(key)].fetch_add(1, std::memory_order_acq_rel);
        return outdated ? LruAdmit::kDrop : LruAdmit::kInsert;
      },
      &removed);
  evictions_.fetch_add(removed.evicted.size(), std::memory_order_relaxed);
}

void NearCache::MarkValidated(std::string_view key, std::uint64_t generation, absl::Time when) {
  lru_.Peek(key, [&](const Stored& stored) {
    if (stored.generation == generation) {
      stored.validated_ns.store(absl::ToUnixNanos(when), std::memory_order_relaxed);
    }
  });
}

void NearCache::Erase(std::string_view key) {
  Lru::Removed removed;
  lru_.Erase(
      key,
      [&](const Stored* /*existing*/) {
        epochs_[EpochSlot(key)].fetch_add(1, std::memory_order_acq_rel);
        return true;
      },
      &removed);
}

}  // namespace chunkcache::internal
