// chunkcache/backend.h — the storage interface beneath ChunkedCache.
//
// A Backend moves opaque byte items by key: nothing about JSON, compression, chunks or versions
// lives here. The interface is batch-oriented so that a network backend can answer N keys in one
// round trip. Implement it to plug in your own store; decorators wrap an inner Backend and forward
// what they do not change.
//
// Thread safety: every Backend must be safe for concurrent use by many threads.

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

  // Largest value, in bytes, that one item may hold.
  virtual std::size_t max_item_size() const = 0;

  // One entry per key, in order; std::nullopt where the key is absent (or expired).
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

  // Stores every item with the given time to live (all or an error). `absl::InfiniteDuration()`
  // means no expiry; a non-positive ttl is InvalidArgument.
  virtual absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) = 0;

  // Removes the keys; absent keys are not an error.
  virtual absl::Status Delete(absl::Span<const std::string_view> keys) = 0;

  // Stores the item only if the key is absent; true if it was stored. Backends that cannot do
  // this atomically return absl::UnimplementedError (the default).
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
