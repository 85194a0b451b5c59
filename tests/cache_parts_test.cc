// The parts ChunkedCache is composed of (src/cache/), each on its own: the contracts their
// headers state, where the cache's own tests do not pin them down directly.

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/circuit_breaker.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/entry_reader.h"
#include "cache/entry_writer.h"
#include "cache/exception_status.h"
#include "cache/guarded_backend.h"
#include "cache/l1_policy.h"
#include "cache/lease.h"
#include "cache/rate_limited_log.h"
#include "cache/refresher.h"
#include "chunkcache/memory_backend.h"
#include "fixtures/process.h"
#include "format/codec.h"
#include "format/keys.h"
#include "internal/mutex.h"
#include "test_util.h"

namespace chunkcache::internal {
namespace {

using testing::FakeClock;

// Polls `done` every millisecond for up to five seconds; its last answer.
bool WaitFor(const std::function<bool()>& done) {
  return testing::fixture_internal::WaitFor(std::chrono::seconds(5), done,
                                            std::chrono::milliseconds(1));
}

// A backend whose MultiGet does what the test says; every call is counted.
class ScriptedBackend final : public Backend {
 public:
  std::function<absl::StatusOr<Values>(absl::Span<const std::string_view>)> multi_get =
      [](absl::Span<const std::string_view> keys) { return Values(keys.size()); };
  std::atomic<int> calls{0};

  std::size_t max_item_size() const override { return 1 << 20; }
  absl::StatusOr<Values> MultiGet(absl::Span<const std::string_view> keys) override {
    ++calls;
    return multi_get(keys);
  }
  absl::Status MultiSet(absl::Span<const KeyValue>, absl::Duration) override {
    ++calls;
    return absl::OkStatus();
  }
  absl::Status Delete(absl::Span<const std::string_view>) override {
    ++calls;
    return absl::OkStatus();
  }
};

// The parts a reader and a writer stand on, wired as ChunkedCache wires them.
struct Parts {
  explicit Parts(std::shared_ptr<Backend> inner, CacheOptions opts = {},
                 std::size_t chunk_size = 1 << 20)
      : options(std::move(opts)),
        clock(options.clock),
        log(options.log),
        backend(std::move(inner), options, clock, counters, log),
        codec(options.compression_level, options.compression_workers),
        reader(options, backend, codec, counters, log),
        writer(options, chunk_size, backend, reader, codec, clock, counters) {}

  const CacheOptions options;
  const CacheClock clock;
  CacheCounters counters;
  RateLimitedLog log;
  GuardedBackend backend;
  Codec codec;
  EntryReader reader;
  EntryWriter writer;
};

// A JSON array of `n` distinct numbers: compresses to more than a few hundred bytes.
std::string JsonNumbers(int n) {
  std::string json = "[";
  for (int i = 0; i < n; ++i) absl::StrAppend(&json, i == 0 ? "" : ",", i * 7919 % 100003);
  return json + "]";
}

// ---- exception_status ----------------------------------------------------------------------

TEST_CASE("exceptions become statuses that name their thrower") {
  const auto run = [](BadAlloc bad_alloc, const std::function<void()>& thrower) {
    return CatchExceptions("the widget", bad_alloc, [&]() -> absl::Status {
      thrower();
      return absl::OkStatus();
    });
  };
  const absl::Status runtime = run(BadAlloc::kInternal, [] { throw std::runtime_error("boom"); });
  CHECK(absl::IsInternal(runtime));
  CHECK(runtime.message() == "chunkcache: the widget threw: boom");

  const absl::Status exhausted = run(BadAlloc::kResourceExhausted, [] { throw std::bad_alloc(); });
  CHECK(absl::IsResourceExhausted(exhausted));
  CHECK(exhausted.message() == "chunkcache: the widget ran out of memory");
  CHECK(absl::IsInternal(run(BadAlloc::kInternal, [] { throw std::bad_alloc(); })));

  const absl::Status odd = run(BadAlloc::kInternal, [] { throw 42; });
  CHECK(absl::IsInternal(odd));
  CHECK(odd.message() == "chunkcache: the widget threw a non-standard exception");

  const absl::StatusOr<int> value =
      CatchExceptions("the widget", BadAlloc::kInternal, [] { return absl::StatusOr<int>(7); });
  REQUIRE(value.ok());
  CHECK(*value == 7);
}

// ---- counters and rate_limited_log -----------------------------------------------------------

TEST_CASE("near-cache hits count as gets, hits and bytes returned in a snapshot") {
  CacheCounters counters;
  Add(counters.gets);
  Add(counters.hits);
  Add(counters.bytes_returned, 10);
  counters.l1_hits.Add();
  counters.l1_bytes_returned.Add(5);
  CacheStats stats;
  stats.l1_bytes = 123;  // the caller's to fill: left as it is
  counters.Snapshot(stats);
  CHECK(stats.gets == 2);
  CHECK(stats.hits == 2);
  CHECK(stats.l1_hits == 1);
  CHECK(stats.bytes_returned == 15);
  CHECK(stats.l1_bytes == 123);
}

TEST_CASE("the log passes one message per kind per second and says how many it held back") {
  std::vector<std::string> messages;
  RateLimitedLog log([&](LogLevel level, std::string_view message) {
    CHECK(level == LogLevel::kWarning);
    messages.emplace_back(message);
  });
  log.Warn(RateLimitedLog::kCorrupt, [] { return "first"; });
  bool built = false;
  log.Warn(RateLimitedLog::kCorrupt, [&] {
    built = true;
    return "held back";
  });
  log.Warn(RateLimitedLog::kStore, [] { return "another kind"; });
  CHECK(!built);
  CHECK(messages == std::vector<std::string>{"first", "another kind"});

  absl::SleepFor(absl::Milliseconds(1050));
  log.Warn(RateLimitedLog::kCorrupt, [] { return "second"; });
  REQUIRE(messages.size() == 3);
  CHECK(messages[2] == "second (and 1 more like it in the last second)");

  RateLimitedLog throwing([](LogLevel, std::string_view) { throw std::runtime_error("sink"); });
  CHECK_NOTHROW(throwing.Warn(RateLimitedLog::kBreaker, [] { return "lost"; }));
  RateLimitedLog silent(nullptr);
  silent.Warn(RateLimitedLog::kBreaker, [&] {
    built = true;
    return "never";
  });
  CHECK(!built);
}

// ---- circuit_breaker and guarded_backend ---------------------------------------------------

TEST_CASE("the breaker lets exactly one probe through after its cool-down") {
  FakeClock time;
  const CacheClock clock(time.AsFunction());
  CircuitBreaker breaker(2, absl::Seconds(5), clock);
  const absl::Status down = absl::UnavailableError("down");
  CHECK(!breaker.Record(down, breaker.Pass()).has_value());
  CHECK(breaker.Record(down, breaker.Pass()) == 2);  // the threshold-th failure opens it
  CHECK(breaker.IsOpen());
  CHECK(breaker.Pass() == CircuitBreaker::Gate::kReject);

  time.Advance(absl::Seconds(5));
  const CircuitBreaker::Gate probe = breaker.Pass();
  CHECK(probe == CircuitBreaker::Gate::kProbe);
  CHECK(breaker.Pass() == CircuitBreaker::Gate::kReject);  // the probe is under way
  CHECK(breaker.IsOpen());
  CHECK(breaker.Record(down, probe) == 3);  // a failed probe reopens it at once
  CHECK(breaker.Pass() == CircuitBreaker::Gate::kReject);

  time.Advance(absl::Seconds(5));
  const CircuitBreaker::Gate second_probe = breaker.Pass();
  REQUIRE(second_probe == CircuitBreaker::Gate::kProbe);
  CHECK(!breaker.Record(absl::NotFoundError("a miss is a healthy answer"), second_probe));
  CHECK(!breaker.IsOpen());
  CHECK(breaker.Pass() == CircuitBreaker::Gate::kClosed);
}

TEST_CASE("a breaker with threshold 0 never opens, and only backend failures count") {
  FakeClock time;
  const CacheClock clock(time.AsFunction());
  CircuitBreaker off(0, absl::Seconds(5), clock);
  for (int i = 0; i < 10; ++i) CHECK(!off.Record(absl::UnavailableError("down"), off.Pass()));
  CHECK(off.Pass() == CircuitBreaker::Gate::kClosed);
  CHECK(!off.IsOpen());

  CHECK(CircuitBreaker::IsBackendFailure(absl::UnavailableError("")));
  CHECK(CircuitBreaker::IsBackendFailure(absl::DeadlineExceededError("")));
  CHECK(CircuitBreaker::IsBackendFailure(absl::ResourceExhaustedError("")));
  CHECK(CircuitBreaker::IsBackendFailure(absl::InternalError("")));
  CHECK(!CircuitBreaker::IsBackendFailure(absl::InvalidArgumentError("")));
  CHECK(!CircuitBreaker::IsBackendFailure(absl::PermissionDeniedError("")));
  CircuitBreaker on(1, absl::Seconds(5), clock);
  CHECK(!on.Record(absl::PermissionDeniedError("the call was wrong"), on.Pass()));
  CHECK(on.Pass() == CircuitBreaker::Gate::kClosed);
}

TEST_CASE("guarded backend calls turn a throwing backend into Internal, counted by code") {
  auto scripted = std::make_shared<ScriptedBackend>();
  scripted->multi_get = [](absl::Span<const std::string_view>) -> absl::StatusOr<Values> {
    throw std::runtime_error("boom");
  };
  Parts parts(scripted);
  const absl::StatusOr<Values> got = parts.backend.MultiGet({"a"});
  CHECK(absl::IsInternal(got.status()));
  CHECK(got.status().message() == "chunkcache: the backend threw: boom");
  CacheStats stats;
  parts.counters.Snapshot(stats);
  CHECK(stats.backend_calls == 1);
  CHECK(stats.backend_errors == 1);
  CHECK(stats.backend_errors_by_code[static_cast<int>(absl::StatusCode::kInternal)] == 1);
  CHECK(stats.backend_latency.count == 1);

  scripted->multi_get = [](absl::Span<const std::string_view>) -> absl::StatusOr<Values> {
    return Values(1);
  };
  const std::string_view two[] = {"a", "b"};
  CHECK(absl::IsInternal(parts.backend.MultiGet(two).status()));  // one value for two keys
  parts.counters.Snapshot(stats);
  CHECK(stats.backend_errors == 2);
}

TEST_CASE("a guarded call past the thread's deadline never reaches the backend") {
  auto scripted = std::make_shared<ScriptedBackend>();
  Parts parts(scripted);
  {
    const ScopedCallDeadline deadline(absl::Now() - absl::Seconds(1));
    CHECK(absl::IsDeadlineExceeded(parts.backend.Get("a").status()));
    const std::string_view key = "a";
    CHECK(absl::IsDeadlineExceeded(parts.backend.Delete({&key, 1})));
  }
  CHECK(scripted->calls == 0);
  CHECK(parts.backend.Get("a").ok());
  CHECK(scripted->calls == 1);
}

TEST_CASE("an open breaker skips the backend, counts the rejections and logs its opening") {
  FakeClock time;
  auto scripted = std::make_shared<ScriptedBackend>();
  scripted->multi_get = [](absl::Span<const std::string_view>) -> absl::StatusOr<Values> {
    return absl::UnavailableError("down");
  };
  std::vector<std::string> logged;
  CacheOptions options;
  options.breaker_failure_threshold = 2;
  options.breaker_cooldown = absl::Seconds(5);
  options.clock = time.AsFunction();
  options.log = [&](LogLevel, std::string_view message) { logged.emplace_back(message); };
  Parts parts(scripted, options);
  CHECK(absl::IsUnavailable(parts.backend.Get("a").status()));
  CHECK(!parts.backend.breaker_open());
  CHECK(absl::IsUnavailable(parts.backend.Get("a").status()));
  CHECK(parts.backend.breaker_open());
  const absl::Status skipped = parts.backend.Get("a").status();
  CHECK(absl::IsUnavailable(skipped));
  CHECK(absl::StrContains(skipped.message(), "circuit breaker"));
  CHECK(scripted->calls == 2);
  CacheStats stats;
  parts.counters.Snapshot(stats);
  CHECK(stats.breaker_opens == 1);
  CHECK(stats.breaker_rejections == 1);
  REQUIRE(logged.size() == 1);
  CHECK(absl::StrContains(logged[0], "circuit breaker open for 5s after 2 backend failures"));

  time.Advance(absl::Seconds(5));
  scripted->multi_get = [](absl::Span<const std::string_view> keys) -> absl::StatusOr<Values> {
    return Values(keys.size());
  };
  CHECK(parts.backend.Get("a").ok());  // the probe
  CHECK(!parts.backend.breaker_open());
  CHECK(scripted->calls == 3);
}

// ---- entry_writer and entry_reader ---------------------------------------------------------

TEST_CASE("a chunked entry written by the writer reads back, and replacing it deletes its chunks") {
  auto memory = NewMemoryBackend();
  Parts parts(memory, {}, /*chunk_size=*/256);
  const StoredKeys keys("cc:", "doc");
  const std::string json = JsonNumbers(400);
  const absl::StatusOr<Manifest> first = parts.writer.EncodeAndStore(keys, json);
  REQUIRE(first.ok());
  REQUIRE(first->chunk_count > 1);

  const absl::StatusOr<Found> found = parts.reader.Read(keys, nullptr);
  REQUIRE(found.ok());
  CHECK(*found->bytes == json);
  CHECK(found->generation == first->generation);
  CHECK(!found->from_l1);
  const absl::StatusOr<EntryInfo> info = parts.reader.Inspect(keys);
  REQUIRE(info.ok());
  CHECK(info->complete);
  CHECK(info->checksum_ok);
  CHECK(info->chunks.size() == first->chunk_count);

  const absl::StatusOr<Manifest> second = parts.writer.EncodeAndStore(keys, JsonNumbers(300));
  REQUIRE(second.ok());
  CHECK(second->generation != first->generation);
  const std::string old_chunk = keys.Chunk(first->generation, 0);
  const std::string_view old_key = old_chunk;
  const absl::StatusOr<Values> old = memory->MultiGet({&old_key, 1});
  REQUIRE(old.ok());
  CHECK(!(*old)[0].has_value());
  const std::optional<Manifest> current = parts.reader.ReadManifestQuietly(keys);
  REQUIRE(current.has_value());
  CHECK(current->generation == second->generation);
}

TEST_CASE("a read handed the near copy of the stored generation fetches no chunk") {
  auto recorder = std::make_shared<testing::RecordingBackend>(NewMemoryBackend());
  Parts parts(recorder, {}, /*chunk_size=*/256);
  const StoredKeys keys("cc:", "doc");
  const absl::StatusOr<Manifest> stored = parts.writer.EncodeAndStore(keys, JsonNumbers(400));
  REQUIRE(stored.ok());
  const NearCache::Entry copy{std::make_shared<const std::string>("near"),
                              stored->generation,
                              absl::Now(),
                              absl::Now(),
                              4,
                              stored->checksum};
  const int gets_before = recorder->multi_gets;
  const absl::StatusOr<Found> found = parts.reader.Read(keys, &copy);
  REQUIRE(found.ok());
  CHECK(found->from_l1);
  CHECK(*found->bytes == "near");
  CHECK(recorder->multi_gets == gets_before + 1);  // the manifest alone
}

TEST_CASE("the writer checks a payload before anything is written") {
  auto recorder = std::make_shared<testing::RecordingBackend>(NewMemoryBackend());
  CacheOptions options;
  options.max_payload_size = 16;
  Parts parts(recorder, options);
  const StoredKeys keys("cc:", "doc");
  CHECK(absl::IsResourceExhausted(parts.writer.EncodeAndStore(keys, JsonNumbers(50)).status()));
  CHECK(absl::IsInvalidArgument(parts.writer.EncodeAndStore(keys, "{oops").status()));
  CHECK(absl::IsInvalidArgument(parts.writer.CheckPayload("{oops")));
  CHECK(parts.writer.CheckPayload("[1]").ok());
  CHECK(recorder->multi_sets == 0);
}

TEST_CASE("generation ids do not repeat") {
  GenerationSource generations;
  std::unordered_set<std::uint64_t> seen;
  for (int i = 0; i < 10000; ++i) CHECK(seen.insert(generations.Next()).second);
}

// ---- l1_policy -----------------------------------------------------------------------------

TEST_CASE("the near cache answers fresh copies, revalidates older ones and covers a failure") {
  FakeClock time;
  CacheOptions options;
  options.l1_capacity_bytes = 1 << 20;
  options.l1_fresh_for = absl::Seconds(1);
  options.ttl = absl::Minutes(1);
  options.clock = time.AsFunction();
  const CacheClock clock(options.clock);
  CacheCounters counters;
  L1Policy l1(options, clock, counters);
  const Bytes bytes = std::make_shared<const std::string>("[1]");
  Manifest manifest;
  manifest.generation = 7;
  manifest.checksum = 9;
  manifest.created_unix_ms = absl::ToUnixMillis(time.Now());
  l1.KeepStored("k", bytes, manifest, l1.Epoch("k"));

  std::optional<Found> hit = l1.FreshHit("k");
  REQUIRE(hit.has_value());
  CHECK(hit->from_l1);
  CHECK(hit->bytes == bytes);
  CHECK(counters.l1_hits.Value() == 1);

  time.Advance(absl::Seconds(2));  // older than l1_fresh_for: the manifest decides
  CHECK(!l1.FreshHit("k").has_value());
  std::optional<NearCache::Entry> live = l1.Live("k", time.Now());
  REQUIRE(live.has_value());
  absl::StatusOr<Found> confirmed = Found{live->bytes, 7, live->created, true, 9};
  l1.AfterRead("k", confirmed, live, l1.Epoch("k"), time.Now());
  CHECK(counters.l1_revalidations.load() == 1);
  CHECK(l1.FreshHit("k").has_value());  // confirmed now

  time.Advance(absl::Seconds(2));
  live = l1.Live("k", time.Now());
  absl::StatusOr<Found> failed = absl::UnavailableError("down");
  l1.AfterRead("k", failed, live, l1.Epoch("k"), time.Now());
  REQUIRE(failed.ok());  // the live copy answers instead
  CHECK(failed->bytes == bytes);

  absl::StatusOr<Found> missing = absl::NotFoundError("gone");
  l1.AfterRead("k", missing, live, l1.Epoch("k"), time.Now());
  CHECK(!l1.Live("k", time.Now()).has_value());
}

TEST_CASE("the near cache keeps nothing a read or load found before this process wrote the key") {
  CacheOptions options;
  options.l1_capacity_bytes = 1 << 20;
  const CacheClock clock(options.clock);
  CacheCounters counters;
  L1Policy l1(options, clock, counters);
  const std::uint64_t before = l1.Epoch("k");
  l1.Erase("k");  // this process wrote the key meanwhile
  std::optional<NearCache::Entry> none;
  absl::StatusOr<Found> found =
      Found{std::make_shared<const std::string>("[1]"), 1, absl::Now(), false, 2};
  l1.AfterRead("k", found, none, before, absl::Now());
  CHECK(!l1.Live("k", absl::Now()).has_value());
  Manifest manifest;
  l1.KeepStored("k", std::make_shared<const std::string>("[2]"), manifest, before);
  CHECK(!l1.Live("k", absl::Now()).has_value());
  CHECK(l1.bytes() == 0);

  CacheOptions off;  // l1_capacity_bytes 0: nothing is kept
  L1Policy none_kept(off, clock, counters);
  none_kept.KeepStored("k", std::make_shared<const std::string>("[2]"), manifest, 0);
  CHECK(!none_kept.FreshHit("k").has_value());
}

// ---- lease ---------------------------------------------------------------------------------

CacheOptions LeaseOptions() {
  return {.lease_ttl = absl::Seconds(10),
          .lease_poll_initial = absl::Milliseconds(2),
          .lease_poll_max = absl::Milliseconds(10)};
}

TEST_CASE("one holder at a time takes a key's lease until it releases it") {
  Parts parts(NewMemoryBackend(), LeaseOptions());
  Leases a(parts.options, "a", parts.backend, parts.reader, parts.clock, parts.counters, parts.log);
  Leases b(parts.options, "b", parts.backend, parts.reader, parts.clock, parts.counters, parts.log);
  const StoredKeys keys("cc:", "doc");
  CHECK(a.enabled());
  CHECK(a.Take(keys).value_or(false));
  CHECK(!b.Take(keys).value_or(true));
  a.Release(keys);
  CHECK(b.Take(keys).value_or(false));
}

TEST_CASE("a lease waiter gets the holder's entry, or loads when the holder leaves without one",
          "[concurrency]") {
  Parts parts(NewMemoryBackend(), LeaseOptions());
  Leases holder(parts.options, "holder", parts.backend, parts.reader, parts.clock, parts.counters,
                parts.log);
  Leases waiter(parts.options, "waiter", parts.backend, parts.reader, parts.clock, parts.counters,
                parts.log);
  const StoredKeys keys("cc:", "doc");

  REQUIRE(holder.TakeOrAwait(keys, absl::InfiniteFuture()).held);
  Leases::Outcome waited;
  std::thread waiting([&] { waited = waiter.TakeOrAwait(keys, absl::Now() + absl::Seconds(5)); });
  REQUIRE(WaitFor([&] { return parts.counters.leases_waited.load() == 1; }));
  REQUIRE(parts.writer.EncodeAndStore(keys, "[1]").ok());
  waiting.join();
  REQUIRE(waited.found.has_value());
  CHECK(*waited.found->bytes == "[1]");
  CHECK(!waited.held);
  CHECK(parts.counters.lease_wait_hits.load() == 1);
  holder.Release(keys);

  const StoredKeys other("cc:", "other");
  REQUIRE(holder.TakeOrAwait(other, absl::InfiniteFuture()).held);
  std::thread left_without([&] { waited = waiter.TakeOrAwait(other, absl::InfiniteFuture()); });
  REQUIRE(WaitFor([&] { return parts.counters.leases_waited.load() == 2; }));
  holder.Release(other);  // nothing stored
  left_without.join();
  CHECK(!waited.found.has_value());
  CHECK(waited.held);
  CHECK(parts.counters.lease_wait_loads.load() == 1);
}

TEST_CASE("a backend without SetIfAbsent turns leasing off") {
  Parts parts(std::make_shared<testing::FailingBackend>(absl::UnavailableError("down")),
              LeaseOptions());
  Leases leases(parts.options, "a", parts.backend, parts.reader, parts.clock, parts.counters,
                parts.log);
  const StoredKeys keys("cc:", "doc");
  CHECK(leases.enabled());
  CHECK(absl::IsUnimplemented(leases.Take(keys).status()));
  CHECK(!leases.enabled());
  const Leases::Outcome outcome = leases.TakeOrAwait(keys, absl::InfiniteFuture());
  CHECK(!outcome.held);
  CHECK(!outcome.found.has_value());
}

// ---- refresher -----------------------------------------------------------------------------

// Refreshes that record the keys they ran and can be held inside the run function.
class RecordingRefreshes {
 public:
  RefreshOutcome Run(const RefreshTask& task) {
    MutexLock lock(&mu_);
    ran_.push_back(task.key);
    while (hold_) cv_.Wait(&mu_);
    if (task.key == "throws") throw std::runtime_error("refresh boom");
    if (task.key == "fails") return {.status = absl::UnavailableError("origin down")};
    return outcome_;
  }
  void Hold(bool hold) {
    MutexLock lock(&mu_);
    hold_ = hold;
    cv_.SignalAll();
  }
  void Answer(RefreshOutcome outcome) {
    MutexLock lock(&mu_);
    outcome_ = std::move(outcome);
  }
  std::vector<std::string> ran() {
    MutexLock lock(&mu_);
    return ran_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  RefreshOutcome outcome_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> ran_ ABSL_GUARDED_BY(mu_);
};

struct RefresherUnderTest {
  explicit RefresherUnderTest(CacheOptions opts)
      : options(std::move(opts)),
        clock(options.clock),
        log(options.log),
        refresher(
            options, [this](const RefreshTask& task) { return refreshes.Run(task); }, clock,
            counters, log) {}

  const CacheOptions options;
  const CacheClock clock;
  CacheCounters counters;
  RateLimitedLog log;
  RecordingRefreshes refreshes;
  Refresher refresher;
};

const Loader kNoLoader = [] { return absl::StatusOr<std::string>("[]"); };

TEST_CASE("the refresher runs one refresh per key at a time and drops what overflows its queue",
          "[concurrency]") {
  CacheOptions options;
  options.refresh_threads = 1;
  options.max_queued_refreshes = 2;
  RefresherUnderTest r(options);
  r.refreshes.Hold(true);
  r.refresher.Schedule("a", kNoLoader);
  REQUIRE(WaitFor([&] { return r.refreshes.ran().size() == 1; }));  // "a" runs, held
  r.refresher.Schedule("a", kNoLoader);                             // under way: ignored
  r.refresher.Schedule("b", kNoLoader);
  r.refresher.Schedule("c", kNoLoader);
  r.refresher.Schedule("d", kNoLoader);  // the queue holds two
  CHECK(r.counters.refreshes_dropped.load() == 1);
  r.refreshes.Hold(false);
  REQUIRE(WaitFor([&] { return r.refreshes.ran().size() == 3; }));
  CHECK(r.refreshes.ran() == std::vector<std::string>{"a", "b", "c"});
  r.refresher.Schedule("d", kNoLoader);  // a later stale read tries again
  REQUIRE(WaitFor([&] { return r.refreshes.ran().size() == 4; }));
}

TEST_CASE("a failed refresh backs the key off and a deferred one waits until its time",
          "[concurrency]") {
  FakeClock time;
  CacheOptions options;
  options.load_retry_initial = absl::Seconds(1);
  options.load_retry_max = absl::Seconds(1);
  options.clock = time.AsFunction();
  RefresherUnderTest r(options);
  const auto ran = [&](std::string_view key) {
    const std::vector<std::string> all = r.refreshes.ran();
    return std::count(all.begin(), all.end(), key);
  };

  r.refresher.Schedule("fails", kNoLoader);
  // Scheduled again until the backoff shows: never a second run while the clock stands still.
  REQUIRE(WaitFor([&] {
    r.refresher.Schedule("fails", kNoLoader);
    return r.counters.refreshes_deferred.load() > 0;
  }));
  CHECK(ran("fails") == 1);
  CHECK(r.counters.refresh_errors.load() == 1);
  time.Advance(absl::Seconds(1));
  REQUIRE(WaitFor([&] {
    r.refresher.Schedule("fails", kNoLoader);
    return ran("fails") >= 2;
  }));

  r.refreshes.Answer({.defer_until = time.Now() + absl::Seconds(30)});
  r.refresher.Schedule("leased", kNoLoader);
  const std::uint64_t deferred = r.counters.refreshes_deferred.load();
  REQUIRE(WaitFor([&] {
    r.refresher.Schedule("leased", kNoLoader);
    return r.counters.refreshes_deferred.load() > deferred;
  }));
  CHECK(ran("leased") == 1);
  r.refreshes.Answer({});
  time.Advance(absl::Seconds(30));
  REQUIRE(WaitFor([&] {
    r.refresher.Schedule("leased", kNoLoader);
    return ran("leased") >= 2;
  }));
}

TEST_CASE("a refresh that throws is an error of that refresh, and its thread lives on",
          "[concurrency]") {
  std::vector<std::string> logged;
  Mutex log_mu;
  CacheOptions options;
  options.refresh_threads = 1;
  options.log = [&](LogLevel, std::string_view message) {
    MutexLock lock(&log_mu);
    logged.emplace_back(message);
  };
  RefresherUnderTest r(options);
  r.refresher.Schedule("throws", kNoLoader);
  REQUIRE(WaitFor([&] { return r.counters.refresh_errors.load() == 1; }));
  r.refresher.Schedule("after", kNoLoader);
  REQUIRE(WaitFor([&] { return r.refreshes.ran().size() == 2; }));
  CHECK(r.counters.refresh_errors.load() == 1);
  MutexLock lock(&log_mu);
  REQUIRE(logged.size() == 1);
  CHECK(absl::StrContains(logged[0], "chunkcache: a refresh threw: refresh boom"));
}

TEST_CASE("Stop waits for the refresh under way, drops the queued ones and refuses new ones",
          "[concurrency]") {
  CacheOptions options;
  options.refresh_threads = 1;
  RefresherUnderTest r(options);
  r.refreshes.Hold(true);
  r.refresher.Schedule("running", kNoLoader);
  REQUIRE(WaitFor([&] { return r.refreshes.ran().size() == 1; }));
  r.refresher.Schedule("queued", kNoLoader);
  std::atomic<bool> stopped{false};
  std::thread stopping([&] {
    r.refresher.Stop();
    stopped = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  CHECK(!stopped);  // the refresh under way holds it
  r.refreshes.Hold(false);
  stopping.join();
  r.refresher.Schedule("late", kNoLoader);
  absl::SleepFor(absl::Milliseconds(20));
  CHECK(r.refreshes.ran() == std::vector<std::string>{"running"});
}

}  // namespace
}  // namespace chunkcache::internal
