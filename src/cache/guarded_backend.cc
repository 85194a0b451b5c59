#include "cache/guarded_backend.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/exception_status.h"

namespace chunkcache::internal {
namespace {

const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

}  // namespace

GuardedBackend::GuardedBackend(std::shared_ptr<Backend> backend, const CacheOptions& options,
                               const CacheClock& clock, CacheCounters& counters,
                               RateLimitedLog& log)
    : backend_(std::move(backend)),
      breaker_failure_threshold_(options.breaker_failure_threshold),
      breaker_cooldown_(options.breaker_cooldown),
      breaker_(options.breaker_failure_threshold, options.breaker_cooldown, clock),
      counters_(counters),
      log_(log) {}

template <typename Call>
auto GuardedBackend::Guarded(Call call) -> decltype(call()) {
  if (const absl::Time deadline = CallDeadline();
      deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
    return absl::DeadlineExceededError(
        "chunkcache: the call's deadline passed before the backend was asked");
  }
  const CircuitBreaker::Gate gate = breaker_.Pass();
  if (gate == CircuitBreaker::Gate::kReject) {
    Add(counters_.breaker_rejections);
    return absl::UnavailableError(absl::StrCat(
        "chunkcache: the backend is skipped for ", absl::FormatDuration(breaker_cooldown_),
        " after ", breaker_failure_threshold_, " failures in a row (circuit breaker)"));
  }
  Add(counters_.backend_calls);
  ScopedTimer timer(&counters_.backend_latency);
  decltype(call()) result = CatchExceptions("the backend", BadAlloc::kInternal, call);
  const absl::Status& status = StatusOf(result);
  if (!status.ok()) CountError(status);
  if (const std::optional<int> failures = breaker_.Record(status, gate)) {
    Add(counters_.breaker_opens);
    log_.Warn(RateLimitedLog::kBreaker, [&] {
      return absl::StrCat("chunkcache: circuit breaker open for ",
                          absl::FormatDuration(breaker_cooldown_), " after ", *failures,
                          " backend failures in a row; last: ", status.ToString());
    });
  }
  return result;
}

void GuardedBackend::CountError(const absl::Status& status) {
  Add(counters_.backend_errors);
  const auto code = static_cast<std::size_t>(status.code());
  if (code < counters_.backend_errors_by_code.size()) Add(counters_.backend_errors_by_code[code]);
}

absl::StatusOr<Values> GuardedBackend::MultiGet(absl::Span<const std::string_view> keys) {
  absl::StatusOr<Values> values = Guarded([&] { return backend_->MultiGet(keys); });
  if (!values.ok()) return values;
  if (values->size() != keys.size()) {
    absl::Status wrong = absl::InternalError(absl::StrFormat(
        "chunkcache: the backend answered %d values for %d keys", values->size(), keys.size()));
    CountError(wrong);
    return wrong;
  }
  for (const std::optional<std::string>& value : *values) {
    if (value.has_value()) Add(counters_.bytes_read, value->size());
  }
  return values;
}

absl::Status GuardedBackend::MultiGetEach(absl::Span<const std::string_view> keys,
                                          const ItemSink& sink) {
  std::size_t next = 0;
  absl::Status refused;  // the sink's error, or the guard's
  bool sink_failed = false;
  const ItemSink checked = [&](std::size_t index, std::optional<ItemView> item) -> absl::Status {
    if (!refused.ok()) return refused;  // a backend that did not stop
    if (index != next || index >= keys.size()) {
      refused = absl::InternalError(
          absl::StrFormat("chunkcache: the backend handed over key %d of %d where %d was due",
                          index, keys.size(), next));
      return refused;
    }
    ++next;
    if (item.has_value()) Add(counters_.bytes_read, item->value.size());
    refused = sink(index, std::move(item));
    sink_failed = !refused.ok();
    return refused;
  };
  absl::Status status = Guarded([&]() -> absl::Status {
    absl::Status s = backend_->MultiGetEach(keys, checked);
    // Not the backend's failure: the sink stopped it.
    if (sink_failed) return absl::OkStatus();
    if (s.ok() && !refused.ok()) return refused;
    if (s.ok() && next != keys.size()) {
      return absl::InternalError(
          absl::StrFormat("chunkcache: the backend handed over %d of %d keys", next, keys.size()));
    }
    return s;
  });
  if (sink_failed) return refused;
  return status;
}

absl::StatusOr<std::optional<std::string>> GuardedBackend::Get(std::string_view key) {
  absl::StatusOr<Values> values = MultiGet({&key, 1});
  if (!values.ok()) return values.status();
  return std::move((*values)[0]);
}

absl::Status GuardedBackend::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
  absl::Status status = Guarded([&] { return backend_->MultiSet(items, ttl); });
  if (status.ok()) {
    for (const KeyValue& item : items) Add(counters_.bytes_written, item.value.size());
  }
  return status;
}

absl::Status GuardedBackend::Delete(absl::Span<const std::string_view> keys) {
  return Guarded([&] { return backend_->Delete(keys); });
}

absl::StatusOr<bool> GuardedBackend::SetIfAbsent(std::string_view key, std::string_view value,
                                                 absl::Duration ttl) {
  return Guarded([&] { return backend_->SetIfAbsent(key, value, ttl); });
}

}  // namespace chunkcache::internal
