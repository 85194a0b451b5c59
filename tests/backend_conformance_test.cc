// The conformance kit against backends that each break one rule of the Backend contract: the kit
// must name the broken rule, both when asked for that check alone and in a full run. Every flawed
// backend here wraps a correct MemoryBackend and changes one thing; each is correct when called
// from one thread except where the rule it breaks is about threads.

#include "chunkcache/testing/backend_conformance.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "chunkcache/backend.h"
#include "chunkcache/memory_backend.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

using testing::CheckBackendConformance;
using testing::ConformanceCheckNames;
using testing::ConformanceOptions;

using Values = std::vector<std::optional<std::string>>;

// Options that keep a run against an in-process backend short.
ConformanceOptions Fast() {
  return {.short_ttl = absl::Milliseconds(50), .catalogue_megabytes = 1};
}

// Forwards every call to a MemoryBackend: the correct backend the flawed ones start from.
class MemoryWrapper : public Backend {
 public:
  explicit MemoryWrapper(MemoryBackendOptions options = {})
      : inner_(NewMemoryBackend(std::move(options))) {}

  std::size_t max_item_size() const override { return inner_->max_item_size(); }
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    return inner_->MultiGet(keys);
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    return inner_->MultiGetEach(keys, sink);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return inner_->MultiSet(items, ttl);
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    return inner_->Delete(keys);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return inner_->SetIfAbsent(key, value, ttl);
  }

 protected:
  // The value of `key` in the inner backend; nullopt if absent or on error.
  std::optional<std::string> InnerGet(std::string_view key) {
    absl::StatusOr<Values> values = inner_->MultiGet({&key, 1});
    if (!values.ok() || values->size() != 1) return std::nullopt;
    return (*values)[0];
  }

  const std::shared_ptr<MemoryBackend> inner_;
};

// ---- max-item-size ----

class MaxItemSizeDrifts : public MemoryWrapper {
 public:
  std::size_t max_item_size() const override { return inner_->max_item_size() - (calls_++ % 2); }

 private:
  mutable std::atomic<int> calls_{0};
};

class MaxItemSizeZero : public MemoryWrapper {
 public:
  std::size_t max_item_size() const override { return 0; }
};

// ---- multiget-order ----

class ReversesMultiGet : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (values.ok()) std::reverse(values->begin(), values->end());
    return values;
  }
};

class DropsAbsentSlots : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (values.ok()) std::erase(*values, std::nullopt);
    return values;
  }
};

// Answers a key asked twice in one request only the first time.
class AnswersDuplicatesOnce : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    std::set<std::string_view> seen;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (!seen.insert(keys[i]).second) (*values)[i] = std::nullopt;
    }
    return values;
  }
};

class EmptyValueReadsAbsent : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    for (std::optional<std::string>& value : *values) {
      if (value.has_value() && value->empty()) value = std::nullopt;
    }
    return values;
  }
};

// Reads values as C strings.
class CutsValuesAtNul : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    for (std::optional<std::string>& value : *values) {
      if (value.has_value()) value->resize(std::min(value->size(), value->find('\0')));
    }
    return values;
  }
};

class RefusesEmptyMultiGet : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    if (keys.empty()) return absl::InvalidArgumentError("no keys");
    return inner_->MultiGet(keys);
  }
};

// ---- multiget-each ----

// Passes each item the inner backend hands over through `hand_over`, which calls the caller's
// sink as it sees fit.
class EachWrapper : public MemoryWrapper {
 public:
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    std::vector<std::pair<std::size_t, std::optional<ItemView>>> items;
    absl::Status status =
        inner_->MultiGetEach(keys, [&](std::size_t index, std::optional<ItemView> item) {
          items.emplace_back(index, std::move(item));
          return absl::OkStatus();
        });
    if (!status.ok()) return status;
    return HandOver(items, sink);
  }

 protected:
  virtual absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                                const ItemSink& sink) = 0;
};

class EachSkipsTheLastIndex : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (std::size_t i = 0; i + 1 < items.size(); ++i) {
      if (absl::Status s = sink(items[i].first, items[i].second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

class EachRepeatsTheFirstIndex : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    if (!items.empty()) items.insert(items.begin(), items.front());
    for (auto& [index, item] : items) {
      if (absl::Status s = sink(index, item); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

class EachInReverseOrder : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (auto it = items.rbegin(); it != items.rend(); ++it) {
      if (absl::Status s = sink(it->first, it->second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

class EachIgnoresSinkErrors : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (auto& [index, item] : items) sink(index, item).IgnoreError();
    return absl::OkStatus();
  }
};

// Returns a sink's error with the same code but its own words added.
class EachRewordsSinkErrors : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (auto& [index, item] : items) {
      if (absl::Status s = sink(index, item); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("MultiGetEach stopped: ", s.message()));
      }
    }
    return absl::OkStatus();
  }
};

class EachWithoutOwners : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (auto& [index, item] : items) {
      if (item.has_value()) item->owner = nullptr;
      if (absl::Status s = sink(index, item); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

// Hands over an empty value as absent, which MultiGet reports present.
class EachEmptyValueAbsent : public EachWrapper {
  absl::Status HandOver(std::vector<std::pair<std::size_t, std::optional<ItemView>>>& items,
                        const ItemSink& sink) override {
    for (auto& [index, item] : items) {
      if (item.has_value() && item->value.empty()) item = std::nullopt;
      if (absl::Status s = sink(index, item); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

// Calls the sink on a thread of its own (joined before returning).
class EachOnAnotherThread : public MemoryWrapper {
 public:
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    absl::Status status;
    std::thread worker([&] { status = inner_->MultiGetEach(keys, sink); });
    worker.join();
    return status;
  }
};

// Hands over views of a scratch buffer that it scribbles over when the call returns, with owners
// that keep nothing alive (the buffers themselves live as long as the backend, so reading them
// afterwards is wrong bytes, not undefined behaviour).
class EachOwnersKeepNothing : public MemoryWrapper {
 public:
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    auto scratch = std::make_shared<std::vector<std::string>>();
    {
      internal::MutexLock lock(&mu_);
      buffers_.push_back(scratch);
    }
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values.status();
    scratch->reserve(values->size());  // no reallocation: views stay where they point
    absl::Status status;
    for (std::size_t i = 0; i < values->size() && status.ok(); ++i) {
      std::optional<ItemView> item;
      if ((*values)[i].has_value()) {
        scratch->push_back(*(*values)[i]);
        item = ItemView{scratch->back(), std::make_shared<int>(0)};
      }
      status = sink(i, std::move(item));
    }
    for (std::string& bytes : *scratch) {
      for (char& c : bytes) c = static_cast<char>(c ^ 0x5a);
    }
    return status;
  }

 private:
  internal::Mutex mu_;
  std::vector<std::shared_ptr<std::vector<std::string>>> buffers_ ABSL_GUARDED_BY(mu_);
};

// ---- replace ----

// Replaces an item in two writes: the first half of the new value over the old value's tail,
// then, a moment later, the whole new value.
class TornReplace : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    std::vector<std::string> halves;
    std::vector<KeyValue> torn;
    halves.reserve(items.size());
    for (const KeyValue& item : items) {
      std::optional<std::string> old = InnerGet(item.key);
      if (!old.has_value() || *old == item.value) continue;
      const std::size_t half = item.value.size() / 2;
      std::string mix(item.value.substr(0, half));
      if (old->size() > half) mix += old->substr(half);
      halves.push_back(std::move(mix));
      torn.push_back({item.key, halves.back()});
    }
    if (!torn.empty() && inner_->MultiSet(torn, ttl).ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return inner_->MultiSet(items, ttl);
  }
};

// Replaces an item by deleting it and, a moment later, storing the new value: briefly absent.
class DeleteThenSetReplace : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    std::vector<std::string_view> present;
    for (const KeyValue& item : items) {
      if (InnerGet(item.key).has_value()) present.push_back(item.key);
    }
    if (!present.empty() && ttl > absl::ZeroDuration() && inner_->Delete(present).ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return inner_->MultiSet(items, ttl);
  }
};

// ---- ttl ----

class IgnoresTtl : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return inner_->MultiSet(items, ttl > absl::ZeroDuration() ? absl::InfiniteDuration() : ttl);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return inner_->SetIfAbsent(key, value,
                               ttl > absl::ZeroDuration() ? absl::InfiniteDuration() : ttl);
  }
};

// Takes a non-positive TTL for "no expiry".
class AcceptsZeroTtl : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return inner_->MultiSet(items, ttl <= absl::ZeroDuration() ? absl::InfiniteDuration() : ttl);
  }
};

class SetIfAbsentAcceptsZeroTtl : public MemoryWrapper {
 public:
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return inner_->SetIfAbsent(key, value,
                               ttl <= absl::ZeroDuration() ? absl::InfiniteDuration() : ttl);
  }
};

// Refuses a non-positive TTL, but only after storing the batch.
class StoresThenRefusesZeroTtl : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (ttl > absl::ZeroDuration()) return inner_->MultiSet(items, ttl);
    inner_->MultiSet(items, absl::InfiniteDuration()).IgnoreError();
    return absl::InvalidArgumentError("non-positive ttl");
  }
};

class RefusesInfiniteTtl : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (ttl == absl::InfiniteDuration()) return absl::InvalidArgumentError("infinite ttl");
    return inner_->MultiSet(items, ttl);
  }
};

// ---- multiset-all-or-error ----

// Stores a batch item by item, stopping at the first bad one.
class HalfWritesBadBatches : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (items.empty()) return inner_->MultiSet(items, ttl);
    for (const KeyValue& item : items) {
      if (absl::Status s = inner_->MultiSet({&item, 1}, ttl); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

// Leaves the bad items of a batch out and reports success.
class SkipsBadItems : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    std::vector<KeyValue> good;
    for (const KeyValue& item : items) {
      if (!item.key.empty() && item.value.size() <= max_item_size()) good.push_back(item);
    }
    return inner_->MultiSet(good, ttl);
  }
};

// ---- oversize-value ----

// Declares 1 MiB but checks sizes only in batches of several items, so a lone item of up to the
// inner limit (2 MiB) is accepted.
class AcceptsLoneOversizeValues : public MemoryWrapper {
 public:
  AcceptsLoneOversizeValues() : MemoryWrapper({.max_item_size = std::size_t{2} << 20}) {}
  std::size_t max_item_size() const override { return std::size_t{1} << 20; }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    for (const KeyValue& item : items) {
      if (items.size() > 1 && item.value.size() > max_item_size()) {
        return absl::InvalidArgumentError("value too large");
      }
    }
    return inner_->MultiSet(items, ttl);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    if (value.size() > max_item_size()) return absl::InvalidArgumentError("value too large");
    return inner_->SetIfAbsent(key, value, ttl);
  }
};

// Stores a value of exactly max_item_size() without its last byte.
class TruncatesFullSizeValues : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    std::vector<KeyValue> cut(items.begin(), items.end());
    for (KeyValue& item : cut) {
      if (item.value.size() == max_item_size()) item.value.remove_suffix(1);
    }
    return inner_->MultiSet(cut, ttl);
  }
};

// Refuses a value of exactly max_item_size() (an off-by-one limit).
class RefusesFullSizeValues : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    for (const KeyValue& item : items) {
      if (item.value.size() >= max_item_size()) return absl::InvalidArgumentError("too large");
    }
    return inner_->MultiSet(items, ttl);
  }
};

// ---- keys ----

// Stores every item under Map(key): a lossy map makes distinct keys share an item.
class MapsKeys : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    std::vector<std::string> mapped = MapAll(keys);
    return inner_->MultiGet(std::vector<std::string_view>(mapped.begin(), mapped.end()));
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    std::vector<std::string> mapped = MapAll(keys);
    return inner_->MultiGetEach(std::vector<std::string_view>(mapped.begin(), mapped.end()), sink);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    std::vector<std::string> mapped;
    mapped.reserve(items.size());
    std::vector<KeyValue> renamed;
    for (const KeyValue& item : items) {
      mapped.push_back(item.key.empty() ? "" : Map(item.key));
      renamed.push_back({mapped.back(), item.value});
    }
    return inner_->MultiSet(renamed, ttl);
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    std::vector<std::string> mapped = MapAll(keys);
    return inner_->Delete(std::vector<std::string_view>(mapped.begin(), mapped.end()));
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return inner_->SetIfAbsent(key.empty() ? "" : Map(key), value, ttl);
  }

 protected:
  virtual std::string Map(std::string_view key) const = 0;

 private:
  std::vector<std::string> MapAll(absl::Span<const std::string_view> keys) const {
    std::vector<std::string> mapped;
    mapped.reserve(keys.size());
    for (std::string_view key : keys) mapped.push_back(key.empty() ? "" : Map(key));
    return mapped;
  }
};

// memcached's limit, applied silently.
class CutsKeysAt250Bytes : public MapsKeys {
  std::string Map(std::string_view key) const override { return std::string(key.substr(0, 250)); }
};

// Keys handled as C strings somewhere: NUL bytes vanish (a key of only NULs becomes "\x01").
class DropsNulFromKeys : public MapsKeys {
  std::string Map(std::string_view key) const override {
    std::string mapped(key);
    std::erase(mapped, '\0');
    return mapped.empty() ? "\x01" : mapped;
  }
};

// Keys "sanitized" to ASCII: every byte from 0x80 up becomes '?'.
class ReplacesHighBytesInKeys : public MapsKeys {
  std::string Map(std::string_view key) const override {
    std::string mapped(key);
    for (char& c : mapped) {
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';
    }
    return mapped;
  }
};

// Keys compared without case, as in a case-insensitive collation: 'A' and 'a' are one key.
class LowercasesKeys : public MapsKeys {
  std::string Map(std::string_view key) const override {
    return absl::AsciiStrToLower(absl::string_view(key.data(), key.size()));
  }
};

// Keys compared without trailing spaces, as in an SQL PAD SPACE collation: "k" and "k " are one.
class TrimsTrailingSpacesFromKeys : public MapsKeys {
  std::string Map(std::string_view key) const override {
    while (key.size() > 1 && key.back() == ' ') key.remove_suffix(1);
    return std::string(key);
  }
};

class RefusesKeysOver1KiB : public MemoryWrapper {
 public:
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    for (const KeyValue& item : items) {
      if (item.key.size() > 1024) return absl::InvalidArgumentError("key too long");
    }
    return inner_->MultiSet(items, ttl);
  }
};

// A read of the empty key finds an empty item.
class EmptyKeyReadsPresent : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i].empty()) (*values)[i] = std::string();
    }
    return values;
  }
};

// ---- delete ----

// NotFound for an absent key (InvalidArgument for the empty key).
class DeleteOfAbsentKeyFails : public MemoryWrapper {
 public:
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    for (std::string_view key : keys) {
      if (key.empty()) return absl::InvalidArgumentError("the empty key");
      if (!InnerGet(key).has_value()) return absl::NotFoundError("no such key");
    }
    return inner_->Delete(keys);
  }
};

class DeleteOfNothingFails : public MemoryWrapper {
 public:
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    if (keys.empty()) return absl::InvalidArgumentError("no keys");
    return inner_->Delete(keys);
  }
};

// Deletes key by key and stops, reporting success, at the first absent one.
class DeleteStopsAtAbsentKey : public MemoryWrapper {
 public:
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    for (std::string_view key : keys) {
      if (!InnerGet(key).has_value()) break;
      if (absl::Status s = inner_->Delete({&key, 1}); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

// ---- set-if-absent ----

class SetIfAbsentOverwrites : public MemoryWrapper {
 public:
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    const KeyValue item{key, value};
    if (absl::Status s = inner_->MultiSet({&item, 1}, ttl); !s.ok()) return s;
    return true;
  }
};

// Answers false for a present key, but stores the value anyway.
class SetIfAbsentFalseButStores : public MemoryWrapper {
 public:
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    absl::StatusOr<bool> stored = inner_->SetIfAbsent(key, value, ttl);
    if (stored.ok() && !*stored) {
      const KeyValue item{key, value};
      inner_->MultiSet({&item, 1}, ttl).IgnoreError();
    }
    return stored;
  }
};

// Keeps its own list of the keys SetIfAbsent stored, under a lock: an item MultiSet stored does not
// count as present.
class SetIfAbsentIgnoresMultiSet : public MemoryWrapper {
 public:
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    internal::MutexLock lock(&mu_);
    for (std::string_view key : keys) claimed_.erase(std::string(key));
    return inner_->Delete(keys);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    if (ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("non-positive ttl");
    internal::MutexLock lock(&mu_);
    if (!claimed_.insert(std::string(key)).second) return false;
    const KeyValue item{key, value};
    if (absl::Status s = inner_->MultiSet({&item, 1}, ttl); !s.ok()) {
      claimed_.erase(std::string(key));
      return s;
    }
    return true;
  }

 private:
  internal::Mutex mu_;
  std::set<std::string> claimed_ ABSL_GUARDED_BY(mu_);
};

// The default SetIfAbsent (Unimplemented).
class NoSetIfAbsent : public MemoryWrapper {
 public:
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return Backend::SetIfAbsent(key, value, ttl);
  }
};

// ---- set-if-absent-race ----

// Looks, waits a moment, then writes: two callers can both find the key absent.
class SetIfAbsentGetThenSet : public MemoryWrapper {
 public:
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    if (ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("non-positive ttl");
    if (InnerGet(key).has_value()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const KeyValue item{key, value};
    if (absl::Status s = inner_->MultiSet({&item, 1}, ttl); !s.ok()) return s;
    return true;
  }
};

// ---- set-if-absent-expiry ----

// Remembers every key written (until it is deleted, with forget_on_delete) and takes it for
// present, expired or not.
class SetIfAbsentRemembersKeys : public MemoryWrapper {
 public:
  explicit SetIfAbsentRemembersKeys(bool forget_on_delete) : forget_on_delete_(forget_on_delete) {}

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    absl::Status status = inner_->MultiSet(items, ttl);
    if (status.ok()) {
      internal::MutexLock lock(&mu_);
      for (const KeyValue& item : items) written_.insert(std::string(item.key));
    }
    return status;
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    internal::MutexLock lock(&mu_);
    if (forget_on_delete_) {
      for (std::string_view key : keys) written_.erase(std::string(key));
    }
    return inner_->Delete(keys);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    internal::MutexLock lock(&mu_);
    if (written_.contains(std::string(key))) return false;
    absl::StatusOr<bool> stored = inner_->SetIfAbsent(key, value, ttl);
    if (stored.ok() && *stored) written_.insert(std::string(key));
    return stored;
  }

 private:
  const bool forget_on_delete_;
  internal::Mutex mu_;
  std::set<std::string> written_ ABSL_GUARDED_BY(mu_);
};

// ---- concurrent-calls ----

// Passes every value it reads through one shared slot, as code with a static buffer would: alone
// it reads right, but under concurrent reads a value can come back as another key's. (The slot is
// locked, so the race is in the logic, not a data race for ThreadSanitizer.)
class SharesOneReadBuffer : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    for (std::optional<std::string>& value : *values) {
      if (!value.has_value()) continue;
      {
        internal::MutexLock lock(&mu_);
        slot_ = *value;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      internal::MutexLock lock(&mu_);
      value = slot_;
    }
    return values;
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    return Backend::MultiGetEach(keys, sink);  // through MultiGet above
  }

 private:
  internal::Mutex mu_;
  std::string slot_ ABSL_GUARDED_BY(mu_);
};

// ---- end-to-end ----

// Whether `key` has the shape of a ChunkedCache key: a manifest, <prefix>{<key>}, or a chunk,
// <prefix>{<key>}:<16 hex digits>:<decimal>.
bool IsCacheKey(std::string_view key) {
  const std::size_t brace = key.rfind('}');
  if (brace == std::string_view::npos || key.find('{') > brace) return false;
  const std::string_view rest = key.substr(brace + 1);
  if (rest.empty()) return true;
  if (rest.size() < 19 || rest[0] != ':' || rest[17] != ':') return false;
  return std::all_of(rest.begin() + 1, rest.begin() + 17, absl::ascii_isxdigit) &&
         std::all_of(rest.begin() + 18, rest.end(), absl::ascii_isdigit);
}

// Flips one byte in the middle of every value of 4 KiB or more that it reads under a ChunkedCache
// key (an entry's manifest with its payload inline, or a chunk): only a cache's large entries meet
// it.
class FlipsAByteInCacheEntries : public MemoryWrapper {
 public:
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    absl::StatusOr<Values> values = inner_->MultiGet(keys);
    if (!values.ok()) return values;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      std::optional<std::string>& value = (*values)[i];
      if (value.has_value() && value->size() >= 4096 && IsCacheKey(keys[i])) {
        (*value)[value->size() / 2] ^= 0x20;
      }
    }
    return values;
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    return Backend::MultiGetEach(keys, sink);  // through MultiGet above
  }
};

// ---- visibility ----

// An eventually consistent store: a MultiSet or Delete is checked at once but applied `delay`
// later (in order; an item's TTL still counts from the call). No SetIfAbsent.
class LateWrites : public MemoryWrapper {
 public:
  explicit LateWrites(absl::Duration delay) : delay_(delay) {}

  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    ApplyDue();
    return inner_->MultiGet(keys);
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    ApplyDue();
    return inner_->MultiGetEach(keys, sink);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("non-positive ttl");
    Write write{.due = absl::Now() + delay_, .expires = absl::Now() + ttl};
    for (const KeyValue& item : items) {
      if (item.key.empty()) return absl::InvalidArgumentError("empty key");
      if (item.value.size() > max_item_size()) return absl::InvalidArgumentError("too large");
      write.keys.emplace_back(item.key);
      write.values.emplace_back(item.value);
    }
    Queue(std::move(write));
    return absl::OkStatus();
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    Queue({.due = absl::Now() + delay_, .keys = {keys.begin(), keys.end()}});
    return absl::OkStatus();
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return Backend::SetIfAbsent(key, value, ttl);
  }

 private:
  struct Write {
    absl::Time due;
    std::optional<absl::Time> expires;  // unset for a delete
    std::vector<std::string> keys;
    std::vector<std::string> values;
  };

  void Queue(Write write) {
    {
      internal::MutexLock lock(&mu_);
      pending_.push_back(std::move(write));
    }
    ApplyDue();
  }

  void ApplyDue() {
    internal::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    while (!pending_.empty() && pending_.front().due <= now) {
      const Write& w = pending_.front();
      const std::vector<std::string_view> keys(w.keys.begin(), w.keys.end());
      if (!w.expires.has_value() || *w.expires <= now) {
        inner_->Delete(keys).IgnoreError();  // a delete, or a write already expired
      } else {
        std::vector<KeyValue> items;
        for (std::size_t i = 0; i < keys.size(); ++i) items.push_back({keys[i], w.values[i]});
        inner_->MultiSet(items, *w.expires - now).IgnoreError();
      }
      pending_.erase(pending_.begin());
    }
  }

  const absl::Duration delay_;
  internal::Mutex mu_;
  std::vector<Write> pending_ ABSL_GUARDED_BY(mu_);
};

// ---- the runs ----

using Make = std::function<std::shared_ptr<Backend>()>;

template <typename Flawed, typename... Args>
Make MakeOf(Args... args) {
  return [=] { return std::make_shared<Flawed>(args...); };
}

// Runs the kit on `make`'s backends for `check` alone, then every check, and REQUIREs both runs to
// report a violation of `check`.
void RequireCaught(std::string_view flaw, const Make& make, const std::string& check,
                   ConformanceOptions options = Fast()) {
  for (const bool alone : {true, false}) {
    options.only.clear();
    if (alone) options.only.push_back(check);
    const absl::Status status = CheckBackendConformance(make, options);
    INFO(flaw << (alone ? ", only '" + check + "'" : ", every check") << ": " << status.ToString());
    CHECK(absl::IsFailedPrecondition(status));
    CHECK(absl::StrContains(status.message(), "backend conformance, check '" + check + "'"));
  }
}

TEST_CASE("the checks have their documented names, in order", "[conformance]") {
  const std::vector<std::string_view> expected = {"max-item-size",
                                                  "multiget-order",
                                                  "multiget-each",
                                                  "replace",
                                                  "ttl",
                                                  "multiset-all-or-error",
                                                  "oversize-value",
                                                  "keys",
                                                  "delete",
                                                  "set-if-absent",
                                                  "set-if-absent-race",
                                                  "set-if-absent-expiry",
                                                  "concurrent-calls",
                                                  "end-to-end"};
  CHECK(ConformanceCheckNames() == expected);
}

TEST_CASE("a correct backend passes every check", "[conformance]") {
  const Make make = MakeOf<MemoryWrapper>();
  const absl::Status status = CheckBackendConformance(make, Fast());
  INFO(status.ToString());
  CHECK(status.ok());
  for (std::string_view check : ConformanceCheckNames()) {
    ConformanceOptions options = Fast();
    options.only = {std::string(check)};
    const absl::Status alone = CheckBackendConformance(make, options);
    INFO(check << ": " << alone.ToString());
    CHECK(alone.ok());
  }
}

TEST_CASE("bad kit arguments are InvalidArgument", "[conformance]") {
  ConformanceOptions options = Fast();
  options.only = {"multiget-order", "no-such-check"};
  const absl::Status unknown = CheckBackendConformance(MakeOf<MemoryWrapper>(), options);
  INFO(unknown.ToString());
  CHECK(absl::IsInvalidArgument(unknown));
  CHECK(absl::StrContains(unknown.message(), "no-such-check"));

  const absl::Status null = CheckBackendConformance([] { return nullptr; }, Fast());
  INFO(null.ToString());
  CHECK(absl::IsInvalidArgument(null));
}

TEST_CASE("max-item-size: zero, or different from one call to the next", "[conformance]") {
  RequireCaught("drifts", MakeOf<MaxItemSizeDrifts>(), "max-item-size");
  RequireCaught("zero", MakeOf<MaxItemSizeZero>(), "max-item-size");
}

TEST_CASE("multiget-order: answers out of order, missing, merged, or not byte-exact",
          "[conformance]") {
  RequireCaught("reversed", MakeOf<ReversesMultiGet>(), "multiget-order");
  RequireCaught("absent slots dropped", MakeOf<DropsAbsentSlots>(), "multiget-order");
  RequireCaught("duplicates answered once", MakeOf<AnswersDuplicatesOnce>(), "multiget-order");
  RequireCaught("empty value absent", MakeOf<EmptyValueReadsAbsent>(), "multiget-order");
  RequireCaught("values cut at NUL", MakeOf<CutsValuesAtNul>(), "multiget-order");
  RequireCaught("empty request refused", MakeOf<RefusesEmptyMultiGet>(), "multiget-order");
}

TEST_CASE("multiget-each: indices skipped, repeated or reordered, sink errors lost, bad owners",
          "[conformance]") {
  RequireCaught("last index skipped", MakeOf<EachSkipsTheLastIndex>(), "multiget-each");
  RequireCaught("first index twice", MakeOf<EachRepeatsTheFirstIndex>(), "multiget-each");
  RequireCaught("reverse order", MakeOf<EachInReverseOrder>(), "multiget-each");
  RequireCaught("sink errors ignored", MakeOf<EachIgnoresSinkErrors>(), "multiget-each");
  RequireCaught("sink errors reworded", MakeOf<EachRewordsSinkErrors>(), "multiget-each");
  RequireCaught("null owners", MakeOf<EachWithoutOwners>(), "multiget-each");
  RequireCaught("owners keep nothing", MakeOf<EachOwnersKeepNothing>(), "multiget-each");
  RequireCaught("empty value absent", MakeOf<EachEmptyValueAbsent>(), "multiget-each");
  RequireCaught("sink on another thread", MakeOf<EachOnAnotherThread>(), "multiget-each");
}

TEST_CASE("replace: a replace briefly visible half-written, or briefly absent",
          "[conformance][concurrency]") {
  RequireCaught("torn replace", MakeOf<TornReplace>(), "replace");
  RequireCaught("delete then set", MakeOf<DeleteThenSetReplace>(), "replace");
}

TEST_CASE("ttl: expiry ignored, non-positive TTLs accepted, infinite refused", "[conformance]") {
  RequireCaught("ttl ignored", MakeOf<IgnoresTtl>(), "ttl");
  RequireCaught("MultiSet ttl 0 accepted", MakeOf<AcceptsZeroTtl>(), "ttl");
  RequireCaught("SetIfAbsent ttl 0 accepted", MakeOf<SetIfAbsentAcceptsZeroTtl>(), "ttl");
  RequireCaught("ttl 0 refused after storing", MakeOf<StoresThenRefusesZeroTtl>(), "ttl");
  RequireCaught("infinite ttl refused", MakeOf<RefusesInfiniteTtl>(), "ttl");
}

TEST_CASE("ttl: a backend without expiry may say so, but still checks TTL arguments",
          "[conformance]") {
  ConformanceOptions options = Fast();
  options.supports_ttl = false;
  const absl::Status status = CheckBackendConformance(MakeOf<IgnoresTtl>(), options);
  INFO(status.ToString());
  CHECK(status.ok());
  RequireCaught("ttl 0 accepted, no expiry declared", MakeOf<AcceptsZeroTtl>(), "ttl", options);
}

TEST_CASE("multiset-all-or-error: part of a bad batch stored", "[conformance]") {
  RequireCaught("item by item", MakeOf<HalfWritesBadBatches>(), "multiset-all-or-error");
  RequireCaught("bad items skipped", MakeOf<SkipsBadItems>(), "multiset-all-or-error");
}

TEST_CASE("oversize-value: a full-size value lost or refused, one byte more accepted",
          "[conformance]") {
  RequireCaught("lone oversize value accepted", MakeOf<AcceptsLoneOversizeValues>(),
                "oversize-value");
  RequireCaught("full-size value truncated", MakeOf<TruncatesFullSizeValues>(), "oversize-value");
  RequireCaught("full-size value refused", MakeOf<RefusesFullSizeValues>(), "oversize-value");
}

TEST_CASE("keys: lossy key maps, long keys refused, the empty key found", "[conformance]") {
  RequireCaught("cut at 250 bytes", MakeOf<CutsKeysAt250Bytes>(), "keys");
  RequireCaught("NUL bytes dropped", MakeOf<DropsNulFromKeys>(), "keys");
  RequireCaught("high bytes replaced", MakeOf<ReplacesHighBytesInKeys>(), "keys");
  RequireCaught("case folded", MakeOf<LowercasesKeys>(), "keys");
  RequireCaught("trailing spaces trimmed", MakeOf<TrimsTrailingSpacesFromKeys>(), "keys");
  RequireCaught("keys over 1 KiB refused", MakeOf<RefusesKeysOver1KiB>(), "keys");
  RequireCaught("empty key present", MakeOf<EmptyKeyReadsPresent>(), "keys");
}

TEST_CASE("keys: a backend declaring a shorter max_key_size is held to that length only",
          "[conformance]") {
  ConformanceOptions options = Fast();
  options.max_key_size = 250;
  const absl::Status status = CheckBackendConformance(MakeOf<CutsKeysAt250Bytes>(), options);
  INFO(status.ToString());
  CHECK(status.ok());
  options.max_key_size = 251;
  RequireCaught("cut at 250 bytes, 251 declared", MakeOf<CutsKeysAt250Bytes>(), "keys", options);
}

TEST_CASE("delete: absent keys or an empty list an error, a batch cut short", "[conformance]") {
  RequireCaught("absent key NotFound", MakeOf<DeleteOfAbsentKeyFails>(), "delete");
  RequireCaught("empty list refused", MakeOf<DeleteOfNothingFails>(), "delete");
  RequireCaught("stops at an absent key", MakeOf<DeleteStopsAtAbsentKey>(), "delete");
}

TEST_CASE("set-if-absent: overwrites, misses MultiSet's items, remembers deleted keys",
          "[conformance]") {
  RequireCaught("overwrites", MakeOf<SetIfAbsentOverwrites>(), "set-if-absent");
  RequireCaught("false but stores", MakeOf<SetIfAbsentFalseButStores>(), "set-if-absent");
  RequireCaught("MultiSet's items absent", MakeOf<SetIfAbsentIgnoresMultiSet>(), "set-if-absent");
  RequireCaught("deleted keys present", MakeOf<SetIfAbsentRemembersKeys>(false), "set-if-absent");
}

TEST_CASE("set-if-absent: what the backend declares must be what it does", "[conformance]") {
  ConformanceOptions options = Fast();
  options.supports_set_if_absent = false;
  RequireCaught("works but declared unsupported", MakeOf<MemoryWrapper>(), "set-if-absent",
                options);
  RequireCaught("declared but Unimplemented", MakeOf<NoSetIfAbsent>(), "set-if-absent");

  // Declared unsupported and Unimplemented: the SetIfAbsent checks pass.
  const absl::Status status = CheckBackendConformance(MakeOf<NoSetIfAbsent>(), options);
  INFO(status.ToString());
  CHECK(status.ok());
}

TEST_CASE("set-if-absent-race: a get-then-set SetIfAbsent", "[conformance][concurrency]") {
  RequireCaught("get then set", MakeOf<SetIfAbsentGetThenSet>(), "set-if-absent-race");
}

TEST_CASE("set-if-absent-expiry: an expired item taken for present", "[conformance]") {
  RequireCaught("expiry ignored", MakeOf<SetIfAbsentRemembersKeys>(true), "set-if-absent-expiry");
}

TEST_CASE("concurrent-calls: a backend not safe for concurrent reads",
          "[conformance][concurrency]") {
  RequireCaught("one shared read buffer", MakeOf<SharesOneReadBuffer>(), "concurrent-calls");
}

TEST_CASE("an eventually consistent backend passes when it declares its visibility_delay",
          "[conformance]") {
  ConformanceOptions options = Fast();
  options.supports_set_if_absent = false;
  options.short_ttl = absl::Milliseconds(100);
  options.visibility_delay = absl::Milliseconds(100);
  const Make make = MakeOf<LateWrites>(absl::Milliseconds(10));
  const absl::Status status = CheckBackendConformance(make, options);
  INFO(status.ToString());
  CHECK(status.ok());

  options.visibility_delay = absl::ZeroDuration();
  const absl::Status undeclared = CheckBackendConformance(make, options);
  INFO(undeclared.ToString());
  CHECK(absl::IsFailedPrecondition(undeclared));
}

TEST_CASE("end-to-end: a byte flipped in the entries a cache reads", "[conformance]") {
  RequireCaught("byte flipped", MakeOf<FlipsAByteInCacheEntries>(), "end-to-end");
}

}  // namespace
}  // namespace chunkcache
