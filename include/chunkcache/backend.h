// chunkcache/backend.h — the storage interface beneath ChunkedCache, and its contract.
//
// A Backend moves opaque byte items by key: nothing about JSON, compression, chunks or versions
// lives here. The interface is batch-oriented so that a network backend can answer N keys in one
// round trip. Implement it to plug in your own store; decorators wrap an inner Backend and forward
// what they do not change. chunkcache/testing/backend_conformance.h checks an implementation
// against every rule below (CheckBackendConformance); run it in your backend's tests.
//
// THE CONTRACT
//
// Thread safety. Every method may be called by many threads at once, in any mix. A healthy store
//   answers concurrent calls without errors (the conformance kit's 'concurrent-calls' expects
//   none).
//
// Keys. Any bytes (every value 0-255, NUL included), 1 to at least 4096 bytes; distinct byte
//   strings are distinct items. The keys ChunkedCache writes are printable ASCII without spaces
//   (0x21-0x7E; the logical key and the prefix %XX-escaped, FORMAT.md). They always contain '{'
//   and '}' (the Redis hash tag), chunk and lease keys also ':'; '/', '%' and any other printable
//   byte can come from the escaped key or prefix. The longest is a chunk key of a 1024-byte
//   logical key: 3102 bytes plus the escaped prefix (3105 with the default "cc:"), so 4096 bytes
//   hold every key as long as the escaped key_prefix stays under 994 bytes.
//   An empty key is InvalidArgument for MultiSet and SetIfAbsent; MultiGet may answer it absent or
//   InvalidArgument, Delete OK or InvalidArgument.
//   The views are std::string_view. On Debian 12 (Abseil 20220623) absl::string_view is a
//   different type and does not convert from it implicitly: pass a key to absl::StrCat and
//   friends as absl::string_view(key.data(), key.size()).
//
// Values. Any bytes, 0 to max_item_size() bytes (an empty value is an item, not an absence). A
//   larger value is InvalidArgument, and is never truncated. max_item_size() is the same on every
//   call, and ChunkedCache needs it to be at least kMinChunkSize (128).
//
// Reads. MultiGet answers one entry per key, in request order (duplicates answered each time):
//   the item's exact bytes, or std::nullopt if the key is absent or expired. Absence is never an
//   error. An empty request is answered OK and empty (MultiGetEach then calls no sink; Delete of
//   no keys is OK too). Once a write returned OK, reads see it, or, for an eventually consistent
//   store, see it after a bounded delay (declare it to the conformance kit): the cache reads a
//   manifest whose chunks are not visible yet as a miss (counted and logged as a corrupt read;
//   GetOrLoad reloads and rewrites the entry), never as wrong bytes.
//
// Writes. MultiSet stores every item or returns an error. Invalid input (an empty key, an
//   oversize value, a non-positive ttl) anywhere in the batch is InvalidArgument before anything
//   is written: a bad batch stores none of its items. After an error of another kind some items
//   may be stored. Replacing an item is atomic for readers: a read sees the old bytes or the new
//   ones, never a mix and never an absence. absl::InfiniteDuration() means no expiry (a store
//   whose items always expire uses its longest TTL and says so, as Momento does). The cache never
//   repeats a key within one batch.
//
// Expiry. An item is absent once its ttl has passed: MultiGet answers std::nullopt and
//   SetIfAbsent treats the key as free. A positive ttl finer than the store's granularity is
//   accepted and rounded up to it (Redis: 1 ms, Momento: 1 s), never refused or rounded to 0.
//
// Errors. Return absl::Status, never throw (an exception that escapes is turned into Internal
//   and counted as a backend failure). What ChunkedCache and RetryingBackend make of each code:
//
//   code                    counts    a write that failed    RetryingBackend  GetOrLoad after a
//                           toward    with it may have       retries it       read that failed
//                           the       landed ("ambiguous")                    with it (no near
//                           breaker                                           copy, no held load)
//   Unavailable             yes       yes                    yes              loads, does not
//   DeadlineExceeded        yes       yes                    yes                store (or gives
//                                                                               up: see below)
//   ResourceExhausted       yes       no                     yes              loads and stores
//   Internal                yes       yes                    no               loads and stores
//   Unknown, Aborted,       no        yes                    no               loads and stores
//   Cancelled, DataLoss
//   every other code        no        no                     no               loads and stores
//
//   - A read error: Get, GetStream and GetOrLoad serve the near copy if there is one younger
//     than ttl (l1_capacity_bytes > 0); else Get, GetStream, GetCompressed and Inspect return the
//     error, and GetOrLoad answers from what an earlier load of the key left (a held failure, a
//     value that could not be stored) or loads from the origin, without the lease, unless its
//     caller's deadline has passed (then DeadlineExceeded). NotFound as a status is read as a
//     miss, like an absent key: answer an absent key with std::nullopt, not NotFound.
//   - A write error: Put returns it. A loaded value that could not be stored answers this
//     process's GetOrLoad calls of the key for CacheOptions::unstored_hold (a Put or Invalidate
//     clears it). Chunks a failed write left are left to expire; after a definite (not ambiguous)
//     error on the manifest the new chunks are deleted, after an ambiguous one they are left
//     (the manifest may point at them).
//   - The circuit breaker is off by default. With breaker_failure_threshold = N it opens after N
//     backend calls in a row (reads, writes, Delete, SetIfAbsent) fail with a code marked above;
//     any other outcome resets the count. DeadlineExceeded at the caller's own deadline counts.
//   - RetryingBackendOptions::retry_on changes its column. It never retries SetIfAbsent, nor
//     MultiGetEach once an item was handed over, nor past its own deadline or CallDeadline().
//   - Unimplemented from SetIfAbsent turns the cross-process lease off for good in that cache
//     (logged once); another SetIfAbsent error makes that load (and the callers sharing it) go
//     without the lease.
//
// Deadlines. Inside Get, GetStream and GetOrLoad (its store after a load included) with
//   CallOptions::deadline, CallDeadline() (below) is that deadline: give up by then with
//   DeadlineExceeded. Elsewhere (Put, Invalidate, GetCompressed, Inspect, background refreshes)
//   it is absl::InfiniteFuture().

#ifndef CHUNKCACHE_BACKEND_H_
#define CHUNKCACHE_BACKEND_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace chunkcache {

// One item to store. Both views must stay valid for the duration of the call.
struct KeyValue {
  std::string_view key;
  std::string_view value;
};

// One item handed over by Backend::MultiGetEach: its bytes, and what keeps them valid. The
// receiver may hold `owner` (never null) to use `value` after the call; the bytes never change.
struct ItemView {
  std::string_view value;
  std::shared_ptr<const void> owner;
};

// Receives the items of Backend::MultiGetEach: the key's index in the request and its item, or
// std::nullopt where the key is absent. An error it returns stops the call, which returns it.
using ItemSink = std::function<absl::Status(std::size_t index, std::optional<ItemView> item)>;

class Backend {
 public:
  virtual ~Backend() = default;

  // Largest value, in bytes, that one item may hold: the value alone (a store whose own limit
  // counts the key too leaves room for the longest key, as kMomentoMaxValueBytes does).
  virtual std::size_t max_item_size() const = 0;

  // One entry per key, in request order; std::nullopt where the key is absent (or expired).
  virtual absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) = 0;

  // The same answer as MultiGet, handed to `sink` one key at a time, in key order, as soon as each
  // item (and every one before it) is available: a reader can use the first items while the
  // later ones are still in flight. `sink` is called on the calling thread, once per key unless
  // it returns an error; the call then stops and returns that error. A backend error after some
  // items were handed over is returned too (the items handed over stay valid). Optional: the
  // default calls MultiGet and hands its strings over without copying them; a network backend
  // overrides it to hand items over as its replies arrive, a memory store to share its items.
  virtual absl::Status MultiGetEach(absl::Span<const std::string_view> keys, const ItemSink& sink);

  // Stores every item with the given time to live (all or an error; invalid input stores
  // nothing). `absl::InfiniteDuration()` means no expiry; a non-positive ttl is InvalidArgument.
  virtual absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) = 0;

  // Removes the keys; absent keys are not an error.
  virtual absl::Status Delete(absl::Span<const std::string_view> keys) = 0;

  // Stores the item only if the key is absent (an expired item is absent); true if it was
  // stored, false if the key held an item (which is left unchanged). Atomic: of many callers at
  // once on an absent key exactly one gets true. Input is checked as for MultiSet. Backends that
  // cannot do this atomically return absl::UnimplementedError (the default), which turns the
  // cache's cross-process lease (CacheOptions::lease_ttl) off.
  virtual absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                           absl::Duration ttl);
};

// The deadline of the chunkcache call this thread is making (CallOptions::deadline), for Backend
// implementations: an operation made on behalf of that call should give up by then with
// DeadlineExceeded (or use it to shorten its own timeouts) rather than run to its own limits. The
// built-in backends and decorators do. absl::InfiniteFuture() when the thread is not inside a call
// with a deadline (background refreshes have none).
absl::Time CallDeadline();

// Sets CallDeadline() for the current thread while it lives: the earlier of `deadline` and any
// deadline already set. ChunkedCache does this for every call; a backend's tests may too.
class ScopedCallDeadline {
 public:
  explicit ScopedCallDeadline(absl::Time deadline);
  ~ScopedCallDeadline();
  ScopedCallDeadline(const ScopedCallDeadline&) = delete;
  ScopedCallDeadline& operator=(const ScopedCallDeadline&) = delete;

 private:
  absl::Time previous_;
};

}  // namespace chunkcache

#endif  // CHUNKCACHE_BACKEND_H_
