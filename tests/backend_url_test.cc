#include "chunkcache/backend_url.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/redis_backend.h"
#include "fixtures/redis_server.h"

namespace chunkcache {
namespace {

TEST_CASE("a backend URL picks the backend and its options") {
  absl::StatusOr<std::shared_ptr<Backend>> memory =
      NewBackendFromUrl("memory://", {.max_item_size = 4096});
  REQUIRE(memory.ok());
  CHECK(dynamic_cast<MemoryBackend*>(memory->get()) != nullptr);
  CHECK((*memory)->max_item_size() == 4096);

  testing::RedisServer server;
  absl::StatusOr<std::shared_ptr<Backend>> redis = NewBackendFromUrl(server.url());
  REQUIRE(redis.ok());
  CHECK(dynamic_cast<RedisBackend*>(redis->get()) != nullptr);
  CHECK((*redis)->MultiSet({{"k", "v"}}, absl::Seconds(5)).ok());

  // redis+cluster:// asks for the slot map (CLUSTER SLOTS), which a server outside a cluster
  // refuses; a cluster has only database 0.
  const std::string cluster_url = "redis+cluster://" + server.url().substr(8);
  absl::StatusOr<std::shared_ptr<Backend>> cluster = NewBackendFromUrl(cluster_url);
  INFO(cluster.status().ToString());
  CHECK(absl::IsInternal(cluster.status()));
  CHECK(absl::StrContains(cluster.status().message(), "cluster support disabled"));
  CHECK(absl::IsInvalidArgument(NewBackendFromUrl(cluster_url + "/1").status()));

  setenv("MOMENTO_API_KEY", "key", 1);
  absl::StatusOr<std::shared_ptr<Backend>> momento =
      NewBackendFromUrl("momento+https://api.cache.cell-1.prod.a.momentohq.com/catalogue");
  REQUIRE(momento.ok());
  CHECK(dynamic_cast<MomentoBackend*>(momento->get()) != nullptr);
  unsetenv("MOMENTO_API_KEY");
}

TEST_CASE("a bad backend URL is InvalidArgument and never echoes a password") {
  for (const char* url :
       {"", "ftp://host", "momento+https://host", "momento+https:///cache",
        "momento+ftp://host/cache", "momento+https://host/a/b", "mysql://root:hunter2@db",
        "momento+https://user:hunter2@host/cache", "momento+https://host/cache?hunter2",
        "momento+https://host/cache#hunter2", "momento+https://host:99999/cache",
        "momento+https://ho st/cache", "momento+https://host/"}) {
    CAPTURE(url);
    const absl::Status status = NewBackendFromUrl(url).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(absl::StrContains(status.message(), "hunter2"));
  }
  // A rediss:// URL whose CA bundle cannot be loaded: refused before connecting.
  const absl::Status no_ca =
      NewBackendFromUrl("rediss://:hunter2@127.0.0.1:1", {.ca_bundle_path = "/nonexistent/ca.pem"})
          .status();
  CHECK(absl::IsInvalidArgument(no_ca));
  CHECK_FALSE(absl::StrContains(no_ca.ToString(), "hunter2"));
  // A Redis URL that cannot be reached: the backend's own error, still without the password.
  const absl::Status down =
      NewBackendFromUrl("redis://:hunter2@127.0.0.1:1", {.timeout = absl::Milliseconds(200)})
          .status();
  CHECK_FALSE(down.ok());
  CHECK_FALSE(absl::StrContains(down.ToString(), "hunter2"));
}

TEST_CASE("a momento+http URL is refused unless its host is loopback and is never echoed") {
  setenv("MOMENTO_API_KEY", "the-api-key-42", 1);
  for (const char* url : {
           "momento+http://127.1.2.3.evil.com/x",
           "momento+http://127.0.0.1.attacker.example/cache",
           "momento+http://127.0.0.1.attacker.example:8080/cache",
           "momento+http://localhost.evil.com/cache",
           "momento+http://127.0.0.1@evil.com/cache",
           "momento+http://127.0.0.1:80@evil.com/cache",
           "momento+http://user:hunter2@127.0.0.1:9/cache",
           "momento+http://hunter2@evil.com/cache",
           "momento+http://evil.com#@127.0.0.1/cache",
           "momento+http://evil.com?@127.0.0.1/cache",
           "momento+http://evil.com\\@127.0.0.1/cache",
           "momento+http://127.0.0.1\\@evil.com/cache",
           "momento+http://[::1].evil/cache",
           "momento+http://[::ffff:127.0.0.1]/cache",
           "momento+http://127.0.0.1./cache",
           "momento+http://0.0.0.0:9/cache",
       }) {
    CAPTURE(url);
    const absl::Status status = NewBackendFromUrl(url).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    for (const char* secret : {"hunter2", "evil", "attacker", "the-api-key-42"}) {
      CHECK_FALSE(absl::StrContains(status.message(), secret));
    }
  }
  for (const char* url : {"momento+http://127.0.0.1:9/cache", "momento+http://127.9.8.7/cache",
                          "momento+http://localhost:9/cache", "momento+http://[::1]:9/cache",
                          "momento+https://127.0.0.1.attacker.example/cache"}) {
    CAPTURE(url);
    const absl::StatusOr<std::shared_ptr<Backend>> backend = NewBackendFromUrl(url);
    INFO(backend.status().ToString());
    CHECK(backend.ok());
  }
  unsetenv("MOMENTO_API_KEY");
}

TEST_CASE("a null URL (an unset environment variable) is InvalidArgument, not a crash") {
  unsetenv("CHUNKCACHE_TEST_NO_SUCH_VARIABLE");
  const absl::Status status =
      NewBackendFromUrl(std::getenv("CHUNKCACHE_TEST_NO_SUCH_VARIABLE")).status();
  CHECK(absl::IsInvalidArgument(status));
  CHECK(absl::StrContains(status.message(),
                          "no backend URL (null; is the environment variable set?)"));
  const char* null_url = nullptr;
  CHECK(
      absl::IsInvalidArgument(NewBackendFromUrl(null_url, {.timeout = absl::Seconds(1)}).status()));
  // Literals, std::string and std::string_view still resolve (to the const char* overload or the
  // std::string_view one) and work.
  CHECK(NewBackendFromUrl("memory://").ok());
  CHECK(NewBackendFromUrl(std::string("memory://")).ok());
  CHECK(NewBackendFromUrl(std::string_view("memory://")).ok());
  const std::string url = "memory://";
  CHECK(NewBackendFromUrl(url, {.max_item_size = 4096}).ok());
  CHECK(NewBackendFromUrl(url.c_str()).ok());
}

// A factory that records the URL and options it was given and makes a MemoryBackend.
struct RecordingFactory {
  std::shared_ptr<std::string> url = std::make_shared<std::string>();
  std::shared_ptr<BackendUrlOptions> options = std::make_shared<BackendUrlOptions>();

  BackendFactory Get() const {
    return [url = url, options = options](
               std::string_view given,
               const BackendUrlOptions& o) -> absl::StatusOr<std::shared_ptr<Backend>> {
      *url = std::string(given);
      *options = o;
      return NewMemoryBackend({.max_item_size = o.max_item_size > 0 ? o.max_item_size : 1024});
    };
  }
};

TEST_CASE("a registered scheme is reached through NewBackendFromUrl, with the URL and options") {
  RecordingFactory factory;
  REQUIRE(RegisterBackendScheme("test-mem+v1.2", factory.Get()).ok());

  // Schemes are compared without regard to case; the factory gets the URL as given.
  absl::StatusOr<std::shared_ptr<Backend>> backend = NewBackendFromUrl(
      "Test-Mem+V1.2://user:hunter2@host/path?q",
      {.timeout = absl::Seconds(3), .max_item_size = 4096, .ca_bundle_path = "/ca.pem"});
  REQUIRE(backend.ok());
  CHECK(dynamic_cast<MemoryBackend*>(backend->get()) != nullptr);
  CHECK((*backend)->max_item_size() == 4096);
  CHECK(*factory.url == "Test-Mem+V1.2://user:hunter2@host/path?q");
  CHECK(factory.options->timeout == absl::Seconds(3));
  CHECK(factory.options->ca_bundle_path == "/ca.pem");
  // Any text after the scheme's ':' is the factory's to judge.
  CHECK(NewBackendFromUrl("test-mem+v1.2:opaque").ok());
  CHECK(*factory.url == "test-mem+v1.2:opaque");

  // The factory's error reaches the caller unchanged; a null backend is Internal.
  REQUIRE(RegisterBackendScheme("test-failing",
                                [](std::string_view, const BackendUrlOptions&)
                                    -> absl::StatusOr<std::shared_ptr<Backend>> {
                                  return absl::UnavailableError("the directory is not mounted");
                                })
              .ok());
  const absl::Status failed = NewBackendFromUrl("test-failing://x").status();
  CHECK(failed == absl::UnavailableError("the directory is not mounted"));
  REQUIRE(RegisterBackendScheme("test-null",
                                [](std::string_view, const BackendUrlOptions&)
                                    -> absl::StatusOr<std::shared_ptr<Backend>> {
                                  return std::shared_ptr<Backend>();
                                })
              .ok());
  const absl::Status null = NewBackendFromUrl("test-null://x").status();
  CHECK(absl::IsInternal(null));
  CHECK(absl::StrContains(null.message(), "\"test-null\" returned no backend"));

  // An unknown scheme's error lists the registered ones, and still never the rest of the URL.
  const absl::Status unknown = NewBackendFromUrl("ftp://user:hunter2@host").status();
  CHECK(absl::IsInvalidArgument(unknown));
  CHECK(absl::StrContains(unknown.message(), "unknown backend scheme \"ftp\""));
  CHECK(absl::StrContains(unknown.message(), "test-mem+v1.2"));
  CHECK_FALSE(absl::StrContains(unknown.message(), "hunter2"));
}

TEST_CASE("a scheme taken (built in or registered) is AlreadyExists; a malformed one is refused") {
  RecordingFactory factory;
  REQUIRE(RegisterBackendScheme("test-taken", factory.Get()).ok());
  for (const char* scheme :
       {"test-taken", "TEST-TAKEN", "memory", "redis", "Redis", "rediss", "redis+cluster",
        "rediss+cluster", "unix", "momento+https", "momento+http", "momento+anything"}) {
    CAPTURE(scheme);
    const absl::Status status = RegisterBackendScheme(scheme, factory.Get());
    CHECK(absl::IsAlreadyExists(status));
    CHECK(absl::StrContains(status.message(), absl::AsciiStrToLower(scheme)));
  }
  // The first registration stays: the built-in schemes too.
  CHECK(NewBackendFromUrl("test-taken://").ok());
  CHECK(*factory.url == "test-taken://");
  absl::StatusOr<std::shared_ptr<Backend>> memory = NewBackendFromUrl("memory://");
  REQUIRE(memory.ok());
  CHECK((*memory)->max_item_size() == (std::size_t{1} << 20));

  for (const std::string scheme :
       {std::string(""), std::string("1dir"), std::string("+dir"), std::string("di r"),
        std::string("dir_x"), std::string("dir:"), std::string("dir://"), std::string("d\xe9r"),
        std::string("dir\0x", 5), std::string(65, 'a'), std::string("redis://:hunter2@host")}) {
    CAPTURE(scheme);
    const absl::Status status = RegisterBackendScheme(scheme, factory.Get());
    CHECK(absl::IsInvalidArgument(status));
    CHECK_FALSE(absl::StrContains(status.message(), "hunter2"));
  }
  CHECK(RegisterBackendScheme(std::string(64, 'a'), factory.Get()).ok());
  const absl::Status empty = RegisterBackendScheme("test-empty-factory", BackendFactory());
  CHECK(absl::IsInvalidArgument(empty));
  CHECK(absl::IsInvalidArgument(NewBackendFromUrl("test-empty-factory://").status()));
}

TEST_CASE("schemes registered while other threads make backends", "[concurrency]") {
  constexpr int kThreads = 8;
  constexpr int kSchemesPerThread = 20;
  std::atomic<int> shared_wins{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &shared_wins, &failures] {
      const BackendFactory factory = [](std::string_view, const BackendUrlOptions&)
          -> absl::StatusOr<std::shared_ptr<Backend>> { return NewMemoryBackend(); };
      // Every thread races for one scheme: exactly one wins.
      const absl::Status shared = RegisterBackendScheme("test-race-shared", factory);
      if (shared.ok()) ++shared_wins;
      if (!shared.ok() && !absl::IsAlreadyExists(shared)) ++failures;
      for (int i = 0; i < kSchemesPerThread; ++i) {
        const std::string own = absl::StrCat("test-race-", t, "-", i);
        if (!RegisterBackendScheme(own, factory).ok()) ++failures;
        // Its own scheme is there at once; another thread's is either there or unknown.
        if (!NewBackendFromUrl(own + "://").ok()) ++failures;
        const absl::Status other =
            NewBackendFromUrl(absl::StrCat("test-race-", (t + 1) % kThreads, "-", i, "://"))
                .status();
        if (!other.ok() && !absl::IsInvalidArgument(other)) ++failures;
        if (!NewBackendFromUrl("memory://").ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(shared_wins == 1);
  CHECK(failures == 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kSchemesPerThread; ++i) {
      CHECK(NewBackendFromUrl(absl::StrCat("test-race-", t, "-", i, "://")).ok());
    }
  }
}

}  // namespace
}  // namespace chunkcache
