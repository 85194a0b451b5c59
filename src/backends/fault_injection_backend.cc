#include "chunkcache/fault_injection_backend.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

using internal::Mutex;
using internal::MutexLock;

constexpr std::memory_order kRelaxed = std::memory_order_relaxed;

// What MultiGet does to the value at `index`: report it absent, or XOR its byte `byte` with
// `mask`.
struct ReadFault {
  std::size_t index;
  bool lost;
  std::size_t byte;
  unsigned char mask;
};

// The options and the generator behind every decision, under one lock. Only the decisions are
// taken under it; sleeping, forwarding and damaging values happen outside.
class Dice {
 public:
  // What a call does before it is forwarded, and the options it runs with.
  struct Entry {
    FaultInjectionOptions options;
    bool delayed = false;
    bool failed = false;
  };

  explicit Dice(const FaultInjectionOptions& options) { Reset(options); }

  void Reset(const FaultInjectionOptions& options) {
    MutexLock lock(&mu_);
    options_ = options;
    rng_.seed(options.seed);
  }

  FaultInjectionOptions options() const {
    MutexLock lock(&mu_);
    return options_;
  }

  Entry Enter(double FaultInjectionOptions::*error_rate) {
    MutexLock lock(&mu_);
    Entry entry{.options = options_};
    entry.delayed = options_.delay > absl::ZeroDuration() && Happens(options_.delay_rate);
    entry.failed = Happens(options_.*error_rate);
    return entry;
  }

  // Which of `count` items a MultiSet drops.
  std::vector<bool> DrawDrops(std::size_t count, double rate) {
    std::vector<bool> dropped(count);
    MutexLock lock(&mu_);
    for (std::size_t i = 0; i < count; ++i) dropped[i] = Happens(rate);
    return dropped;
  }

  // What MultiGet does to `values`, in index order; values left alone are not listed.
  std::vector<ReadFault> DrawReadFaults(const std::vector<std::optional<std::string>>& values,
                                        const FaultInjectionOptions& options) {
    std::vector<ReadFault> faults;
    MutexLock lock(&mu_);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!values[i].has_value()) continue;
      if (std::optional<ReadFault> fault = DrawReadFaultLocked(i, values[i]->size(), options)) {
        faults.push_back(*fault);
      }
    }
    return faults;
  }

  // What MultiGetEach does to the present value at `index`, of `size` bytes: the same draws as
  // DrawReadFaults makes for it, so that a call makes the decisions MultiGet would.
  std::optional<ReadFault> DrawReadFault(std::size_t index, std::size_t size,
                                         const FaultInjectionOptions& options) {
    MutexLock lock(&mu_);
    return DrawReadFaultLocked(index, size, options);
  }

 private:
  std::optional<ReadFault> DrawReadFaultLocked(std::size_t index, std::size_t size,
                                               const FaultInjectionOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (Happens(options.lose_item_rate)) {
      return ReadFault{.index = index, .lost = true, .byte = 0, .mask = 0};
    }
    if (size == 0 || !Happens(options.flip_byte_rate)) return std::nullopt;
    const std::size_t byte = rng_() % size;
    const auto mask = static_cast<unsigned char>(1 + rng_() % 255);
    return ReadFault{.index = index, .lost = false, .byte = byte, .mask = mask};
  }

  // True with probability `rate`. Draws nothing for rates outside (0, 1), so that a fault that is
  // off does not shift the decisions of the others. Portable: mt19937_64 is fully specified.
  bool Happens(double rate) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!(rate > 0)) return false;  // Also NaN.
    if (rate >= 1) return true;
    return static_cast<double>(rng_() >> 11) * 0x1.0p-53 < rate;
  }

  mutable Mutex mu_;
  FaultInjectionOptions options_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
};

class FaultInjectionBackendImpl final : public FaultInjectionBackend {
 public:
  // `inner` must not be null.
  FaultInjectionBackendImpl(std::shared_ptr<Backend> inner, const FaultInjectionOptions& options)
      : inner_(std::move(inner)), dice_(options) {}

  std::size_t max_item_size() const override { return inner_->max_item_size(); }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override;
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys, const ItemSink& sink) override;
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override;

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    const absl::StatusOr<FaultInjectionOptions> options = Enter("Delete", Access::kWrite);
    if (!options.ok()) return options.status();
    return inner_->Delete(keys);
  }

  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    const absl::StatusOr<FaultInjectionOptions> options = Enter("SetIfAbsent", Access::kWrite);
    if (!options.ok()) return options.status();
    return inner_->SetIfAbsent(key, value, ttl);
  }

  void SetOptions(FaultInjectionOptions options) override { dice_.Reset(options); }
  FaultInjectionOptions options() const override { return dice_.options(); }

  FaultInjectionStats Stats() const override {
    return {.calls = calls_.load(kRelaxed),
            .read_errors = read_errors_.load(kRelaxed),
            .write_errors = write_errors_.load(kRelaxed),
            .dropped_writes = dropped_writes_.load(kRelaxed),
            .lost_items = lost_items_.load(kRelaxed),
            .flipped_bytes = flipped_bytes_.load(kRelaxed),
            .delays = delays_.load(kRelaxed)};
  }

  const std::shared_ptr<Backend>& inner() const override { return inner_; }

 private:
  enum class Access { kRead, kWrite };

  // Counts the call, takes a snapshot of the options and draws whether the call is delayed and
  // whether it fails (with read_error_rate or write_error_rate), sleeping outside the lock. The
  // injected error if it fails, the snapshot otherwise.
  absl::StatusOr<FaultInjectionOptions> Enter(std::string_view operation, Access access);

  const std::shared_ptr<Backend> inner_;
  Dice dice_;

  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> read_errors_{0};
  std::atomic<std::uint64_t> write_errors_{0};
  std::atomic<std::uint64_t> dropped_writes_{0};
  std::atomic<std::uint64_t> lost_items_{0};
  std::atomic<std::uint64_t> flipped_bytes_{0};
  std::atomic<std::uint64_t> delays_{0};
};

absl::StatusOr<FaultInjectionOptions> FaultInjectionBackendImpl::Enter(std::string_view operation,
                                                                       Access access) {
  const bool write = access == Access::kWrite;
  double FaultInjectionOptions::*const error_rate =
      write ? &FaultInjectionOptions::write_error_rate : &FaultInjectionOptions::read_error_rate;
  calls_.fetch_add(1, kRelaxed);
  const Dice::Entry entry = dice_.Enter(error_rate);
  if (entry.delayed) {
    delays_.fetch_add(1, kRelaxed);
    absl::SleepFor(entry.options.delay);
  }
  if (!entry.failed) return entry.options;
  (write ? write_errors_ : read_errors_).fetch_add(1, kRelaxed);
  const absl::StatusCode code = entry.options.error_code == absl::StatusCode::kOk
                                    ? absl::StatusCode::kUnavailable
                                    : entry.options.error_code;
  const char* rate_name = write ? "write_error_rate" : "read_error_rate";
  return absl::Status(
      code, absl::StrCat("fault injected: ", absl::string_view(operation.data(), operation.size()),
                         " failed (", rate_name, " ", entry.options.*error_rate,
                         "); the inner backend was not called"));
}

absl::StatusOr<std::vector<std::optional<std::string>>> FaultInjectionBackendImpl::MultiGet(
    absl::Span<const std::string_view> keys) {
  const absl::StatusOr<FaultInjectionOptions> options = Enter("MultiGet", Access::kRead);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::vector<std::optional<std::string>>> values = inner_->MultiGet(keys);
  if (!values.ok() || !(options->lose_item_rate > 0 || options->flip_byte_rate > 0)) return values;

  for (const ReadFault& fault : dice_.DrawReadFaults(*values, *options)) {
    std::optional<std::string>& value = (*values)[fault.index];
    if (fault.lost) {
      value.reset();
      lost_items_.fetch_add(1, kRelaxed);
    } else {
      (*value)[fault.byte] =
          static_cast<char>(static_cast<unsigned char>((*value)[fault.byte]) ^ fault.mask);
      flipped_bytes_.fetch_add(1, kRelaxed);
    }
  }
  return values;
}

// The faults of MultiGet, drawn item by item as the inner backend hands them over. Items are
// forwarded as they come; only a value with a flipped byte is copied (the inner bytes never
// change).
absl::Status FaultInjectionBackendImpl::MultiGetEach(absl::Span<const std::string_view> keys,
                                                     const ItemSink& sink) {
  const absl::StatusOr<FaultInjectionOptions> options = Enter("MultiGetEach", Access::kRead);
  if (!options.ok()) return options.status();
  if (!(options->lose_item_rate > 0 || options->flip_byte_rate > 0)) {
    return inner_->MultiGetEach(keys, sink);
  }
  return inner_->MultiGetEach(
      keys, [&](std::size_t index, std::optional<ItemView> item) -> absl::Status {
        if (!item.has_value()) return sink(index, std::nullopt);
        const std::optional<ReadFault> fault =
            dice_.DrawReadFault(index, item->value.size(), *options);
        if (!fault.has_value()) return sink(index, std::move(item));
        if (fault->lost) {
          lost_items_.fetch_add(1, kRelaxed);
          return sink(index, std::nullopt);
        }
        auto flipped = std::make_shared<std::string>(item->value);
        (*flipped)[fault->byte] =
            static_cast<char>(static_cast<unsigned char>((*flipped)[fault->byte]) ^ fault->mask);
        flipped_bytes_.fetch_add(1, kRelaxed);
        const std::string_view bytes = *flipped;
        return sink(index, ItemView{bytes, std::move(flipped)});
      });
}

absl::Status FaultInjectionBackendImpl::MultiSet(absl::Span<const KeyValue> items,
                                                 absl::Duration ttl) {
  const absl::StatusOr<FaultInjectionOptions> options = Enter("MultiSet", Access::kWrite);
  if (!options.ok()) return options.status();
  if (!(options->drop_write_rate > 0)) return inner_->MultiSet(items, ttl);

  const std::vector<bool> dropped = dice_.DrawDrops(items.size(), options->drop_write_rate);
  std::vector<KeyValue> kept;
  kept.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!dropped[i]) kept.push_back(items[i]);
  }
  absl::Status status = inner_->MultiSet(kept, ttl);
  if (status.ok()) dropped_writes_.fetch_add(items.size() - kept.size(), kRelaxed);
  return status;
}

}  // namespace

absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> NewFaultInjectionBackend(
    std::shared_ptr<Backend> inner, FaultInjectionOptions options) {
  if (inner == nullptr) return absl::InvalidArgumentError("the inner backend is null");
  return std::make_shared<FaultInjectionBackendImpl>(std::move(inner), options);
}

}  // namespace chunkcache
