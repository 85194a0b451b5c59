#include "chunkcache/memory_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <malloc.h>
#endif

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

// A shard's index is rebuilt smaller once it is less than 1/8 full, if it has more slots than this.
constexpr std::size_t kMinShrinkCapacity = 127;

constexpr std::size_t kMaxSize = std::numeric_limits<std::size_t>::max();

std::size_t SaturatingAdd(std::size_t a, std::size_t b) {
  return a > kMaxSize - b ? kMaxSize : a + b;
}

std::size_t RoundUp(std::size_t n, std::size_t multiple) {
  return SaturatingAdd(n, multiple - 1) / multiple * multiple;
}

// The heap memory a block of `requested` bytes takes with glibc's allocator: its chunk, the
// request plus an 8-byte header rounded up to 16 bytes (32 at least); a block of 128 KiB or more
// may be mapped on its own, and is then counted as whole pages. BlockCost gives no more for such
// a block with glibc, except when malloc hands out a free chunk whole rather than split off 16
// bytes it could not use.
std::size_t BlockCostEstimate(std::size_t requested) {
  if (requested < (std::size_t{128} << 10)) {
    return std::max<std::size_t>(32, RoundUp(requested + sizeof(void*), 16));
  }
  return RoundUp(SaturatingAdd(requested, 32), 4096);
}

// The heap memory `block` (of `requested` bytes, from malloc) takes: what the allocator made
// usable, plus the chunk header glibc keeps in front of every block.
std::size_t BlockCost([[maybe_unused]] void* block, [[maybe_unused]] std::size_t requested) {
#if defined(__linux__)
  return malloc_usable_size(block) + sizeof(void*);
#else
  return BlockCostEstimate(requested);
#endif
}

void* AllocateBlock(std::size_t count, std::size_t size) {
  if (count > kMaxSize / size) throw std::bad_array_new_length();
  void* block = std::malloc(count * size);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

// Bytes this thread has taken through ItemAllocator. Reading it before and after building an
// entry measures the entry's blocks (list node, shared value block, key and value bytes) whatever
// the standard library's layouts are; only differences between readings mean anything.
thread_local std::size_t item_bytes_allocated_here = 0;

// Allocates an item's blocks with malloc, so that the allocator can be asked what each really
// takes, and adds that to item_bytes_allocated_here. Stateless: all instances are interchangeable.
template <typename T>
struct ItemAllocator {
  static_assert(alignof(T) <= alignof(std::max_align_t));
  using value_type = T;

  ItemAllocator() = default;
  template <typename U>
  ItemAllocator(const ItemAllocator<U>&) {}  // NOLINT(google-explicit-constructor): rebinding.

  T* allocate(std::size_t n) {
    void* block = AllocateBlock(n, sizeof(T));
    item_bytes_allocated_here += BlockCost(block, n * sizeof(T));
    return static_cast<T*>(block);
  }
  void deallocate(T* block, std::size_t) { std::free(block); }

  friend bool operator==(ItemAllocator, ItemAllocator) { return true; }
};

// Allocates a shard's index table with malloc and keeps `*bytes` equal to the heap memory it
// holds, so that the table is charged at its real size as it grows and shrinks.
template <typename T>
class IndexAllocator {
 public:
  static_assert(alignof(T) <= alignof(std::max_align_t));
  using value_type = T;

  explicit IndexAllocator(std::size_t* bytes) : bytes_(bytes) {}
  template <typename U>
  IndexAllocator(const IndexAllocator<U>& other)  // NOLINT(google-explicit-constructor)
      : bytes_(other.bytes()) {}

  T* allocate(std::size_t n) {
    void* block = AllocateBlock(n, sizeof(T));
    *bytes_ += BlockCost(block, n * sizeof(T));
    return static_cast<T*>(block);
  }
  void deallocate(T* block, std::size_t n) {
    *bytes_ -= BlockCost(block, n * sizeof(T));
    std::free(block);
  }

  std::size_t* bytes() const { return bytes_; }
  friend bool operator==(const IndexAllocator& a, const IndexAllocator& b) {
    return a.bytes_ == b.bytes_;
  }

 private:
  std::size_t* bytes_;
};

using ItemString = std::basic_string<char, std::char_traits<char>, ItemAllocator<char>>;

// What the bytes of a string of `size` chars take beyond the string object itself: nothing while
// they fit in it, else a block.
std::size_t StringBytesEstimate(std::size_t size) {
  return size <= ItemString().capacity() ? 0 : BlockCostEstimate(SaturatingAdd(size, 1));
}

// The number of shards to use: as many as asked for, but no more than leave each shard room for
// an item of `largest_item` bytes.
int ShardCount(const MemoryBackendOptions& options, std::size_t largest_item) {
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

// One lock's worth of the cache: an LRU list, an index into it, and the bytes they take.
// Thread safety: safe for concurrent use; every method that reads or changes the shard takes its
// mutex.
class MemoryBackend::Shard {
 public:
  struct Entry {
    Entry(std::string_view key, std::string_view value, absl::Time expiry)
        : key(key.data(), key.size()),
          value(std::allocate_shared<ItemString>(ItemAllocator<ItemString>(), value.data(),
                                                 value.size())),
          expiry(expiry) {}

    ItemString key;
    // Shared so that readers copy the bytes out after releasing the lock.
    std::shared_ptr<const ItemString> value;
    absl::Time expiry;
    // The heap memory of the entry's blocks: its list node, its value's shared block, and its
    // key's and value's bytes where they do not fit inside their strings.
    std::size_t charge = 0;
  };
  // Also used to carry entries across the lock: a new entry is built in a one-element list
  // outside it and spliced in, and removed entries are spliced out and destroyed after it, so
  // that no large allocation or free happens while other threads wait.
  using EntryList = std::list<Entry, ItemAllocator<Entry>>;

  enum class Outcome { kStored, kPresent, kTooLarge };

  Shard(std::size_t capacity, std::size_t min_index_bytes)
      : capacity_(capacity),
        min_index_bytes_(min_index_bytes),
        index_(Index::allocator_type(&index_bytes_)) {}

  // A one-entry list holding `key` and `value`, charged what its blocks take.
  static EntryList MakeEntry(std::string_view key, std::string_view value, absl::Time expiry) {
    const std::size_t before = item_bytes_allocated_here;
    EntryList entry;
    entry.emplace_back(key, value, expiry);
    entry.front().charge = item_bytes_allocated_here - before;
    return entry;
  }

  // What a shard's index takes when it holds one item.
  static std::size_t MinIndexBytes() {
    std::size_t bytes = 0;
    Index index{Index::allocator_type(&bytes)};
    index.emplace("k", EntryList::iterator());
    return bytes;  // Copied before `index` frees its table.
  }

  // The live value under `key`, which becomes the most recently used; null if absent or expired.
  std::shared_ptr<const ItemString> Lookup(std::string_view key, absl::Time now,
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
      Fit(now, removed);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, entry);
    ++stats_.hits;
    return entry->value;
  }

  // Stores the single entry of `item`, replacing any entry with its key; kTooLarge, changing
  // nothing, if the entry cannot fit even in an empty shard.
  Outcome Insert(EntryList* item, absl::Time now, EntryList* removed) {
    if (!Fits(item->front().charge)) return Outcome::kTooLarge;
    MutexLock lock(&mu_);
    if (const auto found = index_.find(item->front().key); found != index_.end()) {
      Remove(found->second, removed);
    }
    Add(item, now, removed);
    return Outcome::kStored;
  }

  // Stores the single entry of `item` unless a live entry has its key (kPresent).
  Outcome InsertIfAbsent(EntryList* item, absl::Time now, EntryList* removed) {
    if (!Fits(item->front().charge)) return Outcome::kTooLarge;
    MutexLock lock(&mu_);
    if (const auto found = index_.find(item->front().key); found != index_.end()) {
      if (!Expired(*found->second, now)) return Outcome::kPresent;
      ++stats_.expirations;
      Remove(found->second, removed);
    }
    Add(item, now, removed);
    return Outcome::kStored;
  }

  void Erase(std::string_view key, absl::Time now, EntryList* removed) {
    MutexLock lock(&mu_);
    const auto found = index_.find(key);
    if (found == index_.end()) return;
    ++(Expired(*found->second, now) ? stats_.expirations : stats_.deletes);
    Remove(found->second, removed);
    Fit(now, removed);
  }

  // Adds this shard's counters to `total`.
  void AddStatsTo(MemoryBackendStats* total) const {
    MutexLock lock(&mu_);
    total->items += index_.size();
    total->bytes += Bytes();
    total->index_bytes += index_bytes_;
    total->hits += stats_.hits;
    total->misses += stats_.misses;
    total->sets += stats_.sets;
    total->deletes += stats_.deletes;
    total->evictions += stats_.evictions;
    total->expirations += stats_.expirations;
  }

 private:
  // Keys view the `key` of the list entries they point to, which stay put while listed.
  using Index =
      absl::flat_hash_map<std::string_view, EntryList::iterator, absl::Hash<std::string_view>,
                          std::equal_to<std::string_view>,
                          IndexAllocator<std::pair<const std::string_view, EntryList::iterator>>>;

  static bool Expired(const Entry& entry, absl::Time now) { return now >= entry.expiry; }

  // Whether an entry charged `charge` fits in this shard alone, with the smallest index.
  bool Fits(std::size_t charge) const {
    return SaturatingAdd(charge, min_index_bytes_) <= capacity_;
  }

  std::size_t Bytes() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return item_bytes_ + index_bytes_;
  }

  // Makes room for the single entry of `item`, which Fits, and moves it to the front of the LRU
  // list. Its key must not be in the index.
  void Add(EntryList* item, absl::Time now, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::size_t charge = item->front().charge;
    while (Bytes() + charge > capacity_ && !lru_.empty()) EvictLast(now, removed);
    lru_.splice(lru_.begin(), *item);
    index_.emplace(std::string_view(lru_.front().key), lru_.begin());
    item_bytes_ += charge;
    ++stats_.sets;
    Fit(now, removed);
  }

  // Brings the shard back within its capacity when its index grew, and gives back the memory of
  // an index that is mostly empty: erasing never shrinks a flat_hash_map, only a rehash does.
  void Fit(absl::Time now, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (Bytes() > capacity_ && lru_.size() > 1) EvictLast(now, removed);
    const bool sparse =
        index_.capacity() > kMinShrinkCapacity && index_.size() * 8 < index_.capacity();
    if (sparse || Bytes() > capacity_) index_.rehash(0);  // Fits: one entry and a small index.
  }

  void EvictLast(absl::Time now, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const EntryList::iterator last = std::prev(lru_.end());
    ++(Expired(*last, now) ? stats_.expirations : stats_.evictions);
    Remove(last, removed);
  }

  // Unlinks `entry` and hands it to `removed`, to be destroyed once the lock is released.
  void Remove(EntryList::iterator entry, EntryList* removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    index_.erase(std::string_view(entry->key));
    item_bytes_ -= entry->charge;
    removed->splice(removed->end(), lru_, entry);
  }

  const std::size_t capacity_;
  const std::size_t min_index_bytes_;
  mutable Mutex mu_;
  // Most recently used first.
  EntryList lru_ ABSL_GUARDED_BY(mu_);
  // The heap memory of index_'s table, kept by its allocator; declared first so it outlives it.
  std::size_t index_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  Index index_ ABSL_GUARDED_BY(mu_);
  // The sum of the charges of the entries in lru_.
  std::size_t item_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Only the counters; items and bytes are read from index_, item_bytes_ and index_bytes_.
  MemoryBackendStats stats_ ABSL_GUARDED_BY(mu_);
};

MemoryBackend::MemoryBackend(MemoryBackendOptions options)
    : max_item_size_(options.max_item_size),
      entry_overhead_(Shard::MakeEntry({}, {}, absl::InfiniteFuture()).front().charge),
      min_index_bytes_(Shard::MinIndexBytes()),
      shard_capacity_(options.capacity_bytes /
                      ShardCount(options, EstimatedCharge(kKeyAllowance, options.max_item_size))),
      clock_(options.clock ? std::move(options.clock) : std::function<absl::Time()>(absl::Now)) {
  const int count = ShardCount(options, EstimatedCharge(kKeyAllowance, options.max_item_size));
  shards_.reserve(count);
  for (int i = 0; i < count; ++i) {
    shards_.push_back(std::make_unique<Shard>(shard_capacity_, min_index_bytes_));
  }
}

MemoryBackend::~MemoryBackend() = default;

std::size_t MemoryBackend::EstimatedCharge(std::size_t key_size, std::size_t value_size) const {
  return SaturatingAdd(
      SaturatingAdd(entry_overhead_, min_index_bytes_),
      SaturatingAdd(StringBytesEstimate(key_size), StringBytesEstimate(value_size)));
}

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
  if (const std::size_t charge = EstimatedCharge(key.size(), value.size());
      charge > shard_capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "key ", QuoteKey(key), " needs ", charge,
        " bytes of memory (key and value with their list node, blocks and index), more than a "
        "shard holds (",
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
    const std::shared_ptr<const ItemString> value = ShardFor(key).Lookup(key, now, &removed);
    if (value == nullptr) {
      values.emplace_back(std::nullopt);
    } else {
      values.emplace_back(std::in_place, value->data(), value->size());
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
    Shard::EntryList entry = Shard::MakeEntry(item.key, item.value, expiry);
    Shard::EntryList removed;
    // kTooLarge: malloc gave the item's blocks more than ValidateItem estimated (an allocator
    // with coarser size classes, or glibc handing out a free chunk whole), and it no longer fits
    // a shard. It is dropped at once, as an LRU drops what it cannot hold.
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
  Shard::EntryList entry = Shard::MakeEntry(key, value, ExpiryFor(now, ttl));
  Shard::EntryList removed;
  switch (ShardFor(key).InsertIfAbsent(&entry, now, &removed)) {
    case Shard::Outcome::kStored:
      return true;
    case Shard::Outcome::kPresent:
      return false;
    case Shard::Outcome::kTooLarge:
      break;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "key ", QuoteKey(key), " needs ", entry.front().charge,
      " bytes of memory with its blocks, more than a shard holds (", shard_capacity_, " bytes)"));
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
