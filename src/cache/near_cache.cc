#include "cache/near_cache.h"

#include <utility>

#include "absl/hash/hash.h"

namespace chunkcache::internal {

NearCache::Shard& NearCache::ShardOf(std::string_view key) {
  return shards_[absl::Hash<std::string_view>{}(key) % kShards];
}

std::size_t NearCache::EpochSlot(std::string_view key) {
  // The shard uses the hash's low bits; the slot takes higher ones so that it spreads the keys
  // of one shard.
  return (absl::Hash<std::string_view>{}(key) >> 16) % kEpochSlots;
}

std::optional<NearCache::Entry> NearCache::Lookup(std::string_view key) {
  Shard& shard = ShardOf(key);
  std::optional<Entry> found;
  {
    ReaderLock lock(&shard.mu);
    const auto it = shard.index.find(key);
    if (it == shard.index.end()) return std::nullopt;
    const Node& node = *it->second;
    found.emplace(Entry{node.bytes, node.generation, node.created,
                        absl::FromUnixNanos(node.validated_ns.load(std::memory_order_relaxed)),
                        node.size, node.checksum});
    if (&shard.lru.front() == &node) return found;  // already the most recent: no writer lock
  }
  WriterLock lock(&shard.mu);
  if (const auto it = shard.index.find(key); it != shard.index.end()) {
    shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
  }
  return found;
}

void NearCache::Insert(std::string_view key, Entry entry, std::optional<std::uint64_t> if_epoch,
                       bool is_write) {
  const std::size_t charge = key.size() + entry.bytes->size() + kNearCacheEntryOverhead;
  Shard& shard = ShardOf(key);
  {
    WriterLock lock(&shard.mu);
    // Erase advances the key's epoch under the same shard lock: checked under it too, an
    // invalidation cannot slip between the check and the insert.
    const bool outdated = if_epoch.has_value() && *if_epoch != Epoch(key);
    if (is_write || outdated) epochs_[EpochSlot(key)].fetch_add(1, std::memory_order_acq_rel);
    if (const auto it = shard.index.find(key); it != shard.index.end())
      RemoveLocked(shard, it->second);
    if (outdated) return;
    if (charge > capacity_) return;
    Node& node = shard.lru.emplace_front();
    node.key.assign(key.data(), key.size());
    node.size = entry.bytes->size();
    node.bytes = std::move(entry.bytes);
    node.generation = entry.generation;
    node.checksum = entry.checksum;
    node.created = entry.created;
    node.validated_ns.store(absl::ToUnixNanos(entry.validated), std::memory_order_relaxed);
    node.charge = charge;
    shard.index.emplace(node.key, shard.lru.begin());
    bytes_.fetch_add(charge, std::memory_order_relaxed);
    EvictLocked(shard, &node);
  }
  // Still over: take from the other shards, one lock at a time.
  for (Shard& other : shards_) {
    if (!OverBound()) return;
    if (&other == &shard) continue;
    WriterLock lock(&other.mu);
    EvictLocked(other, nullptr);
  }
}

void NearCache::MarkValidated(std::string_view key, std::uint64_t generation, absl::Time when) {
  Shard& shard = ShardOf(key);
  ReaderLock lock(&shard.mu);
  const auto it = shard.index.find(key);
  if (it == shard.index.end() || it->second->generation != generation) return;
  it->second->validated_ns.store(absl::ToUnixNanos(when), std::memory_order_relaxed);
}

void NearCache::Erase(std::string_view key) {
  Shard& shard = ShardOf(key);
  WriterLock lock(&shard.mu);
  epochs_[EpochSlot(key)].fetch_add(1, std::memory_order_acq_rel);
  if (const auto it = shard.index.find(key); it != shard.index.end())
    RemoveLocked(shard, it->second);
}

void NearCache::RemoveLocked(Shard& shard, Lru::iterator it) {
  bytes_.fetch_sub(it->charge, std::memory_order_relaxed);
  shard.index.erase(std::string_view(it->key));
  shard.lru.erase(it);
}

void NearCache::EvictLocked(Shard& shard, const Node* keep) {
  while (OverBound() && !shard.lru.empty() && &shard.lru.back() != keep) {
    RemoveLocked(shard, std::prev(shard.lru.end()));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace chunkcache::internal
