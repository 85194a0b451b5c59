#include "chunkcache/backend_url.h"

#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/match.h"
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

}  // namespace
}  // namespace chunkcache
