#include "chunkcache/momento_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backend_calls.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/testing/backend_conformance.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/hostile_http.h"
#include "fixtures/loopback.h"
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
  absl::StatusOr<std::shared_ptr<MomentoBackend>> backend = NewMomentoBackend(std::move(options));
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  return *std::move(backend);
}

std::string Catalogue(double megabytes, std::uint64_t seed = 1) {
  return testing::GenerateCatalogue({.megabytes = megabytes, .seed = seed});
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

// Every hostile endpoint is refused, and the message quotes none of it: no user info, no host.
TEST_CASE("plain http is accepted only for loopback: an IP in 127.0.0.0/8 or ::1 or localhost") {
  const char* const hostile[] = {
      "http://127.0.0.1.attacker.example",
      "http://127.0.0.1.attacker.example:8080/base",
      "http://127.1.2.3.evil.com/x",
      "http://127.0.0.1%2eattacker.example",  // a percent-encoded dot
      "http://localhost.evil.com",
      "http://localhost.evil.com:9/x",
      "http://localhost./",  // not exactly localhost: a search domain may apply
      "http://127.0.0.1./",
      "http://127.0.0.1.nip.io",
      "http://127.0.0.1@evil.com",
      "http://127.0.0.1:80@evil.com",
      "http://127.0.0.1\\@evil.com",
      "http://user:s3cret-pw@evil.com",
      "http://user:s3cret-pw@127.0.0.1",  // loopback, but no credentials in an endpoint
      "http://s3cret-pw@localhost:9",
      "http://evil.com#@127.0.0.1",
      "http://evil.com?@127.0.0.1",
      "http://[::1].evil",
      "http://[::ffff:127.0.0.1]",  // IPv4-mapped: refused, only ::1 itself is accepted
      "http://[::1%25lo]:8080",     // a zone id
      "http://[::2]",
      "http://0.0.0.0",
      "http://128.0.0.1",
      "http://126.255.255.255",
      "http://api.cache.example.com",
  };
  for (const char* endpoint : hostile) {
    CAPTURE(endpoint);
    const absl::Status status =
        CreationError({.endpoint = endpoint, .cache_name = "c", .api_key = "the-api-key-42"});
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    for (const char* secret : {"s3cret", "evil", "attacker", "nip.io", "the-api-key-42"}) {
      CHECK_FALSE(absl::StrContains(status.message(), secret));
    }
  }

  // Good ones. libcurl's URL parser (which the backend checks with and connects with) normalizes
  // the IPv4 short and hex forms to 127.0.0.1: they are accepted, and requests go to 127.0.0.1.
  const char* const loopback[] = {
      "http://127.0.0.1",
      "http://127.9.8.7:8080/base/",
      "http://127.255.255.254/x",
      "http://localhost",
      "http://LocalHost:9/p",
      "http://[::1]",
      "http://[::1]:8080/x/y",
      "http://[0:0:0:0:0:0:0:1]:80",
      "http://127.1:9",
      "http://0x7f.1",
      "https://127.0.0.1.attacker.example",  // https: no restriction
  };
  for (const char* endpoint : loopback) {
    CAPTURE(endpoint);
    const absl::Status status =
        CreationError({.endpoint = endpoint, .cache_name = "c", .api_key = "k"});
    INFO(status.ToString());
    CHECK(status.ok());
  }

  // Where the short forms actually connect: the emulator listens on 127.0.0.1 only.
  MomentoEmulator emulator;
  for (const std::string host : {"127.1", "0x7f.0.0.1", "127.0.0.1", "localhost"}) {
    CAPTURE(host);
    MomentoBackendOptions options = OptionsFor(emulator);
    options.endpoint = absl::StrCat("http://", host, ":", emulator.port());
    auto backend = Connect(options);
    CHECK(backend->MultiSet({{host, "v"}}, absl::Seconds(60)).ok());
    CHECK(emulator.Item("test-cache", host) == "v");
  }
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

  CHECK(backend->MultiSet({{"d", "4"}}, absl::ZeroDuration()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(emulator.Stats().puts == 3);  // refused before sending
  // "No expiry" is the longest TTL Momento takes by default: a day.
  REQUIRE(backend->MultiSet({{"e", "5"}}, absl::InfiniteDuration()).ok());
  CHECK(emulator.Stats().ttl_seconds_seen == std::vector<std::int64_t>{1, 2, 3600, 86400});

  emulator.AdvanceClock(2.5);
  absl::StatusOr<std::vector<std::optional<std::string>>> got =
      backend->MultiGet({"a", "b", "c", "e"});
  REQUIRE(got.ok());
  CHECK_FALSE((*got)[0].has_value());
  CHECK_FALSE((*got)[1].has_value());
  CHECK((*got)[2] == "3");
  CHECK((*got)[3] == "5");
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

// A JSON document of `megabytes` of random base64 text: zstd leaves it at about 3/4 of its size.
std::string IncompressibleJson(double megabytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937_64 random(42);
  std::string json = "[\"";
  const auto size = static_cast<std::size_t>(megabytes * 1e6);
  while (json.size() < size) {
    std::uint64_t bits = random();
    for (int i = 0; i < 10; ++i, bits >>= 6) json.push_back(kAlphabet[bits & 63]);
  }
  return json + "\"]";
}

TEST_CASE("at the largest Momento max_item_size a full chunk fits under the longest stored key") {
  // Momento's 5 MB limit is on key + value: a value of the whole limit never fits.
  const absl::Status whole = CreationError({.endpoint = "http://127.0.0.1:9",
                                            .cache_name = "c",
                                            .api_key = "k",
                                            .max_item_size = kMomentoMaxItemBytes});
  INFO(whole.ToString());
  CHECK(whole.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(whole.message(), "key"));

  MomentoEmulator emulator;  // refuses len(key) + len(value) > 5,000,000 with 413
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_item_size = kMomentoMaxValueBytes;  // what the chunkcache tool passes for momento+
  auto backend = Connect(options);
  REQUIRE(backend->max_item_size() == kMomentoMaxValueBytes);

  // The longest stored key: a 1,024-byte logical key of bytes that are all escaped (%XX), under a
  // default prefix and under a 1 KiB prefix that is all escaped too.
  const std::string key(kMaxKeySize, '%');
  const std::string json = IncompressibleJson(7.2);
  for (const std::string& prefix : {std::string("cc:"), std::string(1024, '{')}) {
    CAPTURE(prefix.size());
    emulator.Flush();
    ChunkedCache cache(backend, {.key_prefix = prefix, .chunk_size = kMomentoMaxItemBytes});
    const absl::Status put = cache.Put(key, json);
    INFO(put.ToString());
    REQUIRE(put.ok());
    absl::StatusOr<Bytes> got = cache.Get(key);
    REQUIRE(got.ok());
    CHECK(**got == json);

    std::size_t full_chunks = 0, longest_key = 0;
    for (const auto& [stored_key, size] : emulator.Keys("test-cache")) {
      CHECK(stored_key.size() + size <= kMomentoMaxItemBytes);
      longest_key = std::max(longest_key, stored_key.size());
      if (size == backend->max_item_size()) ++full_chunks;
    }
    CHECK(full_chunks == 1);
    CHECK(longest_key >= 3 * kMaxKeySize + 3 * prefix.size());
  }
}

// An HTTP server on 127.0.0.1 that answers every request with one fixed response and closes the
// connection, for replies the emulator does not make.
class FixedReplyServer {
 public:
  FixedReplyServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listener_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(::listen(listener_, 16) == 0);
    REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FixedReplyServer() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }

  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }
  void SetReply(int status, std::string body) {
    std::lock_guard<std::mutex> lock(mu_);
    reply_ = absl::StrCat("HTTP/1.1 ", status, " Whatever\r\nContent-Length: ", body.size(),
                          "\r\nConnection: close\r\n\r\n", body);
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd pfd{listener_, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        pollfd in{fd, POLLIN, 0};
        if (::poll(&in, 1, 2000) <= 0) break;
        const ssize_t n = ::read(fd, buffer, sizeof(buffer));
        if (n <= 0) break;
        request.append(buffer, static_cast<std::size_t>(n));
      }
      std::string reply;
      {
        std::lock_guard<std::mutex> lock(mu_);
        reply = reply_;
      }
      for (std::size_t sent = 0; sent < reply.size();) {
        const ssize_t n = ::send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      ::close(fd);
    }
  }

  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string reply_;
  std::thread thread_;
};

TEST_CASE("an error reply that echoes the API key never shows 8 bytes of it wherever it is cut") {
  FixedReplyServer server;
  // A Momento-like long key, a short one, and one with a byte the excerpt replaces.
  std::string long_key;
  for (int i = 0; long_key.size() < 300; ++i) absl::StrAppend(&long_key, "eyJ", i * 7919, "Qz");
  const std::vector<std::string> keys = {long_key, "short-secret-key-0123", "kéy-with-ütf8-bytes"};
  for (const std::string& key : keys) {
    auto backend = Connect(
        {.endpoint = server.endpoint(), .cache_name = "c", .api_key = key, .max_attempts = 1});
    std::vector<std::string> bodies;
    for (const std::size_t at :
         {0, 100, 150, 190, 196, 199, 200, 201, 300, 500, 505, 510, 511, 512}) {
      bodies.push_back(std::string(at, 'x') + key + std::string(600, 'y'));
    }
    std::string repeated;
    for (int i = 0; i < 8; ++i) repeated += key;
    bodies.push_back(repeated);
    bodies.push_back("z" + repeated);
    bodies.push_back(std::string(150, 'x') + repeated);
    for (const int status : {400, 401, 500}) {
      for (const std::string& body : bodies) {
        server.SetReply(status, body);
        const absl::Status got = backend->MultiGet({"k"}).status();
        CAPTURE(key, status, body.find(key));
        REQUIRE_FALSE(got.ok());
        const std::string message = got.ToString();
        for (std::size_t i = 0; i + 8 <= key.size(); ++i) {
          if (absl::StrContains(message, key.substr(i, 8))) {
            FAIL_CHECK("bytes " << i << ".." << i + 8 << " of the key in: " << message);
            break;
          }
        }
      }
    }
  }
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
  // The loaded value keeps answering for unstored_hold while the backend is down, then a load
  // stores it again.
  ChunkedCache cache(backend, {.unstored_hold = absl::Milliseconds(300)});
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

  emulator.Restart();  // empty again: once the hold is over, the next GetOrLoad stores the value
  absl::SleepFor(absl::Milliseconds(300));
  got = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return json;
  });
  REQUIRE(got.ok());
  CHECK(loads == 2);
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

// ---- Deadlines (issue 16, item 5) and messages (item 10) ----------------------------------------

using testing::HostileHttpServer;
using testing::HostileScript;
using testing::HttpResponse;

TEST_CASE("MultiGetEach hands over what MultiGet returns, in key order, however replies arrive") {
  MomentoEmulator emulator;
  MomentoBackendOptions options = OptionsFor(emulator);
  options.max_attempts = 20;
  auto backend = Connect(options);
  std::vector<KeyValue> items;
  std::vector<std::string> names, values;
  for (int i = 0; i < 12; ++i) {
    names.push_back(absl::StrCat("key-", i));
    values.push_back(i == 3 ? "" : absl::StrCat("value-", i, std::string(i * 1000, 'v')));
  }
  for (int i = 0; i < 12; ++i) items.push_back({names[i], values[i]});
  REQUIRE(backend->MultiSet(items, absl::Seconds(60)).ok());
  REQUIRE(backend->MultiSet({{"brief", "b"}}, absl::Seconds(1)).ok());
  emulator.AdvanceClock(2);

  std::vector<std::string_view> keys(names.begin(), names.end());
  keys.insert(keys.begin() + 2, "absent");
  keys.insert(keys.begin() + 7, "brief");  // expired
  const absl::StatusOr<std::vector<std::optional<std::string>>> expected = backend->MultiGet(keys);
  REQUIRE(expected.ok());
  CHECK((*expected)[2] == std::nullopt);
  CHECK((*expected)[7] == std::nullopt);
  CHECK(testing::GetEach(*backend, keys) == *expected);

  // Random delays, throttling and server errors finish the requests in a shuffled order.
  emulator.SetFaults(
      {.throttle_rate = 0.2, .error_rate = 0.1, .delay_rate = 0.5, .delay_ms = 30, .seed = 7});
  for (int round = 0; round < 3; ++round) CHECK(testing::GetEach(*backend, keys) == *expected);
  CHECK(backend->Stats().retries > 0);
  emulator.ClearFaults();
  CHECK(testing::GetEach(*backend, {}).empty());
  CHECK(backend->Stats().errors == 0);
}

// A Momento stand-in that answers each GET after a delay chosen by its key, so that a test
// decides in which order replies arrive: a key listed in `replies` is answered with its value (a
// miss if none) after its delay, any other key at once with a miss. One request per connection.
class KeyedDelayServer {
 public:
  struct Reply {
    absl::Duration delay;
    std::optional<std::string> value;
  };

  explicit KeyedDelayServer(std::map<std::string, Reply> replies)
      : replies_(std::move(replies)), server_("keyed_delay", [this](int fd, int) { Serve(fd); }) {}

  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", server_.port()); }
  int requests() const { return requests_.load(); }
  // Connections still being served: a request abandoned by the client ends its own at once.
  int open_connections() const { return server_.open_connections(); }

 private:
  void Serve(int fd) {
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (server_.stopping() || !server_.Read(fd, &head, 4096).has_value()) return;
    }
    ++requests_;
    // "GET /cache/c?key=NAME HTTP/1.1": the tests' keys need no percent-encoding.
    const std::size_t from = head.find("key=") + 4;
    const std::string key = head.substr(from, head.find(' ', from) - from);
    Reply reply{absl::ZeroDuration(), std::nullopt};
    if (const auto it = replies_.find(key); it != replies_.end()) reply = it->second;
    const auto delay = std::chrono::milliseconds(absl::ToInt64Milliseconds(reply.delay));
    if (delay.count() > 0 &&
        !server_.Pause(fd, delay, testing::LoopbackServer::Pausing::kDiscardInput)) {
      return;  // the client gave up on this request
    }
    const std::string close = "Connection: close\r\n";
    server_.Write(fd, reply.value.has_value() ? HttpResponse(200, *reply.value, close)
                                              : HttpResponse(404, "Key Not Found", close));
  }

  const std::map<std::string, Reply> replies_;
  std::atomic<int> requests_{0};
  testing::LoopbackServer server_;  // last: its threads use the members above
};

TEST_CASE("MultiGetEach hands an item over as soon as it and every one before it arrived") {
  KeyedDelayServer server({{"first", {absl::ZeroDuration(), "1"}},
                           {"slow", {absl::Milliseconds(600), "2"}},
                           {"quick", {absl::ZeroDuration(), "3"}},
                           {"quick-miss", {absl::ZeroDuration(), std::nullopt}}});
  auto backend = Connect({.endpoint = server.endpoint(), .cache_name = "c", .api_key = kApiKey});
  const std::vector<std::string_view> keys = {"first", "slow", "quick", "quick-miss"};
  std::vector<std::size_t> order;
  std::vector<std::optional<std::string>> got;
  std::vector<absl::Duration> when;
  const absl::Time start = absl::Now();
  const absl::Status status =
      backend->MultiGetEach(keys, [&](std::size_t index, std::optional<ItemView> item) {
        when.push_back(absl::Now() - start);
        order.push_back(index);
        got.push_back(item.has_value() ? std::optional<std::string>(item->value) : std::nullopt);
        return absl::OkStatus();
      });
  INFO(status.ToString());
  REQUIRE(status.ok());
  CHECK(order == std::vector<std::size_t>{0, 1, 2, 3});
  CHECK(got == std::vector<std::optional<std::string>>{"1", "2", "3", std::nullopt});
  REQUIRE(when.size() == 4);
  CHECK(when[0] < absl::Milliseconds(300));   // before the slow one came
  CHECK(when[1] >= absl::Milliseconds(590));  // the quick ones after it waited for it
  CHECK(when[2] >= when[1]);
  CHECK(server.requests() == 4);
}

TEST_CASE("a sink error stops MultiGetEach at once, abandoning the requests in flight") {
  KeyedDelayServer server({{"first", {absl::ZeroDuration(), "1"}},
                           {"slow", {absl::Seconds(3), "2"}},
                           {"slower", {absl::Seconds(4), "3"}}});
  // One pooled session: the next calls reuse the one the stopped call used.
  auto backend = Connect(
      {.endpoint = server.endpoint(), .cache_name = "c", .api_key = kApiKey, .pool_size = 1});
  const std::vector<std::string_view> keys = {"first", "slow", "slower"};
  std::vector<std::size_t> order;
  const absl::Time start = absl::Now();
  const absl::Status status = backend->MultiGetEach(keys, [&](std::size_t index, auto) {
    order.push_back(index);
    return absl::CancelledError("the reader has enough");
  });
  const absl::Duration took = absl::Now() - start;
  CHECK(status == absl::CancelledError("the reader has enough"));
  CHECK(order == std::vector<std::size_t>{0});
  CHECK(took < absl::Seconds(1));
  CHECK(backend->Stats().errors == 0);  // the reader's error, not the backend's

  // The abandoned requests' connections were closed, not left waiting for their replies.
  const absl::Time wait_until = absl::Now() + absl::Seconds(2);
  while (server.open_connections() > 0 && absl::Now() < wait_until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(server.open_connections() == 0);

  // The session works on, for both kinds of read.
  CHECK(testing::GetEach(*backend, {"first", "absent"}) ==
        std::vector<std::optional<std::string>>{"1", std::nullopt});
  const absl::StatusOr<std::vector<std::optional<std::string>>> values =
      backend->MultiGet({"first"});
  REQUIRE(values.ok());
  CHECK((*values)[0] == "1");
}

TEST_CASE("MultiGetEach refuses a reply over max_item_size and hands nothing over for it") {
  MomentoEmulator emulator;
  auto backend = Connect(OptionsFor(emulator));
  MomentoBackendOptions roomy = OptionsFor(emulator);
  roomy.max_item_size = 2 << 20;
  REQUIRE(
      Connect(roomy)
          ->MultiSet({{"small", "s"}, {"big", std::string((1 << 20) + 1, 'x')}}, absl::Seconds(60))
          .ok());
  std::vector<std::size_t> order;
  const std::vector<std::string_view> keys = {"small", "big", "small"};
  const absl::Status status = backend->MultiGetEach(keys, [&](std::size_t index, auto) {
    order.push_back(index);
    return absl::OkStatus();
  });
  INFO(status.ToString());
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(order.size() <= 1);  // "small" if it came before "big" failed; never "big" nor after it
  CHECK(testing::GetEach(*backend, {"small"}) == std::vector<std::optional<std::string>>{"s"});
}

// A server that accepts connections, reads the requests and never answers.
HostileScript Silent() { return HostileScript().Hang(); }

TEST_CASE("a GetOrLoad with a 300 ms deadline against a silent Momento server ends at 300 ms") {
  HostileHttpServer server(Silent());
  // Default options: 1.1 s per request, 5 s per backend call.
  auto backend = Connect({.endpoint = server.endpoint(), .cache_name = "c", .api_key = kApiKey});
  ChunkedCache cache(backend);
  std::atomic<int> loads{0};
  const absl::Time start = absl::Now();
  absl::StatusOr<Bytes> got = cache.GetOrLoad("k",
                                              [&]() -> absl::StatusOr<std::string> {
                                                ++loads;
                                                return std::string("{}");
                                              },
                                              {.deadline = start + absl::Milliseconds(300)});
  const absl::Duration took = absl::Now() - start;
  INFO(got.status().ToString() << " after " << absl::FormatDuration(took));
  CHECK(got.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(took >= absl::Milliseconds(290));
  CHECK(took < absl::Milliseconds(400));
  absl::SleepFor(absl::Milliseconds(50));
  CHECK(loads == 0);  // no load after the deadline, not even in the background
}

TEST_CASE("ScopedCallDeadline bounds every Momento call; the status names the deadline") {
  HostileHttpServer server(Silent());
  auto backend = Connect({.endpoint = server.endpoint(), .cache_name = "c", .api_key = kApiKey});
  const std::vector<std::string_view> keys = {"a", "b", "c"};
  const std::vector<KeyValue> items = {{"a", "1"}, {"b", "2"}};
  for (const char* const operation : {"MultiGet", "MultiGetEach", "MultiSet", "Delete"}) {
    CAPTURE(operation);
    const absl::Time start = absl::Now();
    absl::Status status;
    {
      const ScopedCallDeadline deadline(start + absl::Milliseconds(200));
      if (operation == std::string_view("MultiGet")) {
        status = backend->MultiGet(keys).status();
      } else if (operation == std::string_view("MultiGetEach")) {
        status = backend->MultiGetEach(keys, [](std::size_t, std::optional<ItemView>) {
          FAIL_CHECK("nothing arrived to hand over");
          return absl::OkStatus();
        });
      } else if (operation == std::string_view("MultiSet")) {
        status = backend->MultiSet(items, absl::Seconds(10));
      } else {
        status = backend->Delete(keys);
      }
    }
    const absl::Duration took = absl::Now() - start;
    INFO(status.ToString() << " after " << absl::FormatDuration(took));
    CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(took < absl::Milliseconds(300));
    CHECK(absl::StrContains(status.message(), "call's deadline"));
    CHECK_FALSE(absl::StrContains(status.message(), "1.1s"));  // not the request timeout
  }
  // A deadline already past: nothing is sent.
  const int requests = server.requests();
  {
    const ScopedCallDeadline deadline(absl::Now() - absl::Milliseconds(1));
    CHECK(backend->MultiGet(keys).status().code() == absl::StatusCode::kDeadlineExceeded);
  }
  absl::SleepFor(absl::Milliseconds(50));
  CHECK(server.requests() == requests);
}

TEST_CASE("a Momento timeout says what ran out and how long it waited") {
  HostileHttpServer server(Silent());
  SECTION("the request timeout, on every attempt") {
    auto backend = Connect({.endpoint = server.endpoint(),
                            .cache_name = "c",
                            .api_key = kApiKey,
                            .request_timeout = absl::Milliseconds(150),
                            .max_attempts = 2,
                            .backoff_base = absl::ZeroDuration(),
                            .backoff_cap = absl::ZeroDuration()});
    const absl::Status status = backend->MultiGet({"k"}).status();
    INFO(status.ToString());
    CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(absl::StrContains(status.message(), "request_timeout of 150ms"));
    CHECK(absl::StrContains(status.message(), "(2 attempts)"));
  }
  SECTION("MomentoBackendOptions::deadline, shorter than the request timeout") {
    // The review's case: "timed out after 1.1s" printed after 477 ms.
    auto backend = Connect({.endpoint = server.endpoint(),
                            .cache_name = "c",
                            .api_key = kApiKey,
                            .deadline = absl::Milliseconds(250)});
    const absl::Time start = absl::Now();
    const absl::Status status = backend->MultiGet({"k"}).status();
    const absl::Duration took = absl::Now() - start;
    INFO(status.ToString() << " after " << absl::FormatDuration(took));
    CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(took < absl::Milliseconds(350));
    CHECK(absl::StrContains(status.message(), "MomentoBackendOptions::deadline of 250ms"));
    CHECK_FALSE(absl::StrContains(status.message(), "1.1s"));
  }
}

TEST_CASE("only HTTP 500 to 599 are retried as server errors; other unknown codes are not") {
  for (const int code : {999, 600, 302, 303, 307, 418, 299}) {
    CAPTURE(code);
    HostileHttpServer server(
        HostileScript().Send(HttpResponse(code, "odd", "Location: http://127.0.0.1:9/\r\n")));
    auto backend = Connect({.endpoint = server.endpoint(),
                            .cache_name = "c",
                            .api_key = kApiKey,
                            .backoff_base = absl::ZeroDuration(),
                            .backoff_cap = absl::ZeroDuration()});
    const absl::Status status = backend->MultiGet({"k"}).status();
    INFO(status.ToString());
    CHECK_FALSE(status.ok());
    CHECK(status.code() != absl::StatusCode::kUnavailable);
    CHECK(absl::StrContains(status.message(), absl::StrCat("HTTP ", code)));
    CHECK(server.requests() == 1);
    CHECK(backend->Stats().server_errors == 0);
  }
  for (const int code : {500, 503, 599}) {
    CAPTURE(code);
    HostileHttpServer server(HostileScript().Send(HttpResponse(code, "busy")));
    auto backend = Connect({.endpoint = server.endpoint(),
                            .cache_name = "c",
                            .api_key = kApiKey,
                            .max_attempts = 3,
                            .backoff_base = absl::ZeroDuration(),
                            .backoff_cap = absl::ZeroDuration()});
    const absl::Status status = backend->MultiGet({"k"}).status();
    INFO(status.ToString());
    CHECK(status.code() == absl::StatusCode::kUnavailable);
    CHECK(absl::StrContains(status.message(), absl::StrCat("HTTP ", code)));
    CHECK(server.requests() == 3);
  }
}

// The Backend contract, checked by the conformance kit against the emulator: no SetIfAbsent, TTLs
// in whole seconds.
TEST_CASE("the Momento backend keeps the Backend contract", "[conformance][concurrency]") {
  MomentoEmulator emulator;
  const absl::Status conformance = testing::CheckBackendConformance(
      [&] { return NewMomentoBackend(OptionsFor(emulator)).value_or(nullptr); },
      {.supports_set_if_absent = false, .short_ttl = absl::Seconds(1), .catalogue_megabytes = 2});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache
