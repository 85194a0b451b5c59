#include "chunkcache/retrying_backend.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "backend_calls.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/backend_conformance.h"
#include "test_util.h"

namespace chunkcache {
namespace {

constexpr absl::Duration kForever = absl::InfiniteDuration();

using testing::FakeClock;

// A sleep that returns at once: it records each backoff and advances the fake clock by it.
class FakeSleep {
 public:
  explicit FakeSleep(FakeClock* clock) : clock_(clock) {}

  void Sleep(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    sleeps_.push_back(d);
    ends_.push_back(clock_->Now() + d);
    clock_->Advance(d);
  }

  std::vector<absl::Duration> sleeps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sleeps_;
  }

  // When each sleep ended, on the fake clock.
  std::vector<absl::Time> ends() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ends_;
  }

 private:
  FakeClock* const clock_;
  mutable std::mutex mu_;
  std::vector<absl::Duration> sleeps_;
  std::vector<absl::Time> ends_;
};

// Options wired to a fake clock and sleep, so that no test waits.
RetryingBackendOptions FakeTimeOptions(FakeClock* clock, FakeSleep* sleep,
                                       RetryingBackendOptions options = {}) {
  options.clock = [clock] { return clock->Now(); };
  options.sleep = [sleep](absl::Duration d) { sleep->Sleep(d); };
  return options;
}

// Answers each call with the next scripted status while there is one (every kind of call takes
// from the same script), then forwards to a MemoryBackend. Counts the calls; each call may also
// take time on a fake clock.
class ScriptedBackend : public Backend {
 public:
  explicit ScriptedBackend(std::vector<absl::Status> script = {}, FakeClock* clock = nullptr,
                           absl::Duration call_time = absl::ZeroDuration())
      : script_(script.begin(), script.end()), clock_(clock), call_time_(call_time) {}

  std::size_t max_item_size() const override { return 777; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    if (absl::Status status = Next(); !status.ok()) return status;
    return memory_->MultiGet(keys);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (absl::Status status = Next(); !status.ok()) return status;
    return memory_->MultiSet(items, ttl);
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    if (absl::Status status = Next(); !status.ok()) return status;
    return memory_->Delete(keys);
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    if (absl::Status status = Next(); !status.ok()) return status;
    return memory_->SetIfAbsent(key, value, ttl);
  }

  // Makes every call from now on fail with `status`.
  void FailForever(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    forever_ = std::move(status);
  }

  int calls() const { return calls_; }
  Backend& memory() { return *memory_; }

 private:
  absl::Status Next() {
    ++calls_;
    if (clock_ != nullptr) clock_->Advance(call_time_);
    std::lock_guard<std::mutex> lock(mu_);
    if (!forever_.ok()) return forever_;
    if (script_.empty()) return absl::OkStatus();
    absl::Status status = script_.front();
    script_.pop_front();
    return status;
  }

  std::mutex mu_;
  std::deque<absl::Status> script_;
  absl::Status forever_;
  FakeClock* const clock_;
  const absl::Duration call_time_;
  std::atomic<int> calls_{0};
  const std::shared_ptr<Backend> memory_ = NewMemoryBackend();
};

std::shared_ptr<RetryingBackend> MakeRetrying(std::shared_ptr<Backend> inner,
                                              RetryingBackendOptions options) {
  absl::StatusOr<std::shared_ptr<RetryingBackend>> retrying =
      NewRetryingBackend(std::move(inner), std::move(options));
  REQUIRE(retrying.ok());
  return *retrying;
}

using testing::Get;
using testing::Set;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST_CASE("transient errors are retried until every call succeeds") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto memory = NewMemoryBackend();
  auto faulty =
      NewFaultInjectionBackend(
          memory, FaultInjectionOptions{.read_error_rate = 0.3, .write_error_rate = 0.3, .seed = 9})
          .value();
  auto retrying = MakeRetrying(faulty, FakeTimeOptions(&clock, &sleep, {.max_attempts = 8}));

  for (int i = 0; i < 100; ++i) {
    const std::string key = absl::StrCat("key-", i);
    REQUIRE(Set(*retrying, key, absl::StrCat("value-", i)).ok());
    CHECK(Get(*retrying, key) == absl::StrCat("value-", i));
  }

  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.calls == 200);
  CHECK(stats.retries > 0);
  CHECK(stats.succeeded_after_retry > 0);
  CHECK(stats.gave_up == 0);
  CHECK(stats.attempts == stats.calls + stats.retries);
  CHECK(faulty->Stats().calls == stats.attempts);
  CHECK(faulty->Stats().read_errors + faulty->Stats().write_errors == stats.retries);
  CHECK(sleep.sleeps().size() == stats.retries);
}

TEST_CASE("an error that persists is returned, code kept, after exactly max_attempts attempts") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto faulty = NewFaultInjectionBackend(
                    NewMemoryBackend(),
                    FaultInjectionOptions{.read_error_rate = 1,
                                          .write_error_rate = 1,
                                          .error_code = absl::StatusCode::kResourceExhausted})
                    .value();
  auto retrying = MakeRetrying(faulty, FakeTimeOptions(&clock, &sleep, {.max_attempts = 4}));

  const std::vector<std::string_view> keys = {"k"};
  const absl::Status get = retrying->MultiGet(keys).status();
  CHECK(get.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(Message(get), Catch::Contains("MultiGet gave up after 4 attempts") &&
                               Catch::Contains("fault injected"));
  CHECK(faulty->Stats().calls == 4);

  const absl::Status set = Set(*retrying, "k", "v");
  CHECK(set.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(Message(set), Catch::Contains("MultiSet gave up after 4 attempts"));
  CHECK(faulty->Stats().calls == 8);

  const absl::Status deleted = retrying->Delete(keys);
  CHECK(deleted.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(Message(deleted), Catch::Contains("Delete gave up after 4 attempts"));
  CHECK(faulty->Stats().calls == 12);

  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.calls == 3);
  CHECK(stats.attempts == 12);
  CHECK(stats.retries == 9);
  CHECK(stats.gave_up == 3);
  CHECK(stats.succeeded_after_retry == 0);
  CHECK(sleep.sleeps().size() == 9);
}

TEST_CASE("max_attempts 1 makes one attempt and sleeps never") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<ScriptedBackend>();
  inner->FailForever(absl::UnavailableError("down"));
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.max_attempts = 1}));
  const absl::Status status = Set(*retrying, "k", "v");
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(Message(status),
             Catch::Contains("gave up after 1 attempt (max_attempts)") && Catch::Contains("down"));
  CHECK(inner->calls() == 1);
  CHECK(sleep.sleeps().empty());
  CHECK(retrying->Stats().gave_up == 1);
}

TEST_CASE("an error not in retry_on is returned at once, unchanged") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  const absl::Status error =
      GENERATE(absl::InvalidArgumentError("bad ttl"), absl::NotFoundError("no such cache"),
               absl::PermissionDeniedError("wrong password"));
  auto inner = std::make_shared<ScriptedBackend>();
  inner->FailForever(error);
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep));

  const std::vector<std::string_view> keys = {"k"};
  CHECK(retrying->MultiGet(keys).status() == error);
  CHECK(Set(*retrying, "k", "v") == error);
  CHECK(retrying->Delete(keys) == error);
  CHECK(inner->calls() == 3);
  CHECK(sleep.sleeps().empty());
  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.retries == 0);
  CHECK(stats.gave_up == 0);
}

TEST_CASE("retry_on chooses the codes retried") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<ScriptedBackend>(
      std::vector<absl::Status>{absl::InternalError("hiccup"), absl::InternalError("hiccup"),
                                absl::OkStatus(), absl::UnavailableError("down")});
  auto retrying = MakeRetrying(
      inner, FakeTimeOptions(&clock, &sleep, {.retry_on = {absl::StatusCode::kInternal}}));
  REQUIRE(Set(*retrying, "k", "v").ok());  // Two Internal errors, then success.
  CHECK(inner->calls() == 3);
  CHECK(Set(*retrying, "k", "v").code() == absl::StatusCode::kUnavailable);  // Not retried now.
  CHECK(inner->calls() == 4);
  CHECK(retrying->Stats().succeeded_after_retry == 1);
}

TEST_CASE("a non-retryable error after retries keeps its code and says how many attempts") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<ScriptedBackend>(std::vector<absl::Status>{
      absl::UnavailableError("down"), absl::InvalidArgumentError("value too large")});
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep));
  const absl::Status status = Set(*retrying, "k", "v");
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(status),
             Catch::Contains("after 2 attempts") && Catch::Contains("value too large"));
  CHECK(inner->calls() == 2);
  CHECK(retrying->Stats().gave_up == 0);  // It did not give up: the error was final.
}

TEST_CASE("the returned error keeps the inner status's payloads") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  absl::Status throttled = absl::ResourceExhaustedError("slow down");
  throttled.SetPayload("type.example.com/retry-after", absl::Cord("2s"));
  auto inner = std::make_shared<ScriptedBackend>();
  inner->FailForever(throttled);
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.max_attempts = 2}));
  const absl::Status status = Set(*retrying, "k", "v");
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  const auto payload = status.GetPayload("type.example.com/retry-after");
  REQUIRE(payload.has_value());
  CHECK(std::string(*payload) == "2s");
}

TEST_CASE("a call gives up rather than sleep past its deadline") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  constexpr absl::Duration kDeadline = absl::Milliseconds(500);
  const absl::Duration call_time = GENERATE(absl::ZeroDuration(), absl::Milliseconds(70));
  auto inner = std::make_shared<ScriptedBackend>(std::vector<absl::Status>{}, &clock, call_time);
  inner->FailForever(absl::DeadlineExceededError("timed out"));
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep,
                                                      {.max_attempts = 1000,
                                                       .backoff_base = absl::Milliseconds(20),
                                                       .backoff_cap = absl::Seconds(2),
                                                       .deadline = kDeadline}));

  const absl::Time start = clock.Now();
  const std::vector<std::string_view> keys = {"k"};
  const absl::Status status = retrying->MultiGet(keys).status();
  CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(Message(status),
             Catch::Contains("deadline") &&
                 Catch::Contains(absl::StrCat("after ", inner->calls(), " attempt")) &&
                 Catch::Contains("timed out"));
  CHECK(inner->calls() < 1000);
  for (const absl::Time end : sleep.ends()) CHECK(end < start + kDeadline);
  // An attempt is not interrupted, but none starts at or after the deadline.
  CHECK(clock.Now() < start + kDeadline + call_time);
  CHECK(retrying->Stats().gave_up == 1);
}

TEST_CASE("a call gives up rather than sleep past the caller's deadline (CallDeadline)") {
  // Real sleeps and the real clock: CallDeadline() is in real time.
  auto inner =
      std::make_shared<ScriptedBackend>(std::vector<absl::Status>{}, nullptr, absl::ZeroDuration());
  inner->FailForever(absl::UnavailableError("down"));
  auto retrying = MakeRetrying(inner, {.max_attempts = 1000,
                                       .backoff_base = absl::Milliseconds(10),
                                       .backoff_cap = absl::Milliseconds(40),
                                       .deadline = absl::Seconds(5)});
  const absl::Time start = absl::Now();
  absl::Status status;
  {
    ScopedCallDeadline call(start + absl::Milliseconds(200));
    const std::vector<std::string_view> keys = {"k"};
    status = retrying->MultiGet(keys).status();
  }
  const absl::Duration took = absl::Now() - start;
  CHECK(absl::IsUnavailable(status));
  CHECK_THAT(Message(status), Catch::Contains("call's deadline"));
  // No sleep ends past the call's deadline; the attempt after the last sleep may (it took 0.09 ms
  // past it under ASan on a loaded machine). Without the check the call would take the backend's
  // own 5 s.
  CHECK(took < absl::Milliseconds(200) + absl::Milliseconds(100));
  CHECK(CallDeadline() == absl::InfiniteFuture());  // the scope ended
}

// Each MultiGetEach hands over the first `good` items (all "v") and then, if keys are left, fails
// with `failure`. Counts the calls; MultiGet is never expected.
class FailingMidwayBackend : public Backend {
 public:
  FailingMidwayBackend(std::size_t good, absl::Status failure)
      : good_(good), failure_(std::move(failure)) {}

  std::size_t max_item_size() const override { return 777; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view>) override {
    ++multi_gets;
    return absl::InternalError("MultiGet was not expected");
  }
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    ++multi_get_eachs;
    static const auto kValue = std::make_shared<const std::string>("v");
    for (std::size_t i = 0; i < std::min(good_, keys.size()); ++i) {
      if (absl::Status s = sink(i, ItemView{*kValue, kValue}); !s.ok()) return s;
    }
    return good_ < keys.size() ? failure_ : absl::OkStatus();
  }
  absl::Status MultiSet(absl::Span<const KeyValue>, absl::Duration) override {
    return absl::OkStatus();
  }
  absl::Status Delete(absl::Span<const std::string_view>) override { return absl::OkStatus(); }

  std::atomic<int> multi_gets{0}, multi_get_eachs{0};

 private:
  const std::size_t good_;
  const absl::Status failure_;
};

TEST_CASE("MultiGetEach is retried while nothing has been handed over") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  // The default MultiGetEach of the inner backend reads with MultiGet: fails twice, then answers.
  auto inner = std::make_shared<ScriptedBackend>(
      std::vector<absl::Status>{absl::UnavailableError("down"), absl::UnavailableError("down")});
  REQUIRE(Set(inner->memory(), "a", "1").ok());
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.max_attempts = 3}));
  CHECK(testing::GetEach(*retrying, {"a", "b"}) ==
        std::vector<std::optional<std::string>>{"1", std::nullopt});
  CHECK(inner->calls() == 3);
  CHECK(retrying->Stats().succeeded_after_retry == 1);

  auto failing = std::make_shared<FailingMidwayBackend>(0, absl::UnavailableError("down"));
  retrying = MakeRetrying(failing, FakeTimeOptions(&clock, &sleep, {.max_attempts = 3}));
  const absl::Status status = retrying->MultiGetEach(std::vector<std::string_view>{"a"},
                                                     [](std::size_t, std::optional<ItemView>) {
                                                       FAIL_CHECK("nothing should be handed over");
                                                       return absl::OkStatus();
                                                     });
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(status.message(), "MultiGetEach gave up after 3 attempts"));
  CHECK(failing->multi_get_eachs == 3);
  CHECK(failing->multi_gets == 0);
}

TEST_CASE("a MultiGetEach failure after the first item is returned as is, not retried") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  const absl::Status failure = absl::UnavailableError("lost the connection midway");
  auto inner = std::make_shared<FailingMidwayBackend>(1, failure);
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.max_attempts = 5}));
  std::vector<std::size_t> indexes;
  const absl::Status status = retrying->MultiGetEach(std::vector<std::string_view>{"a", "b", "c"},
                                                     [&](std::size_t index, auto) {
                                                       indexes.push_back(index);
                                                       return absl::OkStatus();
                                                     });
  CHECK(status == failure);
  CHECK(indexes == std::vector<std::size_t>{0});
  CHECK(inner->multi_get_eachs == 1);
  CHECK(inner->multi_gets == 0);
  CHECK(sleep.sleeps().empty());
  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.calls == 1);
  CHECK(stats.retries == 0);
  CHECK(stats.gave_up == 0);
}

TEST_CASE("a sink's error is returned as is and never retried, whatever its code") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<FailingMidwayBackend>(3, absl::OkStatus());
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.max_attempts = 5}));
  const absl::Status mine = absl::UnavailableError("the reader's own, retryable-looking error");
  int handed_over = 0;
  const absl::Status status =
      retrying->MultiGetEach(std::vector<std::string_view>{"a", "b"}, [&](std::size_t, auto) {
        ++handed_over;
        return mine;
      });
  CHECK(status == mine);
  CHECK(handed_over == 1);
  CHECK(inner->multi_get_eachs == 1);
  CHECK(retrying->Stats().retries == 0);

  // And the backend works on.
  CHECK(testing::GetEach(*retrying, {"a", "b"}) ==
        std::vector<std::optional<std::string>>{"v", "v"});
}

TEST_CASE("SetIfAbsent is forwarded once and never retried") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<ScriptedBackend>(
      std::vector<absl::Status>{absl::UnavailableError("reply lost")});
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep));

  const absl::StatusOr<bool> lost = retrying->SetIfAbsent("k", "v", kForever);
  CHECK(lost.status() == absl::UnavailableError("reply lost"));  // Unchanged.
  CHECK(inner->calls() == 1);
  CHECK(sleep.sleeps().empty());

  CHECK(retrying->SetIfAbsent("k", "v", kForever).value() == true);
  CHECK(retrying->SetIfAbsent("k", "w", kForever).value() == false);
  CHECK(Get(inner->memory(), "k") == "v");

  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.calls == 3);
  CHECK(stats.attempts == 3);
  CHECK(stats.retries == 0);
  CHECK(stats.gave_up == 0);
}

TEST_CASE("backoffs are full jitter: retry n sleeps within [0, min(cap, base * 2^(n-1))]") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  constexpr int kMaxAttempts = 8;
  constexpr int kCalls = 200;
  constexpr absl::Duration kBase = absl::Milliseconds(10);
  constexpr absl::Duration kCap = absl::Milliseconds(200);
  auto inner = std::make_shared<ScriptedBackend>();
  inner->FailForever(absl::UnavailableError("down"));
  auto retrying = MakeRetrying(inner, FakeTimeOptions(&clock, &sleep,
                                                      {.max_attempts = kMaxAttempts,
                                                       .backoff_base = kBase,
                                                       .backoff_cap = kCap,
                                                       .deadline = kForever}));
  for (int i = 0; i < kCalls; ++i) CHECK_FALSE(Set(*retrying, "k", "v").ok());

  const std::vector<absl::Duration> sleeps = sleep.sleeps();
  REQUIRE(sleeps.size() == std::size_t{kCalls} * (kMaxAttempts - 1));
  std::vector<absl::Duration> longest(kMaxAttempts);  // Indexed by retry number.
  for (std::size_t i = 0; i < sleeps.size(); ++i) {
    const int retry = 1 + static_cast<int>(i % (kMaxAttempts - 1));
    const absl::Duration bound = std::min(kCap, kBase * (1 << (retry - 1)));
    CHECK(sleeps[i] >= absl::ZeroDuration());
    CHECK(sleeps[i] <= bound);
    longest[retry] = std::max(longest[retry], sleeps[i]);
  }
  // The whole range is used: over 200 draws, some land in the upper half of each bound.
  for (int retry = 1; retry < kMaxAttempts; ++retry) {
    CHECK(longest[retry] > std::min(kCap, kBase * (1 << (retry - 1))) / 2);
  }
}

TEST_CASE("a zero backoff_base retries without sleeping time") {
  FakeClock clock;
  FakeSleep sleep(&clock);
  auto inner = std::make_shared<ScriptedBackend>(
      std::vector<absl::Status>{absl::UnavailableError("down"), absl::UnavailableError("down")});
  auto retrying =
      MakeRetrying(inner, FakeTimeOptions(&clock, &sleep, {.backoff_base = absl::ZeroDuration()}));
  REQUIRE(Set(*retrying, "k", "v").ok());
  CHECK(sleep.sleeps() == std::vector<absl::Duration>(2, absl::ZeroDuration()));
}

TEST_CASE("NewRetryingBackend rejects a null inner backend and bad options") {
  auto memory = NewMemoryBackend();
  CHECK(NewRetryingBackend(nullptr).status().code() == absl::StatusCode::kInvalidArgument);

  const std::vector<RetryingBackendOptions> bad = {
      {.max_attempts = 0},
      {.max_attempts = -3},
      {.backoff_base = absl::Milliseconds(-1)},
      {.backoff_base = absl::ZeroDuration(), .backoff_cap = absl::Milliseconds(-1)},
      {.backoff_base = absl::Seconds(2), .backoff_cap = absl::Seconds(1)},
      {.deadline = absl::ZeroDuration()},
      {.deadline = absl::Seconds(-1)},
      {.retry_on = {absl::StatusCode::kUnavailable, absl::StatusCode::kOk}},
  };
  for (const RetryingBackendOptions& options : bad) {
    const absl::Status status = NewRetryingBackend(memory, options).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(status.message().empty());
  }

  absl::StatusOr<std::shared_ptr<RetryingBackend>> good =
      NewRetryingBackend(memory, {.max_attempts = 1,
                                  .backoff_base = absl::ZeroDuration(),
                                  .backoff_cap = absl::ZeroDuration(),
                                  .deadline = kForever,
                                  .retry_on = {}});
  REQUIRE(good.ok());
  CHECK((*good)->inner() == memory);
  CHECK((*good)->max_item_size() == memory->max_item_size());
  REQUIRE(Set(**good, "k", "v").ok());
  CHECK(Get(*memory, "k") == "v");
}

TEST_CASE("options() reports the options given, with sleep and clock filled in") {
  auto inner = std::make_shared<ScriptedBackend>();
  auto retrying = MakeRetrying(inner, {.max_attempts = 2,
                                       .backoff_base = absl::Milliseconds(5),
                                       .backoff_cap = absl::Milliseconds(7),
                                       .deadline = absl::Seconds(3),
                                       .retry_on = {absl::StatusCode::kAborted}});
  const RetryingBackendOptions& options = retrying->options();
  CHECK(options.max_attempts == 2);
  CHECK(options.backoff_base == absl::Milliseconds(5));
  CHECK(options.backoff_cap == absl::Milliseconds(7));
  CHECK(options.deadline == absl::Seconds(3));
  CHECK(options.retry_on == std::vector<absl::StatusCode>{absl::StatusCode::kAborted});
  CHECK(options.sleep);
  CHECK(options.clock);
  CHECK(retrying->max_item_size() == 777);
  REQUIRE(Set(*retrying, "k", "v").ok());
  CHECK(Get(*retrying, "k") == "v");
}

TEST_CASE("the default options retry the transient codes and really sleep") {
  const RetryingBackendOptions defaults;
  CHECK(defaults.max_attempts == 4);
  CHECK(defaults.retry_on == std::vector<absl::StatusCode>{absl::StatusCode::kUnavailable,
                                                           absl::StatusCode::kDeadlineExceeded,
                                                           absl::StatusCode::kResourceExhausted});
  auto inner = std::make_shared<ScriptedBackend>(
      std::vector<absl::Status>{absl::UnavailableError("a"), absl::DeadlineExceededError("b"),
                                absl::ResourceExhaustedError("c")});
  auto retrying = MakeRetrying(
      inner, {.backoff_base = absl::Milliseconds(1), .backoff_cap = absl::Milliseconds(2)});
  REQUIRE(Set(*retrying, "k", "v").ok());
  CHECK(inner->calls() == 4);
  CHECK(retrying->Stats().retries == 3);
}

// Values name their key, so a reader can tell a value that belongs to another key.
bool BelongsTo(std::string_view value, std::string_view key) {
  return value.size() > key.size() && value.substr(0, key.size()) == key &&
         value[key.size()] == '|';
}

TEST_CASE("concurrent callers through retries over injected faults all succeed", "[concurrency]") {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 500;
  auto memory = NewMemoryBackend();
  auto faulty = NewFaultInjectionBackend(
                    memory, FaultInjectionOptions{.read_error_rate = 0.3, .write_error_rate = 0.3})
                    .value();
  // 16 attempts at a 30 % failure rate: a call gives up with probability 0.3^16, about 4e-9.
  auto retrying =
      MakeRetrying(faulty, {.max_attempts = 16,
                            .backoff_base = absl::ZeroDuration(),
                            .backoff_cap = absl::ZeroDuration(),
                            .sleep = [](absl::Duration) { std::this_thread::yield(); }});
  std::vector<std::string> keys;
  for (int i = 0; i < 32; ++i) keys.push_back(absl::StrCat("key-", i));

  std::atomic<int> errors{0};
  std::atomic<int> wrong_values{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      start.arrive_and_wait();
      for (int op = 0; op < kOpsPerThread; ++op) {
        const std::string& key = keys[rng() % keys.size()];
        switch (rng() % 3) {
          case 0:
            if (!Set(*retrying, key, absl::StrCat(key, "|", t)).ok()) ++errors;
            break;
          case 1: {
            const std::vector<std::string_view> wanted = {key, keys[rng() % keys.size()]};
            absl::StatusOr<std::vector<std::optional<std::string>>> got =
                retrying->MultiGet(wanted);
            if (!got.ok()) {
              ++errors;
              break;
            }
            for (std::size_t i = 0; i < wanted.size(); ++i) {
              if ((*got)[i].has_value() && !BelongsTo(*(*got)[i], wanted[i])) ++wrong_values;
            }
            break;
          }
          case 2: {
            const std::string_view doomed = key;
            if (!retrying->Delete({&doomed, 1}).ok()) ++errors;
            break;
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  CHECK(errors == 0);
  CHECK(wrong_values == 0);
  const RetryingBackendStats stats = retrying->Stats();
  CHECK(stats.calls == std::uint64_t{kThreads} * kOpsPerThread);
  CHECK(stats.retries > 0);
  CHECK(stats.gave_up == 0);
  CHECK(stats.attempts == stats.calls + stats.retries);
  CHECK(faulty->Stats().calls == stats.attempts);
}

// The Backend contract, checked by the conformance kit: over a memory backend, and over one that
// fails a fifth of the reads (each retried until it succeeds: 20 attempts, backoffs of at most 1
// ms).
TEST_CASE("a retrying backend keeps the Backend contract", "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] { return NewRetryingBackend(NewMemoryBackend()).value_or(nullptr); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 2});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

TEST_CASE("a retrying backend over failing reads keeps the Backend contract",
          "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] {
        std::shared_ptr<FaultInjectionBackend> faulty =
            NewFaultInjectionBackend(NewMemoryBackend(), {.read_error_rate = 0.2})
                .value_or(nullptr);
        return NewRetryingBackend(faulty, {.max_attempts = 20,
                                           .backoff_base = absl::Microseconds(100),
                                           .backoff_cap = absl::Milliseconds(1),
                                           .deadline = absl::InfiniteDuration()})
            .value_or(nullptr);
      },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 1});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache
