#include "chunkcache/retrying_backend.h"

#include <algorithm>
#include <atomic>
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
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

// The options the constructor runs with: the nearest valid ones, with the defaults filled in.
RetryingBackendOptions Adjusted(RetryingBackendOptions options) {
  options.max_attempts = std::max(options.max_attempts, 1);
  options.backoff_base = std::max(options.backoff_base, absl::ZeroDuration());
  options.backoff_cap = std::max(options.backoff_cap, options.backoff_base);
  options.deadline = std::max(options.deadline, absl::ZeroDuration());
  std::erase(options.retry_on, absl::StatusCode::kOk);
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

}  // namespace

// Draws backoffs. One generator for the backend, locked: it is used only before a retry.
class RetryingBackend::Jitter {
 public:
  Jitter() : rng_(std::random_device{}()) {}

  // Uniformly random in [0, bound], to the nanosecond.
  absl::Duration Draw(absl::Duration bound) {
    const std::int64_t max_nanos = absl::ToInt64Nanoseconds(bound);  // Saturates if infinite.
    if (max_nanos <= 0) return absl::ZeroDuration();
    std::uniform_int_distribution<std::int64_t> nanos(0, max_nanos);
    MutexLock lock(&mu_);
    return absl::Nanoseconds(nanos(rng_));
  }

 private:
  Mutex mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
};

RetryingBackend::RetryingBackend(std::shared_ptr<Backend> inner, RetryingBackendOptions options)
    : inner_(std::move(inner)),
      options_(Adjusted(std::move(options))),
      jitter_(std::make_unique<Jitter>()) {}

RetryingBackend::~RetryingBackend() = default;

bool RetryingBackend::Retryable(absl::StatusCode code) const {
  return std::find(options_.retry_on.begin(), options_.retry_on.end(), code) !=
         options_.retry_on.end();
}

absl::Duration RetryingBackend::Backoff(int retry) {
  absl::Duration ceiling = options_.backoff_base;
  for (int i = 1; i < retry && ceiling < options_.backoff_cap; ++i) ceiling *= 2;
  return jitter_->Draw(std::min(ceiling, options_.backoff_cap));
}

template <typename Result, typename Attempt>
Result RetryingBackend::Retry(std::string_view operation, const Attempt& attempt) {
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

absl::StatusOr<std::vector<std::optional<std::string>>> RetryingBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  return Retry<absl::StatusOr<std::vector<std::optional<std::string>>>>(
      "MultiGet", [&] { return inner_->MultiGet(keys); });
}

absl::Status RetryingBackend::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
  return Retry<absl::Status>("MultiSet", [&] { return inner_->MultiSet(items, ttl); });
}

absl::Status RetryingBackend::Delete(absl::Span<const std::string_view> keys) {
  return Retry<absl::Status>("Delete", [&] { return inner_->Delete(keys); });
}

absl::StatusOr<bool> RetryingBackend::SetIfAbsent(std::string_view key, std::string_view value,
                                                  absl::Duration ttl) {
  calls_.fetch_add(1, kRelaxed);
  attempts_.fetch_add(1, kRelaxed);
  return inner_->SetIfAbsent(key, value, ttl);
}

RetryingBackendStats RetryingBackend::Stats() const {
  return {.calls = calls_.load(kRelaxed),
          .attempts = attempts_.load(kRelaxed),
          .retries = retries_.load(kRelaxed),
          .gave_up = gave_up_.load(kRelaxed),
          .succeeded_after_retry = succeeded_after_retry_.load(kRelaxed)};
}

absl::StatusOr<std::shared_ptr<RetryingBackend>> NewRetryingBackend(
    std::shared_ptr<Backend> inner, RetryingBackendOptions options) {
  if (absl::Status status = Validate(inner.get(), options); !status.ok()) return status;
  return std::make_shared<RetryingBackend>(std::move(inner), std::move(options));
}

}  // namespace chunkcache
