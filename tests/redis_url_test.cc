// The Redis URL parser (src/backends/redis/url.h): what each URL form yields, what it refuses, and
// that a refusal quotes nothing of the URL.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "backends/redis/url.h"
#include "catch2/catch.hpp"

namespace chunkcache::redis {
namespace {

ServerUrl Parse(const std::string& url) {
  absl::StatusOr<ServerUrl> server = ParseServerUrl(url);
  INFO(url << ": " << server.status().ToString());
  REQUIRE(server.ok());
  return *std::move(server);
}

TEST_CASE("a redis:// URL gives the host, port, database and credentials") {
  ServerUrl server = Parse("redis://127.0.0.1:6380");
  CHECK(server.seed.host == "127.0.0.1");
  CHECK(server.seed.port == 6380);
  CHECK(server.seed.unix_path.empty());
  CHECK(server.seed.Name() == "127.0.0.1:6380");
  CHECK(server.db == 0);
  CHECK(server.user.empty());
  CHECK(server.password.empty());
  CHECK_FALSE(server.cluster);

  for (const char* url : {"redis://cache.internal", "redis://cache.internal:", "redis://h/"}) {
    CAPTURE(url);
    server = Parse(url);
    CHECK(server.seed.port == 6379);
    CHECK(server.db == 0);
  }

  server = Parse("redis://:s3cret@h:7/3");
  CHECK(server.user.empty());
  CHECK(server.password == "s3cret");
  CHECK(server.seed.Name() == "h:7");
  CHECK(server.db == 3);

  server = Parse("redis://alice:p%25ss@h");
  CHECK(server.user == "alice");
  CHECK(server.password == "p%ss");

  server = Parse("redis://secret@h");  // a password alone, as several clients accept
  CHECK(server.user.empty());
  CHECK(server.password == "secret");

  server = Parse("redis://alice:@h");
  CHECK(server.user == "alice");
  CHECK(server.password.empty());

  // Characters a URL reserves, control characters and spaces all fit in a password.
  server = Parse("redis://:p%40ss%2Fw%3F%23:%3a@h");
  CHECK(server.password == "p@ss/w?#::");
  server = Parse("redis://:%00x%0A@h");
  CHECK(server.password == std::string("\0x\n", 3));
  server = Parse("redis://:two words@h");
  CHECK(server.password == "two words");
}

TEST_CASE("an IPv6 host is written in brackets") {
  ServerUrl server = Parse("redis://[::1]:7000/2");
  CHECK(server.seed.host == "::1");
  CHECK(server.seed.port == 7000);
  CHECK(server.db == 2);
  CHECK(Parse("redis://[fe80::1%25eth0]:5").seed.host == "fe80::1%eth0");
}

TEST_CASE("redis+cluster:// names a cluster node and unix:// a socket") {
  ServerUrl server = Parse("redis+cluster://:pw@10.1.2.3:7001");
  CHECK(server.cluster);
  CHECK(server.seed.Name() == "10.1.2.3:7001");
  CHECK(server.password == "pw");

  server = Parse("unix:///run/redis/redis.sock");
  CHECK(server.seed.unix_path == "/run/redis/redis.sock");
  CHECK(server.seed.host.empty());
  CHECK(server.seed.Name() == "/run/redis/redis.sock");
  CHECK(server.db == 0);
  CHECK_FALSE(server.cluster);
  CHECK(Parse("unix:///tmp/r.sock?db=4").db == 4);
  CHECK(Parse("unix:///tmp/a b.sock").seed.unix_path == "/tmp/a b.sock");  // used as written
}

TEST_CASE("rediss:// and rediss+cluster:// are the same URLs over TLS") {
  ServerUrl server = Parse("rediss://app:s3cret@cache.example.com/3");
  CHECK(server.tls);
  CHECK_FALSE(server.cluster);
  CHECK(server.seed.host == "cache.example.com");
  CHECK(server.seed.port == 6379);
  CHECK(server.user == "app");
  CHECK(server.password == "s3cret");
  CHECK(server.db == 3);

  server = Parse("rediss+cluster://:pw@10.1.2.3:6380");
  CHECK(server.tls);
  CHECK(server.cluster);
  CHECK(server.seed.Name() == "10.1.2.3:6380");
  CHECK(server.password == "pw");

  CHECK_FALSE(Parse("redis://h").tls);
  CHECK_FALSE(Parse("redis+cluster://h").tls);
  CHECK_FALSE(Parse("unix:///tmp/r.sock").tls);
}

TEST_CASE("a malformed Redis URL is InvalidArgument and quotes nothing of it") {
  for (const char* url : {
           "",
           "hunter2",
           "http://:hunter2@h",
           "REDIS://:hunter2@h",
           "redisss://:hunter2@h",
           "redis://",
           "redis://:hunter2@",
           "redis://:hunter2@host:99999",
           "redis://:hunter2@h:0",
           "redis://:hunter2@h:x",
           "redis://:hunter2@h:1/x",
           "redis://:hunter2@h/-1",
           "redis://:hunter2@h/1/2",
           "redis://:hunter2@h?db=1",
           "redis://:hunter2@h#frag",
           "redis://:hunter2@h/1#frag",
           "redis://:hunter2:%zz@h",
           "redis://:hunter2%4@h",
           "redis://:hunter2%@h",
           "redis://hunter2%zz:pw@h",
           "redis://:hunter2@bad host",
           "redis://:hunter2@[::1",
           "unix://hunter2",
           "unix:///hunter2?db=x",
           "unix:///hunter2?timeout=1",
           "unix:///hunter2#x",
       }) {
    CAPTURE(url);
    const absl::Status status = ParseServerUrl(url).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(absl::StrContains(status.message(), "hunter2"));
  }
}

TEST_CASE("IsServerUrl tells the schemes ParseServerUrl reads") {
  for (const char* url :
       {"redis://h", "redis+cluster://h", "rediss://h", "rediss+cluster://h", "unix:///s"}) {
    CAPTURE(url);
    CHECK(IsServerUrl(url));
  }
  for (const char* url : {"", "redis:", "redisss://h", "memory://", "momento+https://h/c"}) {
    CAPTURE(url);
    CHECK_FALSE(IsServerUrl(url));
  }
}

TEST_CASE("a cluster node's name gives its endpoint") {
  absl::StatusOr<Endpoint> node = ParseNodeName("10.0.0.1:7000");
  REQUIRE(node.ok());
  CHECK(node->host == "10.0.0.1");
  CHECK(node->port == 7000);
  CHECK(node->Name() == "10.0.0.1:7000");
  CHECK(ParseNodeName("[::1]:7001")->host == "::1");
  CHECK(ParseNodeName("::1:7002")->host == "::1");  // as CLUSTER SLOTS names it
  CHECK(absl::IsInternal(ParseNodeName("no-port").status()));
  CHECK(absl::IsInternal(ParseNodeName("h:x").status()));
}

}  // namespace
}  // namespace chunkcache::redis
