#include "cache/load_memo.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "internal/backoff.h"

namespace chunkcache::internal {
namespace {

absl::string_view MapKey(std::string_view key) { return {key.data(), key.size()}; }

}  // namespace

std::size_t LoadMemo::EpochSlot(std::string_view key) {
  return absl::Hash<absl::string_view>{}(MapKey(key)) % kEpochSlots;
}

std::uint64_t LoadMemo::Epoch(std::string_view key) const {
  MutexLock lock(&mu_);
  return epochs_[EpochSlot(key)];
}

std::optional<absl::StatusOr<Bytes>> LoadMemo::Answer(std::string_view key, absl::Time now) {
  MutexLock lock(&mu_);
  const auto it = memos_.find(MapKey(key));
  if (it == memos_.end() || now >= it->second.until) return std::nullopt;
  const Memo& memo = it->second;
  if (memo.value != nullptr) return absl::StatusOr<Bytes>(memo.value);
  if (memo.error.ok()) return std::nullopt;  // deferred only, nothing to answer with
  return absl::StatusOr<Bytes>(absl::Status(
      memo.error.code(),
      absl::StrCat(memo.error.message(),
                   " (chunkcache: a recent load of this key failed; the next "
                   "one is tried in ",
                   absl::FormatDuration(absl::Trunc(memo.until - now, absl::Milliseconds(1))),
                   ")")));
}

bool LoadMemo::Deferred(std::string_view key, absl::Time now) {
  MutexLock lock(&mu_);
  const auto it = memos_.find(MapKey(key));
  return it != memos_.end() && now < it->second.until && it->second.value == nullptr;
}

void LoadMemo::Failed(std::string_view key, const absl::Status& error, absl::Time now,
                      std::optional<std::uint64_t> if_epoch) {
  MutexLock lock(&mu_);
  if (StaleLocked(key, if_epoch)) return;
  Memo* memo = ValuelessMemoLocked(key, 0, now);
  if (memo == nullptr) return;
  memo->failures = std::min(memo->failures + 1, 62);
  memo->error = error.ok() ? absl::UnknownError("chunkcache: the load failed") : error;
  memo->until = now + BackoffLocked(memo->failures);
}

void LoadMemo::Defer(std::string_view key, absl::Time now, absl::Time until) {
  MutexLock lock(&mu_);
  Memo* memo = ValuelessMemoLocked(key, 0, now);
  if (memo == nullptr) return;
  memo->error = absl::OkStatus();
  memo->until = std::max(memo->until, until);
}

void LoadMemo::Unstored(std::string_view key, Bytes value, absl::Time now,
                        std::optional<std::uint64_t> if_epoch) {
  if (options_.hold <= absl::ZeroDuration() || value == nullptr) return;
  MutexLock lock(&mu_);
  if (StaleLocked(key, if_epoch)) return;
  Memo* memo = ValuelessMemoLocked(key, value->size(), now);
  if (memo == nullptr) return;
  memo->failures = 0;
  memo->error = absl::OkStatus();
  bytes_ += value->size();
  memo->value = std::move(value);
  memo->until = now + options_.hold;
}

void LoadMemo::Clear(std::string_view key) {
  MutexLock lock(&mu_);
  ++epochs_[EpochSlot(key)];
  const auto it = memos_.find(MapKey(key));
  if (it == memos_.end()) return;
  DropValueLocked(it->second);
  memos_.erase(it);
}

std::size_t LoadMemo::size() const {
  MutexLock lock(&mu_);
  return memos_.size();
}

LoadMemo::Memo* LoadMemo::ValuelessMemoLocked(std::string_view key, std::size_t bytes,
                                              absl::Time now) {
  if (const auto it = memos_.find(MapKey(key)); it != memos_.end()) DropValueLocked(it->second);
  if (!MakeRoomLocked(bytes, key, now)) return nullptr;
  return &memos_.try_emplace(std::string(key)).first->second;
}

bool LoadMemo::MakeRoomLocked(std::size_t bytes, std::string_view keep, absl::Time now) {
  if (bytes > options_.max_bytes && bytes > 0) return false;
  const bool new_key = !memos_.contains(MapKey(keep));
  if (!FullLocked(new_key, bytes)) return true;
  // The expired first, then the ones that expire soonest: one sort, rarely (only when full).
  std::vector<std::pair<absl::Time, std::string>> order;
  order.reserve(memos_.size());
  for (const auto& [key, memo] : memos_) {
    if (key != MapKey(keep))
      order.emplace_back(memo.until < now ? absl::InfinitePast() : memo.until, key);
  }
  std::sort(order.begin(), order.end());
  for (const auto& [until, key] : order) {
    if (!FullLocked(new_key, bytes)) break;
    const auto it = memos_.find(key);
    DropValueLocked(it->second);
    memos_.erase(it);
  }
  return !FullLocked(new_key, bytes);
}

void LoadMemo::DropValueLocked(Memo& memo) {
  if (memo.value == nullptr) return;
  bytes_ -= memo.value->size();
  memo.value = nullptr;
}

absl::Duration LoadMemo::BackoffLocked(int failures) {
  // Equal jitter: at least half the backoff, so the bound on loads holds; the rest spread at
  // random, so that many processes do not retry in step.
  return EqualJitter(ExponentialCeiling(failures, options_.retry_initial, options_.retry_max),
                     bitgen_);
}

}  // namespace chunkcache::internal
