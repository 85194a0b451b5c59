// What the last load of a key left behind that may answer the next callers instead of the origin:
// its failure, until a backoff passes, or a value the backend would not store, for a short hold.
// This is how a cache keeps an unwell origin or backend from turning every request into a load.
//
// Thread safety: safe for concurrent use (one mutex; used only on the load path, never on a hit).
// Memory: at most kMaxKeys keys and `max_bytes` of held values; beyond that the memos that expire
// soonest are dropped (which costs at most an earlier load, never a wrong answer).
//
//   internal::LoadMemo memo({.retry_initial = absl::Milliseconds(100),
//                            .retry_max = absl::Seconds(5), .hold = absl::Seconds(1),
//                            .max_bytes = 64 << 20});
//   if (auto held = memo.Answer(key, now)) return *held;  // a recent failure, or unstored bytes
//   const std::uint64_t epoch = memo.Epoch(key);
//   ... load ...
//   memo.Failed(key, status, now, epoch);  // or memo.Unstored(...), or memo.Clear(key)

#ifndef CHUNKCACHE_SRC_CACHE_LOAD_MEMO_H_
#define CHUNKCACHE_SRC_CACHE_LOAD_MEMO_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

class LoadMemo {
 public:
  static constexpr std::size_t kMaxKeys = 4096;
  static constexpr std::size_t kEpochSlots = 256;

  struct Options {
    absl::Duration retry_initial;  // backoff after the first failure in a row
    absl::Duration retry_max;      // the backoff doubles up to this
    absl::Duration hold;           // how long an unstored value answers; zero: never
    std::size_t max_bytes = 0;     // bound on the held values' bytes
  };

  explicit LoadMemo(Options options) : options_(options) {}
  LoadMemo(const LoadMemo&) = delete;
  LoadMemo& operator=(const LoadMemo&) = delete;

  // The answer the last load of `key` left, if it still holds: its error (marked as held back)
  // or its unstored value.
  std::optional<absl::StatusOr<Bytes>> Answer(std::string_view key, absl::Time now);

  // True if `key` may not be loaded yet: a failure's backoff or a Defer has not passed.
  bool Deferred(std::string_view key, absl::Time now);

  // Counts the Clear calls of `key` (hashed into slots): read it before a load starts, and pass
  // it to Failed or Unstored, which then do nothing if the key was cleared since (this process
  // wrote it: what the load found is older than that write).
  std::uint64_t Epoch(std::string_view key) const;

  // A load failed: callers get `error` until a backoff passes, longer with each failure in a row
  // (doubling from retry_initial to retry_max, drawn from [half, all] of it).
  void Failed(std::string_view key, const absl::Status& error, absl::Time now,
              std::optional<std::uint64_t> if_epoch = {});

  // No load of `key` before `until` (another process is loading it); keeps the failure count.
  void Defer(std::string_view key, absl::Time now, absl::Time until);

  // A loaded value could not be stored: it answers callers for `hold`.
  void Unstored(std::string_view key, Bytes value, absl::Time now,
                std::optional<std::uint64_t> if_epoch = {});

  // Forgets `key` and advances its epoch: a load succeeded and was stored, or this process wrote
  // the key.
  void Clear(std::string_view key);

  std::size_t size() const;

 private:
  struct Memo {
    absl::Status error;  // a failure's, or OK
    Bytes value;         // an unstored value, or null
    absl::Time until;    // the memo answers (or defers loads) until then
    int failures = 0;    // in a row
  };

  // The memo of `key` with any held value dropped, added if need be; null if there is no room for
  // it and `bytes` more held bytes.
  Memo* ValuelessMemoLocked(std::string_view key, std::size_t bytes, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Makes room for one more key and `bytes` more held bytes, dropping the memos that expire
  // soonest (expired ones first). False if `bytes` alone is over the bound.
  bool MakeRoomLocked(std::size_t bytes, std::string_view keep, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if one more key (when `new_key`) and `bytes` more held bytes are over the bounds.
  bool FullLocked(bool new_key, std::size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (new_key && memos_.size() >= kMaxKeys) || bytes_ + bytes > options_.max_bytes;
  }
  void DropValueLocked(Memo& memo) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration BackoffLocked(int failures) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  static std::size_t EpochSlot(std::string_view key);
  bool StaleLocked(std::string_view key, std::optional<std::uint64_t> if_epoch) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return if_epoch.has_value() && *if_epoch != epochs_[EpochSlot(key)];
  }

  const Options options_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Memo> memos_ ABSL_GUARDED_BY(mu_);
  std::size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::array<std::uint64_t, kEpochSlots> epochs_ ABSL_GUARDED_BY(mu_){};
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_LOAD_MEMO_H_
