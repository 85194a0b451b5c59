#include "chunkcache/retrying_backend.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "internal/backoff.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

using internal::Mutex;
using internal::MutexLock;

constexpr std::memory_order kRelaxed = std::memory_order_relaxed;

const absl::Status& StatusOf(const absl::Status& status) { return status; }

template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

// `status` with its code and payloads, and `context` before its message.
absl::Status Annotate(const absl::Status& status, std::string_view context) {
  absl::Status annotated(
      status.code(),
      absl::StrCat(absl::string_view(context.data(), context.size()), ": ", status.message()));
  status.ForEachPayload([&annotated](absl::string_view type_url, const absl::Cord& payload) {
    annotated.SetPayload(type_url, payload);
  });
  return annotated;
}

std::string Attempts(int attempts) {
  return absl::StrCat(attempts, attempts == 1 ? " attempt" : " attempts");
}

// `options` with the defaults of `sleep` and `clock` filled in.
RetryingBackendOptions WithDefaults(RetryingBackendOptions options) {
  if (!options.sleep) options.sleep = [](absl::Duration d) { absl::SleepFor(d); };
  if (!options.clock) options.clock = [] { return absl::Now(); };
  return options;
}

absl::Status Validate(const Backend* inner, const RetryingBackendOptions& options) {
  if (inner == nullptr) return absl::InvalidArgumentError("the inner backend is null");
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attempts must be at least 1, got ", options.max_attempts));
  }
  if (options.backoff_base < absl::ZeroDuration() || options.backoff_cap < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("backoff_base and backoff_cap may not be negative, got ",
                     absl::FormatDuration(options.backoff_base), " and ",
                     absl::FormatDuration(options.backoff_cap)));
  }
  if (options.backoff_cap < options.backoff_base) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backoff_cap (", absl::FormatDuration(options.backoff_cap),
        ") may not be below backoff_base (", absl::FormatDuration(options.backoff_base), ")"));
  }
  if (options.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("deadline must be positive (or absl::InfiniteDuration()), got ",
                     absl::FormatDuration(options.deadline)));
  }
  if (std::find(options.retry_on.begin(), options.retry_on.end(), absl::StatusCode::kOk) !=
      options.retry_on.end()) {
    return absl::InvalidArgumentError("retry_on may not contain kOk");
  }
  return absl::OkStatus();
}

class RetryingBackendImpl final : public RetryingBackend {
 public:
  // `options` must be valid (NewRetryingBackend checks them) and `inner` not null.
  RetryingBackendImpl(std::shared_ptr<Backend> inner, RetryingBackendOptions options)
      : inner_(std::move(inner)), options_(WithDefaults(std::move(options))) {}

  std::size_t max_item_size() const override { return inner_->max_item_size(); }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    return Retry<absl::StatusOr<std::vector<std::optional<std::string>>>>(
        "MultiGet", [&] { return inner_->MultiGet(keys); });
  }

  // Retried only while nothing has been handed over: a sink must never see an index twice. After
  // the first item a failure is returned as is, and so is the sink's own error.
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    bool handed_over = false;
    const ItemSink watched = [&](std::size_t index, std::optional<ItemView> item) {
      handed_over = true;
      return sink(index, std::move(item));
    };
    return Retry<absl::Status>(
        "MultiGetEach", [&] { return inner_->MultiGetEach(keys, watched); },
        [&] { return !handed_over; });
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return Retry<absl::Status>("MultiSet", [&] { return inner_->MultiSet(items, ttl); });
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    return Retry<absl::Status>("Delete", [&] { return inner_->Delete(keys); });
  }

  // Forwarded once: a retry after a lost reply would find the key present and report false.
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    calls_.fetch_add(1, kRelaxed);
    attempts_.fetch_add(1, kRelaxed);
    return inner_->SetIfAbsent(key, value, ttl);
  }

  RetryingBackendStats Stats() const override {
    return {.calls = calls_.load(kRelaxed),
            .attempts = attempts_.load(kRelaxed),
            .retries = retries_.load(kRelaxed),
            .gave_up = gave_up_.load(kRelaxed),
            .succeeded_after_retry = succeeded_after_retry_.load(kRelaxed)};
  }

  const RetryingBackendOptions& options() const override { return options_; }
  const std::shared_ptr<Backend>& inner() const override { return inner_; }

 private:
  // Calls `attempt` until it succeeds, fails with a code not in retry_on, runs out of attempts or
  // would run past the deadline. `operation` names the call in error messages. A failure after
  // which `may_retry` returns false is returned as is.
  template <typename Result, typename Attempt, typename MayRetry>
  Result Retry(std::string_view operation, const Attempt& attempt, const MayRetry& may_retry);
  template <typename Result, typename Attempt>
  Result Retry(std::string_view operation, const Attempt& attempt) {
    return Retry<Result>(operation, attempt, [] { return true; });
  }

  bool Retryable(absl::StatusCode code) const;
  // The backoff before retry `retry` (1-based), drawn with full jitter.
  absl::Duration Backoff(int retry);

  const std::shared_ptr<Backend> inner_;
  const RetryingBackendOptions options_;

  // One generator for the backend, locked: it is used only before a retry.
  Mutex jitter_mu_;
  absl::BitGen bitgen_ ABSL_GUARDED_BY(jitter_mu_);

  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> attempts_{0};
  std::atomic<std::uint64_t> retries_{0};
  std::atomic<std::uint64_t> gave_up_{0};
  std::atomic<std::uint64_t> succeeded_after_retry_{0};
};

bool RetryingBackendImpl::Retryable(absl::StatusCode code) const {
  return std::find(options_.retry_on.begin(), options_.retry_on.end(), code) !=
         options_.retry_on.end();
}

absl::Duration RetryingBackendImpl::Backoff(int retry) {
  const absl::Duration ceiling =
      internal::ExponentialCeiling(retry, options_.backoff_base, options_.backoff_cap);
  MutexLock lock(&jitter_mu_);
  return internal::FullJitter(ceiling, bitgen_);
}

template <typename Result, typename Attempt, typename MayRetry>
Result RetryingBackendImpl::Retry(std::string_view operation, const Attempt& attempt,
                                  const MayRetry& may_retry) {
  calls_.fetch_add(1, kRelaxed);
  const absl::Time deadline = options_.clock() + options_.deadline;
  for (int attempts = 1;; ++attempts) {
    if (attempts > 1) retries_.fetch_add(1, kRelaxed);
    attempts_.fetch_add(1, kRelaxed);
    Result result = attempt();
    const absl::Status& status = StatusOf(result);
    if (status.ok()) {
      if (attempts > 1) succeeded_after_retry_.fetch_add(1, kRelaxed);
      return result;
    }
    if (!may_retry()) return result;
    if (!Retryable(status.code())) {
      if (attempts == 1) return result;
      return Annotate(status, absl::StrCat(std::string(operation), " failed after ",
                                           Attempts(attempts), " with an error not retried"));
    }
    if (attempts >= options_.max_attempts) {
      gave_up_.fetch_add(1, kRelaxed);
      return Annotate(status, absl::StrCat(std::string(operation), " gave up after ",
                                           Attempts(attempts), " (max_attempts)"));
    }
    const absl::Duration backoff = Backoff(attempts);
    if (options_.clock() + backoff >= deadline) {
      gave_up_.fetch_add(1, kRelaxed);
      return Annotate(
          status,
          absl::StrCat(std::string(operation), " gave up after ", Attempts(attempts),
                       ": a retry in ", absl::FormatDuration(backoff),
                       " would pass the deadline of ", absl::FormatDuration(options_.deadline)));
    }
    if (absl::Now() + backoff >= CallDeadline()) {  // the caller's own (CallOptions::deadline)
      gave_up_.fetch_add(1, kRelaxed);
      return Annotate(status,
                      absl::StrCat(std::string(operation), " gave up after ", Attempts(attempts),
                                   ": a retry in ", absl::FormatDuration(backoff),
                                   " would pass the call's deadline"));
    }
    options_.sleep(backoff);
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<RetryingBackend>> NewRetryingBackend(
    std::shared_ptr<Backend> inner, RetryingBackendOptions options) {
  if (absl::Status status = Validate(inner.get(), options); !status.ok()) return status;
  return std::make_shared<RetryingBackendImpl>(std::move(inner), std::move(options));
}

}  // namespace chunkcache
