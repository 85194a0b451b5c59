// A byte-bounded least-recently-used map from string keys to values, split into shards that lock
// independently. The near cache and the memory backend are both built on it.
//
// Every entry carries a charge in bytes, set by its owner. Two bounds hold between calls:
// `capacity` on the sum of all charges, and `shard_capacity` on each shard's charges plus its
// index table (counted at what Heap::Cost reports for its blocks). An insert evicts the least
// recently used entries of its shard to make room, then, while `capacity` is still exceeded, those
// of the other shards; the entry it inserts is never its own victim. Entries leave the map into a
// caller's `Removed`, and are destroyed when that goes out of scope, after every lock is released.
//
// Each shard has its own lock, of the kind `Locking` names. With LruLocking::kReadShared (a
// reader-writer lock striped by CPU, internal::CpuSharedMutex) a lookup takes the reader lock, and
// the writer lock only when the entry it found is not yet its shard's most recent one; inserts and
// erases take the writer lock, which costs a lock per stripe. With LruLocking::kExclusive every
// call takes the shard's one mutex. The owner decides what an insert or an erase does to an
// existing entry with a callback that runs under the lock, so its own per-key state (an epoch, an
// expiry) changes atomically with the map.
//
//   using Lru = ShardedLru<std::string>;
//   Lru lru({.shards = 8, .capacity = 1 << 20});
//   Lru::NodeList node = Lru::NewNode("key", "value");
//   node.front().charge = 8;
//   Lru::Removed removed;
//   lru.Insert(&node, [](const std::string* existing) { return LruAdmit::kInsert; }, &removed);
//   std::string copy;
//   lru.Lookup("key", [&](const std::string& value) { copy = value; return true; });
//
// Thread safety: safe for concurrent use. Callbacks run under a shard's lock and must not call
// into the same ShardedLru.

#ifndef CHUNKCACHE_SRC_INTERNAL_SHARDED_LRU_H_
#define CHUNKCACHE_SRC_INTERNAL_SHARDED_LRU_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "internal/cpu_stripes.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

// Where a ShardedLru's memory comes from: nodes and keys from Allocator<T> (stateless), index
// tables from Allocate/Free, each index block counted at Cost(block, bytes). This one uses the
// standard allocator and counts what was asked for.
struct StandardLruHeap {
  template <typename T>
  using Allocator = std::allocator<T>;
  static void* Allocate(std::size_t bytes) { return ::operator new(bytes); }
  static void Free(void* block, std::size_t /*bytes*/) { ::operator delete(block); }
  static std::size_t Cost(void* /*block*/, std::size_t bytes) { return bytes; }
};

// How a ShardedLru locks a shard.
enum class LruLocking {
  // A striped reader-writer lock: hits on a shard's most recent entry share it. For maps whose
  // hits are the hot path and far outnumber writes.
  kReadShared,
  // One mutex: a write costs one lock instead of one per stripe. For maps written about as often
  // as they are read.
  kExclusive,
};

// What an insert does, decided from the existing entry of its key (if any).
enum class LruAdmit {
  kInsert,  // replace the existing entry with the new one
  kKeep,    // keep the existing entry; insert nothing
  kDrop,    // remove the existing entry; insert nothing
};

// What an insert did.
enum class LruInserted { kStored, kKept, kDropped, kTooLarge };

template <typename Value, typename Heap = StandardLruHeap,
          LruLocking Locking = LruLocking::kReadShared>
class ShardedLru {
 public:
  static constexpr std::size_t kUnbounded = std::numeric_limits<std::size_t>::max();

  struct Options {
    // Independently locked shards; values below 1 mean 1. Default: 8.
    std::size_t shards = 8;
    // Bound on the sum of all charges. Default: none.
    std::size_t capacity = kUnbounded;
    // Bound on each shard's charges plus its index table. Default: none.
    std::size_t shard_capacity = kUnbounded;
  };

  using Key =
      std::basic_string<char, std::char_traits<char>, typename Heap::template Allocator<char>>;

  struct Node {
    template <typename... Args>
    explicit Node(std::string_view node_key, Args&&... args)
        : key(node_key.data(), node_key.size()), value(std::forward<Args>(args)...) {}

    Key key;
    Value value;
    std::size_t charge = 0;
  };
  // Front: most recently used. Also carries nodes into and out of the map: a node is built in a
  // list of its own before the lock is taken and spliced in, so that neither its allocation nor
  // the release of what it replaces happens while other threads wait.
  using NodeList = std::list<Node, typename Heap::template Allocator<Node>>;

  // The nodes one call took out of the map.
  struct Removed {
    NodeList evicted;  // to make room for an insert
    NodeList dropped;  // replaced, erased, or removed by an LruAdmit::kDrop
  };

  // Entries, charges and index bytes, summed shard by shard; each shard's figures are read under
  // its lock.
  struct Usage {
    std::size_t entries = 0;
    std::size_t charges = 0;
    std::size_t index_bytes = 0;
  };

  explicit ShardedLru(Options options)
      : shard_count_(options.shards < 1 ? 1 : options.shards),
        capacity_(options.capacity),
        shard_capacity_(options.shard_capacity),
        shards_(std::make_unique<Shard[]>(shard_count_)) {}
  ShardedLru(const ShardedLru&) = delete;
  ShardedLru& operator=(const ShardedLru&) = delete;

  // A node for Insert holding `key` and a Value built from `args`, with a charge of 0: set
  // `front().charge` before inserting it.
  template <typename... Args>
  static NodeList NewNode(std::string_view key, Args&&... args) {
    NodeList node;
    node.emplace_back(key, std::forward<Args>(args)...);
    return node;
  }

  // Calls `read(value)` for the entry of `key` under its shard's lock and returns true; false if
  // there is none. If `read` returns true the entry becomes its shard's most recent (with
  // kReadShared, taking the writer lock only if it is not that already).
  template <typename Read>
  bool Lookup(std::string_view key, Read&& read) {
    Shard& shard = ShardFor(key);
    if constexpr (Locking == LruLocking::kExclusive) {
      MutexLock lock(&shard.mu);
      const auto it = shard.index.find(key);
      if (it == shard.index.end()) return false;
      if (read(static_cast<const Value&>(it->second->value))) {
        shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
      }
      return true;
    } else {
      {
        ReadLock lock(&shard.mu);
        const auto it = shard.index.find(key);
        if (it == shard.index.end()) return false;
        const Node& node = *it->second;
        if (!read(static_cast<const Value&>(node.value)) || &shard.lru.front() == &node) {
          return true;
        }
      }
      WriteLock lock(&shard.mu);
      if (const auto it = shard.index.find(key); it != shard.index.end()) {
        shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
      }
      return true;
    }
  }

  // Calls `read(value)` for the entry of `key` under its shard's lock, leaving the order alone;
  // false if there is none. `read` may change only what is safe to change under a reader lock
  // (atomics).
  template <typename Read>
  bool Peek(std::string_view key, Read&& read) const {
    Shard& shard = ShardFor(key);
    ReadLock lock(&shard.mu);
    const auto it = shard.index.find(key);
    if (it == shard.index.end()) return false;
    read(static_cast<const Value&>(it->second->value));
    return true;
  }

  // Inserts the single node of `node` (from NewNode) as the most recent entry. Under the shard's
  // (writer) lock, `decide(existing)` (nullptr if the key has no entry) says what happens; then a
  // node charged more than `capacity` is not inserted (kTooLarge, the existing entry removed all
  // the same), and otherwise room is made and it is stored. A node not inserted stays in `node`.
  template <typename Decide>
  LruInserted Insert(NodeList* node, Decide&& decide, Removed* removed) {
    const std::size_t charge = node->front().charge;
    Shard& shard = ShardFor(node->front().key);
    {
      WriteLock lock(&shard.mu);
      const auto found = shard.index.find(std::string_view(node->front().key));
      const LruAdmit admit =
          decide(found == shard.index.end() ? static_cast<const Value*>(nullptr)
                                            : &static_cast<const Node&>(*found->second).value);
      if (admit == LruAdmit::kKeep) return LruInserted::kKept;
      if (found != shard.index.end()) RemoveLocked(shard, found->second, &removed->dropped);
      if (admit == LruAdmit::kDrop) {
        FitLocked(shard, removed);
        return LruInserted::kDropped;
      }
      if (charge > capacity_) {
        FitLocked(shard, removed);
        return LruInserted::kTooLarge;
      }
      while (OverBoundLocked(shard, charge) && !shard.lru.empty()) EvictLastLocked(shard, removed);
      shard.lru.splice(shard.lru.begin(), *node);
      shard.index.emplace(std::string_view(shard.lru.front().key), shard.lru.begin());
      shard.charges += charge;
      bytes_.fetch_add(charge, std::memory_order_relaxed);
      FitLocked(shard, removed);
    }
    // Still over `capacity`: take from the other shards, one lock at a time.
    for (std::size_t i = 0; i < shard_count_ && bytes() > capacity_; ++i) {
      Shard& other = shards_[i];
      if (&other == &shard) continue;
      WriteLock lock(&other.mu);
      while (bytes() > capacity_ && !other.lru.empty()) EvictLastLocked(other, removed);
    }
    return LruInserted::kStored;
  }

  // Under the shard's (writer) lock, calls `decide(existing)` (nullptr if `key` has no entry) and
  // removes the entry if it returns true. True if an entry was removed.
  template <typename Decide>
  bool Erase(std::string_view key, Decide&& decide, Removed* removed) {
    Shard& shard = ShardFor(key);
    WriteLock lock(&shard.mu);
    const auto found = shard.index.find(key);
    const Value* existing =
        found == shard.index.end() ? nullptr : &static_cast<const Node&>(*found->second).value;
    if (!decide(existing) || existing == nullptr) return false;
    RemoveLocked(shard, found->second, &removed->dropped);
    FitLocked(shard, removed);
    return true;
  }

  // The sum of all charges.
  std::size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

  Usage usage() const {
    Usage usage;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      const Shard& shard = shards_[i];
      ReadLock lock(&shard.mu);
      usage.entries += shard.index.size();
      usage.charges += shard.charges;
      usage.index_bytes += shard.index_bytes;
    }
    return usage;
  }

  // What a shard's index table takes when it holds one entry: the least it takes once used.
  static std::size_t IndexBytesForOneEntry() {
    std::size_t bytes = 0;
    Index index{typename Index::allocator_type(&bytes)};
    index.emplace("k", typename NodeList::iterator());
    return bytes;  // Copied before `index` frees its table.
  }

 private:
  // An index with more slots than this is rebuilt smaller once less than 1/8 of them are used.
  static constexpr std::size_t kMinShrinkCapacity = 127;

  // Allocates index tables from Heap and keeps `*bytes` equal to what they cost.
  template <typename T>
  class IndexAllocator {
   public:
    using value_type = T;

    explicit IndexAllocator(std::size_t* bytes) : bytes_(bytes) {}
    template <typename U>
    IndexAllocator(const IndexAllocator<U>& other)  // NOLINT(google-explicit-constructor)
        : bytes_(other.bytes()) {}

    T* allocate(std::size_t n) {
      static_assert(alignof(T) <= alignof(std::max_align_t));
      if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) {
        throw std::bad_array_new_length();
      }
      void* block = Heap::Allocate(n * sizeof(T));
      *bytes_ += Heap::Cost(block, n * sizeof(T));
      return static_cast<T*>(block);
    }
    void deallocate(T* block, std::size_t n) {
      *bytes_ -= Heap::Cost(block, n * sizeof(T));
      Heap::Free(block, n * sizeof(T));
    }

    std::size_t* bytes() const { return bytes_; }
    friend bool operator==(const IndexAllocator& a, const IndexAllocator& b) {
      return a.bytes_ == b.bytes_;
    }

   private:
    std::size_t* bytes_;
  };

  // Keys view the `key` of the node they point to, which stays put while listed.
  using Index = absl::flat_hash_map<
      std::string_view, typename NodeList::iterator, absl::Hash<std::string_view>,
      std::equal_to<std::string_view>,
      IndexAllocator<std::pair<const std::string_view, typename NodeList::iterator>>>;

  static constexpr bool kReadShared = Locking == LruLocking::kReadShared;
  using ShardMutex = std::conditional_t<kReadShared, CpuSharedMutex, Mutex>;
  using ReadLock = std::conditional_t<kReadShared, CpuReaderLock, MutexLock>;
  using WriteLock = std::conditional_t<kReadShared, CpuWriterLock, MutexLock>;

  struct Shard {
    Shard() : index(typename Index::allocator_type(&index_bytes)) {}

    mutable ShardMutex mu;
    NodeList lru ABSL_GUARDED_BY(mu);
    std::size_t charges ABSL_GUARDED_BY(mu) = 0;
    // The cost of index's table, kept by its allocator; declared first so that it outlives it.
    std::size_t index_bytes ABSL_GUARDED_BY(mu) = 0;
    Index index ABSL_GUARDED_BY(mu);
  };

  Shard& ShardFor(std::string_view key) const {
    // The hash's high half picks the shard (scaled, not divided): the index of a shard uses the
    // low bits, and keys sharing them would crowd its probe groups.
    const std::uint64_t hash = absl::Hash<std::string_view>{}(key);
    return shards_[((hash >> 32) * shard_count_) >> 32];
  }

  // Whether `shard`, given `charge` more, would exceed a bound.
  bool OverBoundLocked(const Shard& shard, std::size_t charge) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    return shard.charges + shard.index_bytes + charge > shard_capacity_ ||
           bytes() + charge > capacity_;
  }
  bool OverShardBoundLocked(const Shard& shard) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    return shard.charges + shard.index_bytes > shard_capacity_;
  }

  void RemoveLocked(Shard& shard, typename NodeList::iterator node, NodeList* to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    shard.index.erase(std::string_view(node->key));
    shard.charges -= node->charge;
    bytes_.fetch_sub(node->charge, std::memory_order_relaxed);
    to->splice(to->end(), shard.lru, node);
  }

  void EvictLastLocked(Shard& shard, Removed* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    RemoveLocked(shard, std::prev(shard.lru.end()), &removed->evicted);
  }

  // Brings `shard` back within shard_capacity when its index grew (never evicting its most recent
  // entry), and gives back the memory of an index that is mostly empty: erasing never shrinks a
  // flat_hash_map, only a rehash does.
  void FitLocked(Shard& shard, Removed* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    while (OverShardBoundLocked(shard) && shard.lru.size() > 1) EvictLastLocked(shard, removed);
    const bool sparse = shard.index.capacity() > kMinShrinkCapacity &&
                        shard.index.size() * 8 < shard.index.capacity();
    if (sparse || OverShardBoundLocked(shard)) shard.index.rehash(0);
  }

  const std::size_t shard_count_;
  const std::size_t capacity_;
  const std::size_t shard_capacity_;
  const std::unique_ptr<Shard[]> shards_;
  std::atomic<std::size_t> bytes_{0};
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_SHARDED_LRU_H_
