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
        "momento+ftp://host/cache", "momento+https://host/a/b", "mysql://root:hunter2@db"}) {
    CAPTURE(url);
    const absl::Status status = NewBackendFromUrl(url).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(absl::StrContains(status.message(), "hunter2"));
  }
  // A Redis URL that cannot be reached: the backend's own error, still without the password.
  const absl::Status down =
      NewBackendFromUrl("redis://:hunter2@127.0.0.1:1", {.timeout = absl::Milliseconds(200)})
          .status();
  CHECK_FALSE(down.ok());
  CHECK_FALSE(absl::StrContains(down.ToString(), "hunter2"));
}

}  // namespace
}  // namespace chunkcache
