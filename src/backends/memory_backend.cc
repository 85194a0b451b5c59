#include "chunkcache/memory_backend.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "internal/sharded_lru.h"
#include "internal/striped_counter.h"

namespace chunkcache {
namespace {

using internal::LruAdmit;
using internal::LruInserted;

// Key length that the automatic shard reduction leaves room for besides a max-size value.
constexpr std::size_t kKeyAllowance = 1024;

// Longest key prefix quoted in an error message.
constexpr std::size_t kMaxQuotedKey = 64;

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

// The LRU's memory: items through ItemAllocator, index tables from malloc, each block counted at
// BlockCost, so that both are charged at what they really take.
struct MallocHeap {
  template <typename T>
  using Allocator = ItemAllocator<T>;
  static void* Allocate(std::size_t bytes) { return AllocateBlock(1, bytes); }
  static void Free(void* block, std::size_t /*bytes*/) { std::free(block); }
  static std::size_t Cost(void* block, std::size_t bytes) { return BlockCost(block, bytes); }
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

// What the LRU holds for a key.
struct Item {
  Item(std::string_view bytes, absl::Time expiry)
      : value(std::allocate_shared<ItemString>(ItemAllocator<ItemString>(), bytes.data(),
                                               bytes.size())),
        expiry(expiry) {}

  // Shared so that readers copy the bytes out after releasing the lock.
  std::shared_ptr<const ItemString> value;
  absl::Time expiry;
};

using Lru = internal::ShardedLru<Item, MallocHeap, internal::LruLocking::kExclusive>;

bool Expired(const Item& item, absl::Time now) { return now >= item.expiry; }

// A node holding `key` and `value`, charged the heap memory of its blocks: its list node, its
// value's shared block, and its key's and value's bytes where they do not fit inside their
// strings. Built before any lock is taken.
Lru::NodeList NewItem(std::string_view key, std::string_view value, absl::Time expiry) {
  const std::size_t before = item_bytes_allocated_here;
  Lru::NodeList node = Lru::NewNode(key, value, expiry);
  node.front().charge = item_bytes_allocated_here - before;
  return node;
}

class MemoryBackendImpl final : public MemoryBackend {
 public:
  explicit MemoryBackendImpl(MemoryBackendOptions options);

  std::size_t max_item_size() const override { return max_item_size_; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override;
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys, const ItemSink& sink) override;
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override;
  absl::Status Delete(absl::Span<const std::string_view> keys) override;
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override;
  MemoryBackendStats Stats() const override;

 private:
  // What an item with a key and a value of these sizes is charged (with glibc's allocator), plus
  // the smallest index table; computed without allocating. Saturates at SIZE_MAX.
  std::size_t EstimatedCharge(std::size_t key_size, std::size_t value_size) const;
  // OK if `key` and `value` may be stored; otherwise the error MultiSet or SetIfAbsent returns.
  absl::Status ValidateItem(std::string_view key, std::string_view value) const;
  // Whether an item charged `charge` fits in a shard alone, with the smallest index.
  bool Fits(std::size_t charge) const {
    return SaturatingAdd(charge, min_index_bytes_) <= shard_capacity_;
  }
  // The live item of `key` at `now`, made the most recently used of its shard; null if absent or
  // expired (an expired one is dropped). Counts a hit or a miss. Takes the shard's lock only while
  // it looks the key up.
  std::shared_ptr<const ItemString> Find(std::string_view key, absl::Time now);
  // Lru::Insert and Lru::Erase, counting what they evicted at `now`.
  template <typename Decide>
  LruInserted Insert(Lru::NodeList* node, absl::Time now, Decide&& decide);
  template <typename Decide>
  bool Erase(std::string_view key, absl::Time now, Decide&& decide);
  // Expired items count as expirations, live ones as evictions.
  void CountEvicted(const Lru::NodeList& evicted, absl::Time now);

  const std::size_t max_item_size_;
  // Measured at construction: an item's blocks when its key and value need none of their own,
  // and a shard's index table holding one item.
  const std::size_t entry_overhead_;
  const std::size_t min_index_bytes_;
  const int shards_;
  const std::size_t shard_capacity_;
  const std::function<absl::Time()> clock_;
  Lru lru_;
  internal::StripedCounter hits_;
  internal::StripedCounter misses_;
  internal::StripedCounter sets_;
  internal::StripedCounter deletes_;
  internal::StripedCounter evictions_;
  internal::StripedCounter expirations_;
};

MemoryBackendImpl::MemoryBackendImpl(MemoryBackendOptions options)
    : max_item_size_(options.max_item_size),
      entry_overhead_(NewItem({}, {}, absl::InfiniteFuture()).front().charge),
      min_index_bytes_(Lru::IndexBytesForOneEntry()),
      shards_(ShardCount(options, EstimatedCharge(kKeyAllowance, options.max_item_size))),
      shard_capacity_(options.capacity_bytes / shards_),
      clock_(options.clock ? std::move(options.clock) : std::function<absl::Time()>(absl::Now)),
      lru_({.shards = static_cast<std::size_t>(shards_), .shard_capacity = shard_capacity_}) {}

std::size_t MemoryBackendImpl::EstimatedCharge(std::size_t key_size, std::size_t value_size) const {
  return SaturatingAdd(
      SaturatingAdd(entry_overhead_, min_index_bytes_),
      SaturatingAdd(StringBytesEstimate(key_size), StringBytesEstimate(value_size)));
}

absl::Status MemoryBackendImpl::ValidateItem(std::string_view key, std::string_view value) const {
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

template <typename Decide>
LruInserted MemoryBackendImpl::Insert(Lru::NodeList* node, absl::Time now, Decide&& decide) {
  Lru::Removed removed;
  const LruInserted inserted = lru_.Insert(node, decide, &removed);
  if (inserted == LruInserted::kStored) sets_.Add();
  CountEvicted(removed.evicted, now);
  return inserted;
}

template <typename Decide>
bool MemoryBackendImpl::Erase(std::string_view key, absl::Time now, Decide&& decide) {
  Lru::Removed removed;
  const bool erased = lru_.Erase(key, decide, &removed);
  CountEvicted(removed.evicted, now);
  return erased;
}

void MemoryBackendImpl::CountEvicted(const Lru::NodeList& evicted, absl::Time now) {
  for (const Lru::Node& node : evicted)
    (Expired(node.value, now) ? expirations_ : evictions_).Add();
}

std::shared_ptr<const ItemString> MemoryBackendImpl::Find(std::string_view key, absl::Time now) {
  std::shared_ptr<const ItemString> value;
  bool expired = false;
  lru_.Lookup(key, [&](const Item& item) {
    expired = Expired(item, now);
    if (!expired) value = item.value;
    return !expired;
  });
  const auto still_expired = [now](const Item* item) {
    return item != nullptr && Expired(*item, now);
  };
  if (expired && Erase(key, now, still_expired)) expirations_.Add();
  (value == nullptr ? misses_ : hits_).Add();
  return value;
}

absl::StatusOr<std::vector<std::optional<std::string>>> MemoryBackendImpl::MultiGet(
    absl::Span<const std::string_view> keys) {
  const absl::Time now = clock_();
  std::vector<std::optional<std::string>> values;
  values.reserve(keys.size());
  for (const std::string_view key : keys) {
    const std::shared_ptr<const ItemString> value = Find(key, now);
    if (value == nullptr) {
      values.emplace_back(std::nullopt);
    } else {
      values.emplace_back(std::in_place, value->data(), value->size());
    }
  }
  return values;
}

// Hands over the stored value itself: its shared block is the owner, so nothing is copied and the
// bytes outlive a later overwrite, delete or eviction of the key. The sink runs with no lock held.
absl::Status MemoryBackendImpl::MultiGetEach(absl::Span<const std::string_view> keys,
                                             const ItemSink& sink) {
  const absl::Time now = clock_();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    std::shared_ptr<const ItemString> value = Find(keys[i], now);
    std::optional<ItemView> item;
    if (value != nullptr) {
      const std::string_view bytes(value->data(), value->size());
      item = ItemView{bytes, std::move(value)};
    }
    if (absl::Status status = sink(i, std::move(item)); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status MemoryBackendImpl::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
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
    Lru::NodeList node = NewItem(item.key, item.value, expiry);
    // Not Fits: malloc gave the item's blocks more than ValidateItem estimated (an allocator with
    // coarser size classes, or glibc handing out a free chunk whole), and it no longer fits a
    // shard. It is dropped at once, as an LRU drops what it cannot hold.
    if (!Fits(node.front().charge)) continue;
    Insert(&node, now, [](const Item* /*existing*/) { return LruAdmit::kInsert; });
  }
  return absl::OkStatus();
}

absl::Status MemoryBackendImpl::Delete(absl::Span<const std::string_view> keys) {
  const absl::Time now = clock_();
  for (const std::string_view key : keys) {
    Erase(key, now, [&](const Item* item) {
      if (item != nullptr) (Expired(*item, now) ? expirations_ : deletes_).Add();
      return true;
    });
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> MemoryBackendImpl::SetIfAbsent(std::string_view key, std::string_view value,
                                                    absl::Duration ttl) {
  if (absl::Status status = ValidateTtl(ttl); !status.ok()) return status;
  if (absl::Status status = ValidateItem(key, value); !status.ok()) return status;
  const absl::Time now = clock_();
  Lru::NodeList node = NewItem(key, value, ExpiryFor(now, ttl));
  if (!Fits(node.front().charge)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "key ", QuoteKey(key), " needs ", node.front().charge,
        " bytes of memory with its blocks, more than a shard holds (", shard_capacity_, " bytes)"));
  }
  const LruInserted inserted = Insert(&node, now, [&](const Item* existing) {
    if (existing == nullptr) return LruAdmit::kInsert;
    if (!Expired(*existing, now)) return LruAdmit::kKeep;
    expirations_.Add();
    return LruAdmit::kInsert;
  });
  return inserted == LruInserted::kStored;
}

MemoryBackendStats MemoryBackendImpl::Stats() const {
  const Lru::Usage usage = lru_.usage();
  return {.items = usage.entries,
          .bytes = usage.charges + usage.index_bytes,
          .index_bytes = usage.index_bytes,
          .hits = hits_.Value(),
          .misses = misses_.Value(),
          .sets = sets_.Value(),
          .deletes = deletes_.Value(),
          .evictions = evictions_.Value(),
          .expirations = expirations_.Value()};
}

}  // namespace

std::shared_ptr<MemoryBackend> NewMemoryBackend(MemoryBackendOptions options) {
  return std::make_shared<MemoryBackendImpl>(std::move(options));
}

}  // namespace chunkcache
