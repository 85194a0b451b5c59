// chunkcache/memory_backend.h — an in-process Backend: a sharded, byte-bounded LRU with TTLs.
//
// MemoryBackend keeps items in this process's memory. Use it for a single-process service that
// wants no external cache, as the near tier in front of nothing else, and in tests (its clock can
// be injected, so TTLs are testable without sleeping). Items do not survive the process and are
// not shared between processes: use a network backend for that.
//
//   std::shared_ptr<chunkcache::MemoryBackend> backend =
//       chunkcache::NewMemoryBackend({.capacity_bytes = 512 << 20});
//   chunkcache::ChunkedCache cache(backend);
//   ...
//   std::uint64_t evictions = backend->Stats().evictions;
//
// Memory is bounded by capacity_bytes, counted as the heap memory the items really take (see
// MemoryBackendOptions::capacity_bytes). The bound is split evenly between lock shards; a shard
// that is full evicts its least recently used items. Expired items are dropped lazily: when a
// read, delete or SetIfAbsent finds them, or when they reach the least recently used end of their
// shard.
//
// Thread safety: a MemoryBackend is safe for concurrent use by any number of threads.

#ifndef CHUNKCACHE_MEMORY_BACKEND_H_
#define CHUNKCACHE_MEMORY_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/time/time.h"
#include "chunkcache/backend.h"

namespace chunkcache {

struct MemoryBackendOptions {
  // Upper bound on the heap memory the items take, as the allocator reports it. Every item is
  // charged the blocks it holds, each at the size malloc_usable_size gives plus glibc's 8-byte
  // chunk header (elsewhere than Linux, at glibc's rounding of the size asked for): its list node
  // (key, expiry, LRU links), its value's shared block, and its key's and value's bytes unless
  // short enough to sit inside their strings (15 bytes with libstdc++). Every shard is charged
  // its index table at its current size: about 25 bytes a slot, with 1/8 to 7/8 of the slots in
  // use. Stats().bytes is that sum and never exceeds capacity_bytes.
  // For example, with glibc: a 16-byte key with an 8-byte value is 192 bytes and an index slot
  // (about 240 bytes an item in a full 64 MiB backend); with a 100 KiB value, 100 KiB + 208 bytes;
  // with a 1 MiB value, 1 MiB + 4,280 bytes (blocks this large are mapped in whole pages).
  // Not counted: the backend and shard objects (a few hundred bytes each), a value a reader is
  // still copying out, or holds through MultiGetEach's ItemView::owner, after it was replaced,
  // deleted or evicted, an entry being built before it is stored (one per writing thread), and
  // memory the allocator holds free (fragmentation, or not yet returned to the system).
  // memory_backend_test checks the resident set: 64 MiB of tiny items grow it by 64.1 MiB, 32 MiB
  // of 100 KiB values by 31.3 MiB.
  // Each shard gets capacity_bytes / shards of it.
  // Default: 256 MiB.
  std::size_t capacity_bytes = std::size_t{256} << 20;

  // Largest value, in bytes, that one item may hold; a larger value is InvalidArgument.
  // Default: 1 MiB.
  std::size_t max_item_size = std::size_t{1} << 20;

  // Number of independently locked shards. More shards mean less lock contention; 1 gives an
  // exact global LRU order. Reduced automatically (down to 1) until each shard's budget holds an
  // item of max_item_size with a key of up to 1 KiB (and that item's blocks and index slot).
  // Values below 1 mean 1.
  // Default: 16.
  int shards = 16;

  // Time source for TTLs. Called from many threads at once, so it must be thread-safe. Meant for
  // tests, which can then expire items without sleeping.
  // Default: empty, meaning absl::Now.
  std::function<absl::Time()> clock;
};

// What a MemoryBackend holds and has done since its creation. items, bytes and index_bytes are
// summed shard by shard, each shard's under its lock; the counters are read one by one. A snapshot
// taken under concurrent use may be off by the operations in flight.
struct MemoryBackendStats {
  std::uint64_t items = 0;        // Items held now, including expired ones not yet dropped.
  std::uint64_t bytes = 0;        // Heap bytes charged now: items and index tables.
  std::uint64_t index_bytes = 0;  // The part of `bytes` that is the shards' index tables.
  std::uint64_t hits = 0;         // Keys MultiGet or MultiGetEach found live.
  std::uint64_t misses = 0;       // Keys MultiGet or MultiGetEach found absent or expired.
  std::uint64_t sets = 0;         // Items stored by MultiSet and by SetIfAbsent calls that won.
  std::uint64_t deletes = 0;      // Live items removed by Delete.
  std::uint64_t evictions = 0;    // Live items dropped to make room for new ones.
  std::uint64_t expirations = 0;  // Expired items dropped, whichever operation found them.
};

// A sharded, byte-bounded LRU cache with a time to live per item.
//
// - max_item_size() is MemoryBackendOptions::max_item_size.
// - MultiGet: a found item becomes the most recently used of its shard. The empty key is always
//   absent.
// - MultiGetEach: as MultiGet, but without copying: each item handed over is the stored value
//   itself, its ItemView::owner sharing the value's block. The bytes stay valid and unchanged
//   while the owner is held, even after the key is overwritten, deleted or evicted (they are then
//   no longer counted in Stats().bytes). The sink runs with no lock held, so it may call the
//   backend.
// - MultiSet: InvalidArgument for a non-positive ttl, an empty key or a value larger than
//   max_item_size; ResourceExhausted for an item that cannot fit in a shard even when it is empty
//   (a very long key, or a capacity below max_item_size), as estimated for glibc's allocator. In
//   either case nothing of the batch is stored: the whole batch is checked first. (An item that
//   passed the estimate but whose blocks measure larger than a shard, because malloc gave them
//   more than asked, is dropped at once, as if evicted; this takes an item within a few dozen
//   bytes of a whole shard.) When a key appears twice in a batch, the later value wins. A batch
//   larger than a shard's budget keeps only what fits, as any LRU would.
// - SetIfAbsent: atomic; an expired item counts as absent. Errors as for MultiSet, and
//   ResourceExhausted for an item whose measured size does not fit a shard.
//
// Thread safety: safe for concurrent use; every operation on one key is atomic. A batch is not
// atomic as a whole: a concurrent reader may see part of a MultiSet before the rest.
class MemoryBackend : public Backend {
 public:
  virtual MemoryBackendStats Stats() const = 0;
};

// Returns a MemoryBackend with `options`. Every value of the options is usable (see each field).
std::shared_ptr<MemoryBackend> NewMemoryBackend(MemoryBackendOptions options = {});

}  // namespace chunkcache

#endif  // CHUNKCACHE_MEMORY_BACKEND_H_
