#include "chunkcache/momento_backend.h"

#include <stdlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catalogue.h"
#include "chunkcache/chunked_cache.h"
#include "fixtures/momento_emulator.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::MomentoEmulator;
using testing::MomentoFaults;

constexpr char kApiKey[] = "test-api-key";

MomentoBackendOptions OptionsFor(const MomentoEmulator& emulator) {
  return {.endpoint = emulator.endpoint(),
          .cache_name = "test-cache",
          .api_key = kApiKey,
          .backoff_base = absl::Milliseconds(1),
          .backoff_cap = absl::Milliseconds(20)};
}

std::shared_ptr<MomentoBackend> Connect(MomentoBackendOptions options) {
  auto backend = std::make_shared<MomentoBackend>(std::move(options));
  const absl::Status status = backend->Init();
  INFO(status.ToString());
  REQUIRE(status.ok());
  return backend;
}

std::string Catalogue(double megabytes, std::uint64_t seed = 1) {
  return catalogue::GenerateCatalogue({.megabytes = megabytes, .seed = seed});
}

absl::Status CreationError(MomentoBackendOptions options) {
  return NewMomentoBackend(std::move(options)).status();
}

// Runs `body` with MOMENTO_API_KEY set to `value` (unset when empty), restoring it afterwards.
template <typename Body>
void WithApiKeyEnv(const char* value, Body body) {
  const char* old = getenv("MOMENTO_API_KEY");
  const std::string saved = old != nullptr ? old : "";
  if (value[0] != '\0') {
    setenv("MOMENTO_API_KEY", value, 1);
  } else {
    unsetenv("MOMENTO_API_KEY");
  }
  body();
  if (old != nullptr) {
    setenv("MOMENTO_API_KEY", saved.c_str(), 1);
  } else {
    unsetenv("MOMENTO_API_KEY");
  }
}

TEST_CASE("bad Momento options are refused at creation with a clear status") {
  const MomentoBackendOptions good = {
      .endpoint = "http://127.0.0.1:9", .cache_name = "c", .api_key = "k"};
  CHECK(CreationError(good).ok());
  WithApiKeyEnv("", [&] {
    MomentoBackendOptions no_key = good;
    no_key.api_key.clear();
    const absl::Status status = CreationError(no_key);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(status.message(), "MOMENTO_API_KEY"));
  });
  WithApiKeyEnv("from-the-environment", [&] {
    MomentoBackendOptions env_key = good;
    env_key.api_key.clear();
    CHECK(CreationError(env_key).ok());
  });

  auto expect_invalid = [&](auto change) {
    MomentoBackendOptions options = good;
    change(options);
    const absl::Status status = CreationError(options);
    INFO(status.ToString());
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  };
  expect_invalid([](auto& o) { o.endpoint = "http://api.cache.example.com"; });  // not loopback
  expect_invalid([](auto& o) { o.endpoint = "ftp://127.0.0.1"; });
  expect_invalid([](auto& o) { o.endpoint = "not a url"; });
  expect_invalid([](auto& o) { o.endpoint = ""; });
  expect_invalid([](auto& o) { o.endpoint = "https://example.com/?x=1"; });
  expect_invalid([](auto& o) { o.cache_name = ""; });
  expect_invalid([](auto& o) { o.max_item_size = kMomentoMaxItemBytes + 1; });
  expect_invalid([](auto& o) { o.max_attempts = 0; });
  expect_invalid([](auto& o) { o.max_concurrent_requests = 0; });
  expect_invalid([](auto& o) { o.request_timeout = absl::ZeroDuration(); });
  expect_invalid([](auto& o) { o.api_key = "line\r\nX-Injected: 1"; });

  MomentoBackendOptions https = good;
  https.endpoint = "https://api.cache.cell-1.prod.a.momentohq.com/";
  CHECK(CreationError(https).ok());
  https.endpoint = "http://[::1]:8080";
  CHECK(CreationError(https).ok());
}

TEST_CASE("items round-trip through the Momento emulator, binary keys included") {
  MomentoEmulator emulator;
  auto backend = Connect(OptionsFor(emulator));

  std::string binary_key;
  for (int c = 0; c < 256; ++c) binary_key.push_back(static_cast<char>(c));
  const std::vector<std::string> keys = {"plain", "cc:{catalogue}:00ab:1", "ключ", binary_key,
                                         "sp ace&amp=?"};
  std::vector<std::string> values;
  std::vector<KeyValue> items;
  for (std::size_t i = 0; i < keys.size(); ++i) values.push_back(absl::StrCat("value-", i));
  values.back().push_back('\0');  // values are raw bytes
  for (std::size_t i = 0; i < keys.size(); ++i) items.push_back({keys[i], values[i]});
  REQUIRE(backend->MultiSet(items, absl::Seconds(60)).ok());

  std::vector<std::string_view> asked(keys.begin(), keys.end());
  asked.push_back("absent");
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet(asked);
  REQUIRE(got.ok());
  REQUIRE(got->size() == asked.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    REQUIRE((*got)[i].has_value());
    CHECK(*(*got)[i] == values[i]);
    CHECK(emulator.Item("test-cache", keys[i]) == values[i]);  // stored under the same bytes
  }
  CHECK_FALSE(got->back().has_value());

  REQUIRE(backend->Delete({keys[0], std::string_view("never-stored")}).ok());
  got = backend->MultiGet({keys[0], keys[1]});
  REQUIRE(got.ok());
  CHECK_FALSE((*got)[0].has_value());
  CHECK((*got)[1].has_value());
  CHECK(backend->MultiGet({}).ok());
  CHECK(backend->MultiSet({}, absl::Seconds(1)).ok());
}

TEST_CASE("every Momento PUT carries a TTL in whole seconds, rounded up") {
  MomentoEmulator emulator;
  auto backend = Connect(OptionsFor(emulator));
  REQUIRE(backend->MultiSet({{"a", "1"}}, absl::Milliseconds(1500)).ok());
  REQUIRE(backend->MultiSet({{"b", "2"}}, absl::Milliseconds(1)).ok());
  REQUIRE(backend->MultiSet({{"c", "3"}}, absl::Hours(1)).ok());
  const auto stats = emulator.Stats();
  CHECK(stats.puts == 3);
  CHECK(stats.puts_without_ttl == 0);
  CHECK(stats.ttl_seconds_seen == std::vector<std::int64_t>{1, 2, 3600});

  CHECK(backend->MultiSet({{"d", "4"}}, absl::InfiniteDuration()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(backend->MultiSet({{"d", "4"}}, absl::ZeroDuration()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(emulator.Stats().puts == 3);  // refused before sending

  emulator.AdvanceClock(2.5);
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({"a", "b", "c"});
  REQUIRE(got.ok());
  CHECK_FALSE((*got)[0].has_value());
  CHECK_FALSE((*got)[1].has_value());
  CHECK((*got)[2] == "3");
}

TEST_CASE("Momento item limits hold in both directions") {
  MomentoEmulator emulator;
  auto backend = Connect(OptionsFor(emulator));
  const std::string too_big((1 << 20) + 1, 'x');
  const absl::Status status = backend->MultiSet({{"big", too_big}}, absl::Seconds(60));
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(emulator.Stats().puts == 0);

  // A larger item stored by someone else is refused on read, not buffered without bound.
  MomentoBackendOptions roomy = OptionsFor(emulator);
  roomy.max_item_size = 2 << 20;
  REQUIRE(Connect(roomy)->MultiSet({{"big", too_big}}, absl::Seconds(60)).ok());
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({"big"});
  CHECK(got.status().code() == absl::StatusCode::kResourceExhausted);
}

TEST_CASE("the catalogue and the corpus round-trip through ChunkedCache on Momento") {
  MomentoEmulator emulator({.latency_ms = 5});
  auto backend = Connect(OptionsFor(emulator));
  ChunkedCache cache(backend);
  std::vector<std::pair<std::string, std::string>> documents = {{"catalogue", Catalogue(10)}};
  for (const auto& file : testing::CorpusFiles()) {
    documents.emplace_back(file.filename().string(), testing::ReadFile(file));
  }
  for (const auto& [key, json] : documents) REQUIRE(cache.Put(key, json).ok());

  emulator.ResetStats();
  for (const auto& [key, json] : documents) {
    CAPTURE(key);
    absl::StatusOr<Bytes> got = cache.Get(key);
    REQUIRE(got.ok());
    CHECK(**got == json);
  }
  const auto stats = emulator.Stats();
  CHECK(stats.max_concurrent >= 2);  // the catalogue's chunks were fetched at once
  CHECK(stats.puts_without_ttl == 0);
  for (const auto& [key, size] : emulator.Keys("test-cache")) {
    CAPTURE(key);
    CHECK(size <= backend->max_item_size());
  }
  const std::size_t chunk_items = emulator.Keys("test-cache").size();
  CHECK(chunk_items > documents.size());  // the catalogue needed chunks
}

TEST_CASE("Momento connections are reused across calls") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_concurrent_requests = 4;
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 1024});
  const std::string json = Catalogue(0.05);
  REQUIRE(cache.Put("k", json).ok());
  emulator.ResetStats();
  for (int i = 0; i < 20; ++i) REQUIRE(cache.Get("k").ok());
  const auto stats = emulator.Stats();
  INFO("requests " << stats.requests << ", connections " << stats.connections);
  CHECK(stats.requests >= 20 * 2);
  CHECK(stats.connections <= 4);
}

TEST_CASE("throttling and server errors are retried until every call succeeds") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 10;
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 16 << 10});
  const std::string json = Catalogue(0.3);
  emulator.SetFaults({.throttle_rate = 0.2, .error_rate = 0.1, .seed = 7});

  for (int i = 0; i < 10; ++i) {
    const std::string key = absl::StrCat("k", i);
    const absl::Time start = absl::Now();
    REQUIRE(cache.Put(key, json).ok());
    absl::StatusOr<Bytes> got = cache.Get(key);
    REQUIRE(got.ok());
    CHECK(**got == json);
    CHECK(absl::Now() - start < 2 * options.deadline);  // Put and Get each within the deadline
  }
  const MomentoBackendStats stats = backend->Stats();
  CHECK(stats.throttled > 0);
  CHECK(stats.server_errors > 0);
  CHECK(stats.retries >= stats.throttled + stats.server_errors);
  CHECK(emulator.Stats().faults_injected > 0);
}

TEST_CASE("a backend that throttles every request gives ResourceExhausted after the attempts") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 4;
  auto backend = Connect(options);
  emulator.SetFaults({.throttle_rate = 1});

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({"k"});
  CHECK(got.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(absl::StrContains(got.status().message(), "4 attempts"));
  CHECK(absl::Now() - start < options.deadline);
  CHECK(emulator.Stats().requests == 4);

  SECTION("and never runs past its deadline") {
    options.max_attempts = 1000;
    options.backoff_base = absl::Milliseconds(50);
    options.backoff_cap = absl::Milliseconds(200);
    options.deadline = absl::Milliseconds(600);
    auto patient = Connect(options);
    const absl::Time begin = absl::Now();
    const absl::Status status = patient->MultiSet({{"k", "v"}}, absl::Seconds(1));
    const absl::Duration took = absl::Now() - begin;
    INFO(status.ToString() << " after " << absl::FormatDuration(took));
    CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    CHECK(took < options.deadline + absl::Milliseconds(250));
  }
}

TEST_CASE("a wrong API key is Unauthenticated, not retried, and never echoed") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.api_key = "wrong-secret-key-1234";
  auto backend = Connect(options);
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({"k"});
  CHECK(got.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK_FALSE(absl::StrContains(got.status().ToString(), options.api_key));
  CHECK(emulator.Stats().requests == 1);
  CHECK(emulator.Stats().auth_failures == 1);
}

TEST_CASE("a read-only API key is PermissionDenied on writes") {
  MomentoEmulator emulator({.read_only_api_key = "reader"});
  MomentoBackendOptions options = OptionsFor(emulator);
  options.api_key = "reader";
  auto backend = Connect(options);
  CHECK(backend->MultiGet({"k"}).ok());
  CHECK(backend->MultiSet({{"k", "v"}}, absl::Seconds(1)).code() ==
        absl::StatusCode::kPermissionDenied);
  CHECK(backend->Delete({"k"}).code() == absl::StatusCode::kPermissionDenied);
}

TEST_CASE("an unknown cache is NotFound with a message naming it, not a miss") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.cache_name = "no-such-cache";
  auto backend = Connect(options);
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({"k"});
  CHECK(got.status().code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(got.status().message(), "no-such-cache"));
  CHECK(absl::StrContains(got.status().message(), "not found"));
  CHECK(backend->MultiSet({{"k", "v"}}, absl::Seconds(1)).code() == absl::StatusCode::kNotFound);
  CHECK(backend->Delete({"k"}).code() == absl::StatusCode::kNotFound);
}

TEST_CASE("truncated replies and dropped connections are retried, never returned as bytes") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 10;
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 16 << 10});
  const std::string json = Catalogue(0.2);
  REQUIRE(cache.Put("k", json).ok());

  emulator.SetFaults({.drop_rate = 0.2, .truncate_rate = 0.3, .seed = 3});
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<Bytes> got = cache.Get("k");
    REQUIRE(got.ok());
    CHECK(**got == json);
  }
  CHECK(backend->Stats().transport_errors > 0);

  emulator.SetFaults({.truncate_rate = 1});
  absl::StatusOr<Bytes> got = cache.Get("k");
  INFO(got.status().ToString());
  CHECK(got.status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("a chunk not yet visible (eventual consistency) is a miss, never wrong bytes") {
  MomentoEmulator emulator;
  auto backend = Connect(OptionsFor(emulator));
  ChunkedCache cache(backend, {.chunk_size = 16 << 10});
  const std::string json = Catalogue(0.2);
  REQUIRE(cache.Put("k", json).ok());

  // Chunk keys carry the generation after the hash tag ("cc:{k}:gen:i"); the manifest does not.
  emulator.SetFaults({.miss_rate = 1, .miss_key_contains = "}:"});
  absl::StatusOr<Bytes> got = cache.Get("k");
  CHECK(got.status().code() == absl::StatusCode::kNotFound);
  CHECK(cache.Stats().corrupt_reads == 1);

  int loads = 0;
  got = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return json;
  });
  REQUIRE(got.ok());
  CHECK(**got == json);
  CHECK(loads == 1);

  emulator.SetFaults({.miss_rate = 0.5, .miss_key_contains = "}:", .seed = 11});
  for (int i = 0; i < 20; ++i) {
    got = cache.Get("k");
    if (got.ok()) {
      CHECK(**got == json);
    } else {
      CHECK(got.status().code() == absl::StatusCode::kNotFound);
    }
  }
}

TEST_CASE("with the Momento server down, GetOrLoad serves the loader's value") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 2;
  options.deadline = absl::Seconds(2);
  auto backend = Connect(options);
  ChunkedCache cache(backend);
  const std::string json = Catalogue(0.1);
  REQUIRE(cache.Put("k", json).ok());
  emulator.Kill();

  CHECK(cache.Get("k").status().code() == absl::StatusCode::kUnavailable);
  int loads = 0;
  absl::StatusOr<Bytes> got = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return json;
  });
  REQUIRE(got.ok());
  CHECK(**got == json);
  CHECK(loads == 1);

  emulator.Restart();  // empty again: the next GetOrLoad stores the value
  got = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return json;
  });
  REQUIRE(got.ok());
  CHECK(cache.Get("k").ok());
}

TEST_CASE("with max_concurrent_requests = 1 the chunks are fetched one at a time") {
  MomentoEmulator emulator({.latency_ms = 2});
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_concurrent_requests = 1;
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 64 << 10});
  const std::string json = Catalogue(1);
  REQUIRE(cache.Put("k", json).ok());
  emulator.ResetStats();
  absl::StatusOr<Bytes> got = cache.Get("k");
  REQUIRE(got.ok());
  CHECK(**got == json);
  CHECK(emulator.Stats().max_concurrent == 1);
}

TEST_CASE("many threads share one Momento backend", "[concurrency]") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 10;
  options.pool_size = 2;  // fewer idle sessions than threads: sessions come and go
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 8 << 10});
  emulator.SetFaults({.throttle_rate = 0.1, .seed = 5});
  std::vector<std::string> documents;
  for (int i = 0; i < 4; ++i) documents.push_back(Catalogue(0.05, i + 1));

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        const std::string& json = documents[(t + i) % documents.size()];
        const std::string key = absl::StrCat("k", t);
        if (!cache.Put(key, json).ok()) ++failures;
        absl::StatusOr<Bytes> got = cache.Get(key);
        if (!got.ok() || **got != json) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(failures == 0);
}

}  // namespace
}  // namespace chunkcache
