// ChunkedCache under load: the near cache (L1), stale-while-revalidate, the circuit breaker and the
// compressed pass-through. (The cross-process lease is in lease_test.cc.)

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::Eventually;
using testing::FakeClock;
using testing::Gate;
using testing::RecordingBackend;

std::string Json(std::string_view name, std::size_t kilobytes = 64) {
  return testing::GenerateCatalogue({.megabytes = static_cast<double>(kilobytes) / 1024,
                                     .seed = std::hash<std::string_view>{}(name)});
}

struct Fixture {
  FakeClock clock;
  std::shared_ptr<Backend> memory = NewMemoryBackend({.clock = clock.AsFunction()});
  std::shared_ptr<RecordingBackend> backend = std::make_shared<RecordingBackend>(memory);

  CacheOptions Options(CacheOptions options = {}) {
    options.clock = clock.AsFunction();
    options.chunk_size = 16 << 10;  // several chunks for the 64 KB documents
    return options;
  }
  void ResetCounts() {
    backend->multi_gets = 0;
    backend->multi_sets = 0;
    backend->deletes = 0;
  }
};

// ---- Near cache ------------------------------------------------------------------------------

TEST_CASE("an L1 hit within l1_fresh_for makes no backend call and copies no payload") {
  Fixture f;
  ChunkedCache cache(f.backend, f.Options({.l1_capacity_bytes = 64 << 20}));
  const std::string json = Json("a");
  REQUIRE(cache.Put("k", json).ok());
  absl::StatusOr<Bytes> first = cache.Get("k");
  REQUIRE(first.ok());
  CHECK(**first == json);

  f.ResetCounts();
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<Bytes> hit = cache.Get("k");
    REQUIRE(hit.ok());
    CHECK(hit->get() == first->get());  // the same buffer, shared
  }
  CHECK(f.backend->multi_gets == 0);
  const CacheStats stats = cache.Stats();
  CHECK(stats.l1_hits == 100);
  CHECK(stats.hits == 101);
  CHECK(stats.gets == 101);
}

TEST_CASE("after l1_fresh_for an unchanged entry is revalidated by its manifest alone") {
  Fixture f;
  ChunkedCache cache(f.backend,
                     f.Options({.l1_capacity_bytes = 64 << 20, .l1_fresh_for = absl::Seconds(1)}));
  const std::string json = Json("a");
  REQUIRE(cache.Put("k", json).ok());
  absl::StatusOr<Bytes> first = cache.Get("k");
  REQUIRE(first.ok());
  const std::uint64_t chunks_read = cache.Stats().chunks_read;
  CHECK(chunks_read > 1);

  f.clock.Advance(absl::Milliseconds(1500));
  f.ResetCounts();
  const std::uint64_t bytes_before = cache.Stats().bytes_read;
  absl::StatusOr<Bytes> again = cache.Get("k");
  REQUIRE(again.ok());
  CHECK(again->get() == first->get());
  CHECK(f.backend->multi_gets == 1);                      // the manifest only
  CHECK(cache.Stats().chunks_read == chunks_read);        // no chunk downloaded
  CHECK(cache.Stats().bytes_read - bytes_before < 1024);  // a manifest's worth
  CHECK(cache.Stats().l1_revalidations == 1);

  // Revalidated: fresh again for another l1_fresh_for.
  f.ResetCounts();
  REQUIRE(cache.Get("k").ok());
  CHECK(f.backend->multi_gets == 0);
}

TEST_CASE("another writer's Put and Invalidate are seen once l1_fresh_for has passed") {
  Fixture f;
  const CacheOptions options =
      f.Options({.l1_capacity_bytes = 64 << 20, .l1_fresh_for = absl::Seconds(2)});
  ChunkedCache reader(f.backend, options);
  ChunkedCache writer(f.backend, options);  // another process, as far as L1 goes
  const std::string v1 = Json("v1"), v2 = Json("v2");
  REQUIRE(writer.Put("k", v1).ok());
  REQUIRE(**reader.Get("k") == v1);

  REQUIRE(writer.Put("k", v2).ok());
  CHECK(**reader.Get("k") == v1);  // within l1_fresh_for: the near copy
  f.clock.Advance(absl::Seconds(2));
  CHECK(**reader.Get("k") == v2);  // a new generation: fetched and replaced
  CHECK(reader.Stats().l1_revalidations == 0);

  REQUIRE(writer.Invalidate("k").ok());
  CHECK(reader.Get("k").ok());
  f.clock.Advance(absl::Seconds(2));
  CHECK(reader.Get("k").status().code() == absl::StatusCode::kNotFound);
  CHECK(reader.Stats().l1_bytes == 0);

  SECTION("the writer's own Put is seen at once") {
    REQUIRE(writer.Put("k", v1).ok());
    REQUIRE(**writer.Get("k") == v1);
    REQUIRE(writer.Put("k", v2).ok());
    CHECK(**writer.Get("k") == v2);
  }
}

TEST_CASE("the near cache stays within its byte bound, least recently used out first") {
  Fixture f;
  const std::size_t capacity = 300 << 10;
  ChunkedCache cache(f.backend, f.Options({.l1_capacity_bytes = capacity}));
  std::vector<std::string> documents;
  for (int i = 0; i < 10; ++i) {
    documents.push_back(Json(absl::StrCat("doc", i), 64));
    REQUIRE(cache.Put(absl::StrCat("k", i), documents.back()).ok());
  }
  for (int i = 0; i < 10; ++i) {
    REQUIRE(cache.Get(absl::StrCat("k", i)).ok());
    CHECK(cache.Stats().l1_bytes <= capacity);
  }
  const CacheStats stats = cache.Stats();
  CHECK(stats.l1_evictions >= 5);
  CHECK(stats.l1_bytes > capacity / 2);

  f.ResetCounts();
  REQUIRE(cache.Get("k9").ok());  // the most recent is kept
  CHECK(f.backend->multi_gets == 0);
  // The order is least recently used per shard: which of the older ones went depends on where
  // they hashed, but most of them did.
  int from_backend = 0;
  for (int i = 0; i < 9; ++i) {
    f.ResetCounts();
    REQUIRE(cache.Get(absl::StrCat("k", i)).ok());
    if (f.backend->multi_gets > 0) ++from_backend;
  }
  CHECK(from_backend >= 5);

  SECTION("a payload larger than the whole bound is not kept") {
    ChunkedCache small(f.backend, f.Options({.l1_capacity_bytes = 16 << 10}));
    REQUIRE(small.Get("k1").ok());
    CHECK(small.Stats().l1_bytes == 0);
  }
}

TEST_CASE("with the backend failing, the near copy is served until ttl") {
  Fixture f;
  auto faulty = NewFaultInjectionBackend(f.memory).value();
  ChunkedCache cache(faulty, f.Options({.ttl = absl::Minutes(1),
                                        .l1_capacity_bytes = 64 << 20,
                                        .l1_fresh_for = absl::Seconds(1)}));
  const std::string json = Json("a");
  REQUIRE(cache.Put("k", json).ok());
  REQUIRE(cache.Get("k").ok());
  faulty->SetOptions({.read_error_rate = 1});
  f.clock.Advance(absl::Seconds(30));
  absl::StatusOr<Bytes> got = cache.Get("k");
  REQUIRE(got.ok());
  CHECK(**got == json);
  f.clock.Advance(absl::Seconds(31));  // past ttl: the near copy is gone too
  CHECK(cache.Get("k").status().code() == absl::StatusCode::kUnavailable);
}

// Holds the answer to a chunk read (keys after the hash tag) until the test lets it go.
class GatedBackend : public testing::RecordingBackend {
 public:
  using RecordingBackend::RecordingBackend;
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    auto values = RecordingBackend::MultiGet(keys);
    if (closed_ && !keys.empty() && keys[0].find("}:") != std::string_view::npos) {
      reached_ = true;
      gate_.Wait();
    }
    return values;
  }
  void Close() { closed_ = true; }
  void Open() { gate_.Open(); }
  bool reached() const { return reached_; }

 private:
  std::atomic<bool> closed_{false}, reached_{false};
  Gate gate_;
};

TEST_CASE("an Invalidate during a read keeps that read out of the near cache", "[concurrency]") {
  auto backend = std::make_shared<GatedBackend>(NewMemoryBackend());
  ChunkedCache cache(backend, {.chunk_size = 4096,
                               .l1_capacity_bytes = 64 << 20,
                               .l1_fresh_for = absl::Hours(1) - absl::Seconds(1)});
  const std::string json = Json("a");
  REQUIRE(cache.Put("k", json).ok());
  backend->Close();
  std::thread reader([&] { CHECK(cache.Get("k").ok()); });  // read before the Invalidate
  REQUIRE(Eventually([&] { return backend->reached(); }));
  REQUIRE(cache.Invalidate("k").ok());
  backend->Open();
  reader.join();
  CHECK(cache.Get("k").status().code() == absl::StatusCode::kNotFound);  // not the old copy
  CHECK(cache.Stats().l1_bytes == 0);
}

TEST_CASE("near-cache hits race with writers and invalidations safely", "[concurrency]") {
  auto backend = NewMemoryBackend();
  ChunkedCache cache(backend, {.chunk_size = 4 << 10,
                               .l1_capacity_bytes = 256 << 10,
                               .l1_fresh_for = absl::Milliseconds(1)});
  const std::vector<std::string> versions = {Json("x", 16), Json("y", 16), Json("z", 16)};
  REQUIRE(cache.Put("k", versions[0]).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        absl::StatusOr<Bytes> got = cache.Get("k");
        ++reads;
        if (got.ok() && std::find(versions.begin(), versions.end(), **got) == versions.end()) {
          ++wrong;
        }
        if (!got.ok() && got.status().code() != absl::StatusCode::kNotFound) ++wrong;
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    if (i % 10 == 9) {
      REQUIRE(cache.Invalidate("k").ok());
    } else {
      REQUIRE(cache.Put("k", versions[i % versions.size()]).ok());
    }
    for (int j = 0; j < 3; ++j) {
      REQUIRE(cache.Put(absl::StrCat("other", j), versions[j]).ok());  // churn the bound
      REQUIRE(cache.Get(absl::StrCat("other", j)).ok());
    }
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();
  CHECK(wrong == 0);
  CHECK(reads > 0);
  CHECK(cache.Stats().l1_bytes <= (256 << 10));
}

// ---- Stale-while-revalidate -----------------------------------------------------------------

TEST_CASE("a stale entry is served at once and refreshed exactly once in the background",
          "[concurrency]") {
  Fixture f;
  ChunkedCache cache(f.backend,
                     f.Options({.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1)}));
  const std::string v1 = Json("v1"), v2 = Json("v2");
  REQUIRE(cache.Put("k", v1).ok());

  auto gate = std::make_shared<Gate>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  const Loader loader = [gate, calls, v2]() -> absl::StatusOr<std::string> {
    ++*calls;
    gate->Wait();
    return v2;
  };

  CHECK(**cache.GetOrLoad("k", loader) == v1);  // fresh: no refresh
  CHECK(cache.Stats().stale_served == 0);
  f.clock.Advance(absl::Seconds(61));
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Bytes> got = cache.GetOrLoad("k", loader);  // the loader is blocked: at once
    REQUIRE(got.ok());
    CHECK(**got == v1);
  }
  CHECK(cache.Stats().stale_served == 5);
  REQUIRE(Eventually([&] { return *calls == 1; }));
  gate->Open();
  // The refresh stored v2 (`puts` counts at the start of the store: wait for the entry itself).
  REQUIRE(Eventually([&] {
    absl::StatusOr<Bytes> got = cache.Get("k");
    return got.ok() && **got == v2;
  }));

  CHECK(**cache.GetOrLoad("k", loader) == v2);
  CHECK(*calls == 1);
  const CacheStats stats = cache.Stats();
  CHECK(stats.refreshes == 1);
  CHECK(stats.refresh_errors == 0);
  CHECK(stats.loads == 1);
}

TEST_CASE("a failing refresh keeps the stale entry until ttl, then it is a miss", "[concurrency]") {
  Fixture f;
  ChunkedCache cache(f.backend,
                     f.Options({.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1)}));
  const std::string v1 = Json("v1");
  REQUIRE(cache.Put("k", v1).ok());
  const Loader failing = [] { return absl::UnavailableError("origin down"); };

  f.clock.Advance(absl::Minutes(2));
  CHECK(**cache.GetOrLoad("k", failing) == v1);
  REQUIRE(Eventually([&] { return cache.Stats().refresh_errors == 1; }));
  f.clock.Advance(absl::Minutes(5));
  CHECK(**cache.GetOrLoad("k", failing) == v1);  // still stale, still served
  REQUIRE(Eventually([&] { return cache.Stats().refresh_errors == 2; }));

  f.clock.Advance(absl::Minutes(4));  // past ttl
  CHECK(cache.Get("k").status().code() == absl::StatusCode::kNotFound);
  CHECK(cache.GetOrLoad("k", failing).status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("stale entries in the near cache are refreshed too", "[concurrency]") {
  Fixture f;
  ChunkedCache cache(f.backend, f.Options({.ttl = absl::Minutes(10),
                                           .l1_capacity_bytes = 64 << 20,
                                           .l1_fresh_for = absl::Minutes(5),
                                           .soft_ttl = absl::Minutes(1)}));
  const std::string v1 = Json("v1"), v2 = Json("v2");
  REQUIRE(cache.Put("k", v1).ok());
  REQUIRE(cache.Get("k").ok());  // into L1
  f.clock.Advance(absl::Minutes(2));
  const Loader loader = [v2] { return absl::StatusOr<std::string>(v2); };
  CHECK(**cache.GetOrLoad("k", loader) == v1);  // an L1 hit, stale: served, refresh queued
  // The refresh ends by replacing the L1 copy (after its store: `puts` alone counts too early).
  REQUIRE(Eventually([&] {
    absl::StatusOr<Bytes> near = cache.Get("k");
    return cache.Stats().refreshes == 1 && near.ok() && **near == v2;
  }));
  f.ResetCounts();
  CHECK(**cache.GetOrLoad("k", loader) == v2);  // the refresh replaced the L1 copy
  CHECK(f.backend->multi_gets == 0);
  CHECK(cache.Stats().puts == 2);
}

TEST_CASE("with a lease, one process of the fleet refreshes a stale key", "[concurrency]") {
  Fixture f;
  const CacheOptions options = f.Options(
      {.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1), .lease_ttl = absl::Seconds(30)});
  ChunkedCache a(f.backend, options), b(f.backend, options);  // two processes
  REQUIRE(a.Put("k", Json("v1")).ok());
  f.clock.Advance(absl::Minutes(2));
  auto gate = std::make_shared<Gate>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  const Loader loader = [gate, calls, v2 = Json("v2")]() -> absl::StatusOr<std::string> {
    ++*calls;
    gate->Wait();
    return v2;
  };
  REQUIRE(a.GetOrLoad("k", loader).ok());
  REQUIRE(Eventually([&] { return *calls == 1; }));  // a holds the lease, loading
  REQUIRE(b.GetOrLoad("k", loader).ok());
  REQUIRE(Eventually([&] { return b.Stats().refreshes_lease_held == 1; }));
  CHECK(b.Stats().refreshes_dropped == 0);
  gate->Open();
  // a's refresh stored v2 (`puts` counts at the start of the store: wait for the entry itself).
  REQUIRE(Eventually([&] {
    absl::StatusOr<Bytes> got = a.Get("k");
    return got.ok() && **got == Json("v2");
  }));
  CHECK(*calls == 1);
  CHECK(b.Stats().refreshes == 0);
  CHECK(**b.GetOrLoad("k", loader) == Json("v2"));
}

TEST_CASE("a plain Get of a stale entry counts it but cannot refresh it") {
  Fixture f;
  ChunkedCache cache(f.backend,
                     f.Options({.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1)}));
  REQUIRE(cache.Put("k", Json("v1")).ok());
  f.clock.Advance(absl::Minutes(2));
  REQUIRE(cache.Get("k").ok());
  CHECK(cache.Stats().stale_served == 1);
  CHECK(cache.Stats().refreshes == 0);
}

TEST_CASE("destroying the cache waits for a refresh under way", "[concurrency]") {
  FakeClock clock;
  auto backend = NewMemoryBackend({.clock = clock.AsFunction()});
  auto finished = std::make_shared<std::atomic<bool>>(false);
  auto started = std::make_shared<std::atomic<bool>>(false);
  {
    ChunkedCache cache(
        backend,
        {.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1), .clock = clock.AsFunction()});
    const std::string v1 = Json("v1");
    REQUIRE(cache.Put("k", v1).ok());
    clock.Advance(absl::Minutes(2));
    REQUIRE(cache
                .GetOrLoad("k",
                           [=]() -> absl::StatusOr<std::string> {
                             *started = true;
                             std::this_thread::sleep_for(std::chrono::milliseconds(200));
                             *finished = true;
                             return v1;
                           })
                .ok());
    REQUIRE(Eventually([&] { return started->load(); }));
  }
  CHECK(*finished);
}

// Forwards to a backend and raises a flag when it is destroyed: the cache that owns it has then
// finished destroying itself.
class DestructionSignal : public testing::RecordingBackend {
 public:
  DestructionSignal(std::shared_ptr<Backend> inner, std::shared_ptr<std::atomic<bool>> destroyed)
      : RecordingBackend(std::move(inner)), destroyed_(std::move(destroyed)) {}
  ~DestructionSignal() override { *destroyed_ = true; }

 private:
  std::shared_ptr<std::atomic<bool>> destroyed_;
};

TEST_CASE("a loader owning its cache: the cache destroyed on its own refresh thread",
          "[concurrency]") {
  // Before: ~Impl ran on the refresh thread, which held refresh_mu_ while the task died, and
  // then tried to join itself: a deadlock.
  FakeClock clock;
  auto destroyed = std::make_shared<std::atomic<bool>>(false);
  auto gate = std::make_shared<Gate>();
  auto loaded = std::make_shared<std::atomic<bool>>(false);
  std::weak_ptr<ChunkedCache> weak;
  {
    auto cache = std::make_shared<ChunkedCache>(
        std::make_shared<DestructionSignal>(NewMemoryBackend({.clock = clock.AsFunction()}),
                                            destroyed),
        CacheOptions{
            .ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1), .clock = clock.AsFunction()});
    weak = cache;
    const std::string v1 = Json("v1");
    REQUIRE(cache->Put("k", v1).ok());
    clock.Advance(absl::Minutes(2));
    // Capture by value, as the README advises: the refresh task holds a reference.
    REQUIRE(cache
                ->GetOrLoad("k",
                            [cache, gate, loaded, v1]() -> absl::StatusOr<std::string> {
                              gate->Wait();
                              *loaded = true;
                              return v1;
                            })
                .ok());
  }  // the caller's reference is gone; the refresh task's is the last
  gate->Open();
  CHECK(Eventually([&] { return destroyed->load(); }));
  CHECK(loaded->load());
  CHECK(weak.expired());
}

TEST_CASE("a refresh thread that cannot start leaves no key marked in flight") {
  // RLIMIT_NPROC stops thread creation for an unprivileged user; root ignores it, so the
  // scenario runs in a child that gives up root. The child's exit code is the verdict.
  if (geteuid() != 0) {
    WARN("skipped: needs root to switch to an unprivileged user");
    return;
  }
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // No Catch2 here: plain checks, the exit code says which failed.
    rlimit limit;
    if (getrlimit(RLIMIT_NPROC, &limit) != 0) _exit(11);
    const rlim_t allowed = limit.rlim_cur;
    limit.rlim_cur = 0;  // the soft limit only: it can be raised again up to the hard one
    if (setrlimit(RLIMIT_NPROC, &limit) != 0) _exit(11);
    if (setgid(54321) != 0 || setuid(54321) != 0) _exit(10);
    FakeClock clock;
    int loads = 0;
    {
      ChunkedCache cache(
          NewMemoryBackend({.clock = clock.AsFunction()}),
          {.ttl = absl::Minutes(10), .soft_ttl = absl::Minutes(1), .clock = clock.AsFunction()});
      const std::string v1 = Json("v1");
      if (!cache.Put("k", v1).ok()) _exit(12);
      clock.Advance(absl::Minutes(2));
      const Loader loader = [&]() -> absl::StatusOr<std::string> {
        ++loads;
        return v1;
      };
      // No thread can start: the stale entry is still served and the refresh dropped.
      if (!cache.GetOrLoad("k", loader).ok()) _exit(13);
      if (cache.Stats().refreshes_dropped != 1) _exit(14);
      limit.rlim_cur = allowed;
      if (setrlimit(RLIMIT_NPROC, &limit) != 0) _exit(15);
      // Threads can start again: the key was not left marked, so this stale read refreshes it.
      if (!cache.GetOrLoad("k", loader).ok()) _exit(16);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (cache.Stats().refreshes != 1) {
        if (std::chrono::steady_clock::now() > give_up) _exit(17);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    _exit(loads == 1 ? 0 : 18);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("refreshes beyond the queue bound are dropped and counted", "[concurrency]") {
  Fixture f;
  ChunkedCache cache(f.backend, f.Options({.ttl = absl::Minutes(10),
                                           .soft_ttl = absl::Minutes(1),
                                           .max_queued_refreshes = 2}));
  auto gate = std::make_shared<Gate>();
  for (int i = 0; i < 6; ++i) REQUIRE(cache.Put(absl::StrCat("k", i), Json("v")).ok());
  f.clock.Advance(absl::Minutes(2));
  const Loader blocked = [gate, json = Json("w")]() -> absl::StatusOr<std::string> {
    gate->Wait();
    return json;
  };
  REQUIRE(cache.GetOrLoad("k0", blocked).ok());  // taken by the one refresh thread
  REQUIRE(Eventually([&] { return cache.Stats().refreshes == 1; }));
  for (int i = 1; i < 6; ++i) REQUIRE(cache.GetOrLoad(absl::StrCat("k", i), blocked).ok());
  CHECK(cache.Stats().refreshes_dropped == 3);  // k1 and k2 queued, k3..k5 dropped
  gate->Open();
  REQUIRE(Eventually([&] { return cache.Stats().refreshes == 3; }));
}

// ---- Circuit breaker ------------------------------------------------------------------------

TEST_CASE("the circuit breaker skips a failing backend for its cool-down") {
  Fixture f;
  auto faulty = NewFaultInjectionBackend(f.memory).value();
  ChunkedCache cache(
      faulty, f.Options({.breaker_failure_threshold = 3, .breaker_cooldown = absl::Seconds(5)}));
  const std::string json = Json("a");
  REQUIRE(cache.Put("k", json).ok());
  faulty->SetOptions({.read_error_rate = 1, .write_error_rate = 1});

  for (int i = 0; i < 3; ++i)
    CHECK(cache.Get("k").status().code() == absl::StatusCode::kUnavailable);
  CHECK(cache.Stats().breaker_open);
  CHECK(cache.Stats().breaker_opens == 1);
  const std::uint64_t calls = faulty->Stats().calls;

  absl::StatusOr<Bytes> skipped = cache.Get("k");
  CHECK(skipped.status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::StrContains(skipped.status().message(), "circuit breaker"));
  CHECK(cache.Put("k", json).code() == absl::StatusCode::kUnavailable);
  int loads = 0;
  absl::StatusOr<Bytes> loaded = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return json;
  });
  REQUIRE(loaded.ok());  // served through the origin
  CHECK(**loaded == json);
  CHECK(loads == 1);
  CHECK(faulty->Stats().calls == calls);  // the backend was not touched
  CHECK(cache.Stats().breaker_rejections >= 3);

  f.clock.Advance(absl::Seconds(5));  // cool-down over: tried again, fails, reopens at once
  CHECK_FALSE(cache.Stats().breaker_open);
  CHECK_FALSE(cache.Get("k").ok());
  CHECK(faulty->Stats().calls == calls + 1);
  CHECK(cache.Stats().breaker_open);
  CHECK(cache.Stats().breaker_opens == 2);

  faulty->SetOptions({});  // healed
  f.clock.Advance(absl::Seconds(5));
  absl::StatusOr<Bytes> healed = cache.Get("k");
  REQUIRE(healed.ok());
  CHECK(**healed == json);
  CHECK_FALSE(cache.Stats().breaker_open);
  // One failure after a success does not reopen it.
  faulty->SetOptions({.read_error_rate = 1});
  CHECK_FALSE(cache.Get("k").ok());
  CHECK_FALSE(cache.Stats().breaker_open);
}

TEST_CASE("misses and bad input do not count towards the breaker") {
  Fixture f;
  ChunkedCache cache(f.backend, f.Options({.breaker_failure_threshold = 2}));
  for (int i = 0; i < 5; ++i)
    CHECK(cache.Get("absent").status().code() == absl::StatusCode::kNotFound);
  CHECK(cache.Put("k", "{not json").code() == absl::StatusCode::kInvalidArgument);
  CHECK(cache.Put("k", "{not json").code() == absl::StatusCode::kInvalidArgument);
  CHECK_FALSE(cache.Stats().breaker_open);
  CHECK(cache.Stats().breaker_opens == 0);
}

// ---- Compressed pass-through ----------------------------------------------------------------

TEST_CASE("GetCompressed returns the stored zstd frame, verified, without decoding") {
  Fixture f;
  ChunkedCache cache(f.backend, f.Options());
  const std::string big = Json("big", 256), small = R"({"tiny":true})";
  REQUIRE(cache.Put("big", big).ok());
  REQUIRE(cache.Put("small", small).ok());  // stored inline

  for (const auto& [key, json] : {std::pair{"big", &big}, std::pair{"small", &small}}) {
    CAPTURE(key);
    absl::StatusOr<CompressedPayload> got = cache.GetCompressed(key);
    REQUIRE(got.ok());
    CHECK(got->raw_size == json->size());
    if (json == &big) CHECK(got->zstd->size() < json->size() / 2);
    std::string decoded(json->size(), '\0');
    const std::size_t n =
        ZSTD_decompress(decoded.data(), decoded.size(), got->zstd->data(), got->zstd->size());
    REQUIRE_FALSE(ZSTD_isError(n));
    CHECK(n == json->size());
    CHECK(decoded == *json);
    CHECK(testing::ZstdCliDecompress(*got->zstd) == *json);
  }
  CHECK(cache.Stats().compressed_gets == 2);
  CHECK(cache.GetCompressed("absent").status().code() == absl::StatusCode::kNotFound);
  CHECK(cache.GetCompressed("").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("GetCompressed of a corrupt entry is a miss, never wrong bytes") {
  Fixture f;
  auto faulty = NewFaultInjectionBackend(f.memory).value();
  ChunkedCache cache(faulty, f.Options());
  REQUIRE(cache.Put("k", Json("a", 128)).ok());
  faulty->SetOptions({.flip_byte_rate = 1});
  CHECK(cache.GetCompressed("k").status().code() == absl::StatusCode::kNotFound);
  CHECK(cache.Stats().corrupt_reads == 1);
  faulty->SetOptions({.lose_item_rate = 0.5, .seed = 9});
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<CompressedPayload> got = cache.GetCompressed("k");
    CHECK((got.ok() || got.status().code() == absl::StatusCode::kNotFound));
  }
}

// ---- Options --------------------------------------------------------------------------------

TEST_CASE("out-of-range serving options are InvalidArgument on every call") {
  auto backend = NewMemoryBackend();
  const std::vector<CacheOptions> bad = {
      {.ttl = absl::Minutes(1), .soft_ttl = absl::Minutes(1)},
      {.soft_ttl = -absl::Seconds(1)},
      {.soft_ttl = absl::Seconds(1), .refresh_threads = 0},
      {.ttl = absl::Seconds(1), .l1_capacity_bytes = 1 << 20, .l1_fresh_for = absl::Seconds(1)},
      {.lease_ttl = absl::Seconds(1), .lease_poll_initial = absl::ZeroDuration()},
      {.lease_ttl = absl::Seconds(1),
       .lease_poll_initial = absl::Seconds(2),
       .lease_poll_max = absl::Seconds(1)},
      {.breaker_failure_threshold = -1},
      {.breaker_failure_threshold = 1, .breaker_cooldown = absl::ZeroDuration()},
      {.load_retry_initial = absl::ZeroDuration()},
      {.load_retry_initial = absl::Seconds(2), .load_retry_max = absl::Seconds(1)},
      {.unstored_hold = -absl::Seconds(1)},
  };
  for (const CacheOptions& options : bad) {
    ChunkedCache cache(backend, options);
    CHECK(cache.Get("k").status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(cache.Put("k", "{}").code() == absl::StatusCode::kInvalidArgument);
    CHECK(cache.GetCompressed("k").status().code() == absl::StatusCode::kInvalidArgument);
  }
}

// ---- Per-call deadlines ----------------------------------------------------------------------

TEST_CASE("a call past its deadline fails at once without loading") {
  ChunkedCache cache(NewMemoryBackend());
  int loads = 0;
  const CallOptions past{.deadline = absl::Now() - absl::Milliseconds(1)};
  CHECK(cache.Get("k", past).status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(cache
            .GetOrLoad(
                "k",
                [&] {
                  ++loads;
                  return absl::StatusOr<std::string>("[]");
                },
                past)
            .status()
            .code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(loads == 0);
  CHECK(cache
            .GetOrLoad("k",
                       [&] {
                         ++loads;
                         return absl::StatusOr<std::string>("[]");
                       },
                       {.deadline = absl::Now() + absl::Seconds(10)})
            .ok());
  CHECK(loads == 1);
}

TEST_CASE("a waiter gives up at its own deadline while another caller loads", "[concurrency]") {
  ChunkedCache cache(NewMemoryBackend());
  auto gate = std::make_shared<Gate>();
  std::thread leader([&] {
    CHECK(cache
              .GetOrLoad("k",
                         [gate] {
                           gate->Wait();
                           return absl::StatusOr<std::string>("[1]");
                         })
              .ok());
  });
  REQUIRE(Eventually([&] { return cache.Stats().loads == 1; }));
  const absl::Time start = absl::Now();
  absl::StatusOr<Bytes> waited =
      cache.GetOrLoad("k", [] { return absl::StatusOr<std::string>("[2]"); },
                      {.deadline = absl::Now() + absl::Milliseconds(100)});
  CHECK(waited.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(absl::Now() - start < absl::Seconds(5));  // not load_wait_timeout's 30 s
  gate->Open();
  leader.join();
}

TEST_CASE("a lease wait ends at the caller's deadline with DeadlineExceeded, no load") {
  auto backend = NewMemoryBackend();
  ChunkedCache cache(backend, {.lease_ttl = absl::Seconds(30)});
  // Another process holds the lease and will not store anything.
  REQUIRE(*backend->SetIfAbsent("cc:{k}:lease", "someone-else", absl::Seconds(30)));
  const absl::Time start = absl::Now();
  int loads = 0;
  absl::StatusOr<Bytes> got = cache.GetOrLoad("k",
                                              [&] {
                                                ++loads;
                                                return absl::StatusOr<std::string>("[1]");
                                              },
                                              {.deadline = absl::Now() + absl::Milliseconds(200)});
  CHECK(absl::IsDeadlineExceeded(got.status()));
  CHECK(loads == 0);
  CHECK(absl::Now() - start < absl::Milliseconds(400));  // not the lease's 30 s
  const CacheStats stats = cache.Stats();
  CHECK(stats.leases_waited == 1);
  // Without a deadline, the wait ends when the lease expires: the caller then loads.
}

// A backend whose reads take `delay` (a slow or silent server) unless CallDeadline() comes first:
// then it gives up at the deadline with DeadlineExceeded, as the built-in backends do.
class SlowBackend : public testing::RecordingBackend {
 public:
  SlowBackend(std::shared_ptr<Backend> inner, absl::Duration delay)
      : RecordingBackend(std::move(inner)), delay_(delay) {}
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    const absl::Time answer = absl::Now() + delay_;
    if (const absl::Time deadline = CallDeadline(); deadline < answer) {
      absl::SleepFor(deadline - absl::Now());
      return absl::DeadlineExceededError("slow backend: the call's deadline passed");
    }
    absl::SleepFor(delay_);
    return RecordingBackend::MultiGet(keys);
  }

 private:
  const absl::Duration delay_;
};

TEST_CASE("GetOrLoad answers DeadlineExceeded at its deadline, without loading after it") {
  // Before: the deadline was checked on entry only; a backend that never answered kept the caller
  // for the backend's own timeout (5 s on Momento's defaults), and then the loader ran.
  auto backend = std::make_shared<SlowBackend>(NewMemoryBackend(), absl::Seconds(3));
  ChunkedCache cache(backend);
  int loads = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<Bytes> got = cache.GetOrLoad("k",
                                              [&] {
                                                ++loads;
                                                return absl::StatusOr<std::string>("[1]");
                                              },
                                              {.deadline = start + absl::Milliseconds(300)});
  const absl::Duration took = absl::Now() - start;
  CHECK(absl::IsDeadlineExceeded(got.status()));
  CHECK(loads == 0);
  CHECK(took < absl::Milliseconds(450));
  // Get too.
  const absl::Time again = absl::Now();
  CHECK(absl::IsDeadlineExceeded(
      cache.Get("k", {.deadline = again + absl::Milliseconds(100)}).status()));
  CHECK(absl::Now() - again < absl::Milliseconds(250));
}

TEST_CASE("a waiter is not failed by its leader's earlier deadline", "[concurrency]") {
  auto backend = std::make_shared<SlowBackend>(NewMemoryBackend(), absl::Milliseconds(300));
  ChunkedCache cache(backend);
  std::atomic<int> loads{0};
  const Loader loader = [&] {
    ++loads;
    return absl::StatusOr<std::string>("[1]");
  };
  absl::StatusOr<Bytes> leader, waiter;
  std::thread first([&] {
    leader = cache.GetOrLoad("k", loader, {.deadline = absl::Now() + absl::Milliseconds(100)});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  waiter = cache.GetOrLoad("k", loader, {.deadline = absl::Now() + absl::Seconds(5)});
  first.join();
  CHECK(absl::IsDeadlineExceeded(leader.status()));
  REQUIRE(waiter.ok());
  CHECK(**waiter == "[1]");
}

}  // namespace
}  // namespace chunkcache
