// The Redis backend over TLS (rediss://, rediss+cluster://), through NewRedisBackend,
// NewBackendFromUrl and a ChunkedCache, against TLS-only redis-servers with test certificates
// (fixtures/tls_certs.h): round trips, every refusal a user can act on, mutual TLS, a restart, and
// a TLS cluster with a redirect.

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/backend_url.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/testing/backend_conformance.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/redis_server.h"
#include "fixtures/tls_certs.h"
#include "format/keys.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::RedisCluster;
using testing::RedisServer;
using testing::RedisTls;
using testing::TestCertificates;

constexpr char kPassword[] = "hunter2-tls";

RedisTls ServerTls(const std::string& cert, const std::string& key, bool valid = true) {
  const TestCertificates& certs = TestCertificates::Get();
  return RedisTls{
      .cert_file = cert, .key_file = key, .ca_file = certs.ca, .valid_certificate = valid};
}

// A TLS-only server asking for kPassword, with the given certificate.
RedisServer::Options PasswordServer(RedisTls tls) {
  return {.extra_args = {"--requirepass", kPassword}, .tls = std::move(tls)};
}

RedisServer::Options GoodServer() {
  const TestCertificates& certs = TestCertificates::Get();
  return PasswordServer(ServerTls(certs.server_cert, certs.server_key));
}

// rediss://:PASSWORD@127.0.0.1:PORT`path` for `server`.
std::string UrlWithPassword(const RedisServer& server, const std::string& path = "") {
  return absl::StrCat("rediss://:", kPassword, "@127.0.0.1:", server.port(), path);
}

RedisBackendOptions TrustTestCa(std::string url) {
  return {.url = std::move(url),
          .connect_timeout = absl::Milliseconds(500),
          .command_timeout = absl::Seconds(2),
          .tls_ca_bundle_path = TestCertificates::Get().ca};
}

std::shared_ptr<RedisBackend> Connect(RedisBackendOptions options) {
  absl::StatusOr<std::shared_ptr<RedisBackend>> backend = NewRedisBackend(std::move(options));
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  return *std::move(backend);
}

// `status` is Unavailable (or DeadlineExceeded when `or_deadline`), names `cause` and never the
// password.
void RequireRefused(const absl::Status& status, const std::string& cause,
                    bool or_deadline = false) {
  INFO(status.ToString());
  CHECK((absl::IsUnavailable(status) || (or_deadline && absl::IsDeadlineExceeded(status))));
  CHECK(absl::StrContains(status.message(), cause));
  CHECK_FALSE(absl::StrContains(status.ToString(), kPassword));
}

std::string Catalogue(double megabytes, std::uint64_t seed = 1) {
  return testing::GenerateCatalogue({.megabytes = megabytes, .seed = seed});
}

// The document `key` holds, or the status of the Get that failed.
std::string Fetch(ChunkedCache& cache, const std::string& key) {
  absl::StatusOr<Bytes> got = cache.Get(key);
  return got.ok() ? std::string(**got) : got.status().ToString();
}

TEST_CASE("the 10 MB catalogue and the corpus round-trip over rediss://") {
  RedisServer server(GoodServer());
  auto backend = Connect(TrustTestCa(UrlWithPassword(server, "/2")));
  ChunkedCache cache(backend);
  std::map<std::string, std::string> documents = {{"catalogue", Catalogue(10)}};
  for (const auto& file : testing::CorpusFiles()) {
    documents[file.filename().string()] = testing::ReadFile(file);
  }
  for (const auto& [key, json] : documents) REQUIRE(cache.Put(key, json).ok());
  for (const auto& [key, json] : documents) CHECK(Fetch(cache, key) == json);
  // SELECT 2 was sent: the items are in database 2, none in 0.
  CHECK(std::stol(server.Cli({"-n", "2", "DBSIZE"})) >= 4);
  CHECK(server.Cli({"DBSIZE"}) == "0");
  // Pooled TLS connections are reused, not reopened per call.
  CHECK(backend->Stats().connections_opened <= 8);
  CHECK(backend->Stats().errors == 0);
}

TEST_CASE("NewBackendFromUrl takes rediss:// with ca_bundle_path") {
  RedisServer server(GoodServer());
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewBackendFromUrl(UrlWithPassword(server), {.ca_bundle_path = TestCertificates::Get().ca});
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  REQUIRE((*backend)->MultiSet({{"k", "v"}}, absl::Seconds(5)).ok());
  const std::string_view key = "k";
  auto got = (*backend)->MultiGet({&key, 1});
  REQUIRE(got.ok());
  REQUIRE((*got)[0].has_value());
  CHECK(*(*got)[0] == "v");
}

TEST_CASE("over TLS, a server that cannot be trusted is refused with its cause") {
  const TestCertificates& certs = TestCertificates::Get();

  SECTION("a CA the server's certificate does not chain to: unknown issuer") {
    RedisServer server(GoodServer());
    RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
    options.tls_ca_bundle_path = certs.other_ca;
    RequireRefused(NewRedisBackend(options).status(), "unknown issuer");
  }
  SECTION("a certificate for another name, an expired one: each cause named") {
    for (const auto& [cert, key, cause] :
         {std::tuple(certs.mismatch_cert, certs.mismatch_key, "host name mismatch"),
          std::tuple(certs.expired_cert, certs.expired_key, "certificate expired")}) {
      RedisServer server(PasswordServer(ServerTls(cert, key, /*valid=*/false)));
      RequireRefused(NewRedisBackend(TrustTestCa(UrlWithPassword(server))).status(), cause);
    }
  }
  SECTION("tls_server_name is the name verified") {
    RedisServer server(GoodServer());
    RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
    options.tls_server_name = "localhost";
    CHECK(NewRedisBackend(options).ok());
    options.tls_server_name = "wrong.example";
    RequireRefused(NewRedisBackend(options).status(), "host name mismatch");
  }
  SECTION("a plain-TCP server") {
    RedisServer server({.extra_args = {"--requirepass", kPassword}});
    RequireRefused(NewRedisBackend(TrustTestCa(UrlWithPassword(server))).status(), "plain-TCP port",
                   /*or_deadline=*/true);
  }
  SECTION("a CA bundle or client certificate that cannot be loaded: InvalidArgument") {
    RedisBackendOptions options =
        TrustTestCa(absl::StrCat("rediss://:", kPassword, "@127.0.0.1:1"));
    options.tls_ca_bundle_path = certs.dir + "/missing.pem";
    CHECK(absl::IsInvalidArgument(NewRedisBackend(options).status()));
    options = TrustTestCa(options.url);
    options.tls_client_cert_path = certs.client_cert;
    options.tls_client_key_path = certs.other_client_key;  // not the certificate's key
    const absl::Status status = NewRedisBackend(options).status();
    CHECK(absl::IsInvalidArgument(status));
    CHECK_FALSE(absl::StrContains(status.ToString(), kPassword));
  }
}

TEST_CASE("over TLS, a reply larger than the values asked for is refused, not buffered") {
  RedisServer server(GoodServer());
  server.Cli({"SET", "big", std::string(64 << 10, 'x')});
  RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
  options.max_item_size = 1024;
  auto backend = Connect(options);
  const std::string_view key = "big";
  const absl::Status status = backend->MultiGet({&key, 1}).status();
  INFO(status.ToString());
  CHECK(absl::IsResourceExhausted(status));
  // The connection that saw it is dropped; the next call works on a new one.
  REQUIRE(backend->MultiSet({{"small", "v"}}, absl::Seconds(5)).ok());
  CHECK(backend->Stats().connection_failures == 1);
}

// Over TLS too, MultiGetEach hands each item over as its reply is parsed: MultiGet's answer,
// large items included; a sink that stops early leaves no reply to be read by the next call; an
// item larger than max_item_size ends the call after the items before it.
TEST_CASE("over TLS, MultiGetEach hands over MultiGet's answer and stops cleanly") {
  RedisServer server(GoodServer());
  RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
  options.pool_size = 1;  // every call takes the same pooled connection, if it is fit for use
  auto backend = Connect(options);
  std::vector<std::string> names, values;
  for (int i = 0; i < 6; ++i) {
    names.push_back("{tls}" + std::to_string(i));
    values.push_back(std::string(std::size_t{1} << 20, static_cast<char>('a' + i)));
    const KeyValue item{names.back(), values.back()};
    REQUIRE(backend->MultiSet({&item, 1}, absl::Minutes(1)).ok());
  }
  names.insert(names.begin() + 2, "{tls}absent");
  const std::vector<std::string_view> keys(names.begin(), names.end());
  absl::StatusOr<std::vector<std::optional<std::string>>> expected = backend->MultiGet(keys);
  REQUIRE(expected.ok());
  // Each index once, in order; `stop_after`: the sink stops there.
  const auto get_each = [&](std::size_t stop_after) {
    std::vector<std::optional<std::string>> got;
    const absl::Status status =
        backend->MultiGetEach(keys, [&](std::size_t i, std::optional<ItemView> item) {
          CHECK(i == got.size());
          got.push_back(item.has_value() ? std::optional<std::string>(item->value) : std::nullopt);
          return i == stop_after ? absl::CancelledError("enough") : absl::OkStatus();
        });
    return std::make_pair(status, got);
  };
  const auto [status, got] = get_each(keys.size());
  INFO(status.ToString());
  REQUIRE(status.ok());
  CHECK(got == *expected);

  const auto [stopped, first] = get_each(1);
  CHECK(absl::IsCancelled(stopped));
  CHECK(first.size() == 2);
  const std::string_view later[] = {keys[5], keys[6]};
  CHECK(*backend->MultiGet(later) == std::vector<std::optional<std::string>>{values[4], values[5]});

  // A reply over max_item_size, after the first item (stored by a backend allowing larger ones).
  RedisBackendOptions larger = options;
  larger.max_item_size = std::size_t{2} << 20;
  const std::string big_value((std::size_t{1} << 20) + 4096, 'x');  // outlives the view below
  const KeyValue big{"{tls}1", big_value};
  REQUIRE(Connect(larger)->MultiSet({&big, 1}, absl::Minutes(1)).ok());
  const auto [too_big, before] = get_each(keys.size());
  INFO(too_big.ToString());
  CHECK(absl::IsResourceExhausted(too_big));
  CHECK(before == std::vector<std::optional<std::string>>{values[0]});
  CHECK(*backend->MultiGet(later) == std::vector<std::optional<std::string>>{values[4], values[5]});
  CHECK(backend->Stats().connection_failures == 1);
}

TEST_CASE("over TLS, a command slower than the timeout is DeadlineExceeded within the timeout") {
  RedisServer server(GoodServer());
  RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
  options.command_timeout = absl::Milliseconds(300);
  auto backend = Connect(options);
  const std::string_view key = "k";
  absl::Status status;
  absl::Duration took;
  {
    std::jthread sleeper([&] { server.Cli({"DEBUG", "SLEEP", "2"}); });
    absl::SleepFor(absl::Milliseconds(200));  // DEBUG SLEEP has started
    const absl::Time start = absl::Now();
    status = backend->MultiGet({&key, 1}).status();
    took = absl::Now() - start;
  }
  INFO(status.ToString());
  CHECK(absl::IsDeadlineExceeded(status));
  CHECK(took < absl::Milliseconds(1200));    // the timeout, not the server's sleep
  CHECK(backend->MultiGet({&key, 1}).ok());  // on a new connection
}

TEST_CASE("threads share one rediss:// backend, its pool and its TLS sessions", "[concurrency]") {
  RedisServer server(GoodServer());
  RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
  options.pool_size = 2;
  auto backend = Connect(options);
  ChunkedCache cache(backend, {.chunk_size = 8 << 10});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      const std::string key = "thread" + std::to_string(t);
      const std::string json = Catalogue(0.05, static_cast<std::uint64_t>(t));
      for (int i = 0; i < 10; ++i) {
        absl::StatusOr<Bytes> got;
        if (!cache.Put(key, json).ok() || !(got = cache.Get(key)).ok() || **got != json) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(failures == 0);
  CHECK(backend->Stats().errors == 0);
}

TEST_CASE("mutual TLS: the client certificate is presented, and refused when missing") {
  const TestCertificates& certs = TestCertificates::Get();
  RedisTls tls = ServerTls(certs.server_cert, certs.server_key);
  tls.auth_clients = true;
  tls.client_cert_file = certs.client_cert;
  tls.client_key_file = certs.client_key;
  RedisServer server(PasswordServer(tls));

  RedisBackendOptions options = TrustTestCa(UrlWithPassword(server));
  RequireRefused(NewRedisBackend(options).status(), "refused the client certificate");
  options.tls_client_cert_path = certs.other_client_cert;
  options.tls_client_key_path = certs.other_client_key;
  RequireRefused(NewRedisBackend(options).status(), "refused the client certificate");

  options.tls_client_cert_path = certs.client_cert;
  options.tls_client_key_path = certs.client_key;
  auto backend = Connect(options);
  ChunkedCache cache(backend);
  const std::string json = Catalogue(0.3);
  REQUIRE(cache.Put("k", json).ok());
  CHECK(Fetch(cache, "k") == json);
}

TEST_CASE("a TLS server restarted mid-load: the backend reconnects") {
  RedisServer server(GoodServer());
  auto backend = Connect(TrustTestCa(UrlWithPassword(server)));
  ChunkedCache cache(backend);
  const std::string json = Catalogue(0.5);
  REQUIRE(cache.Put("k", json).ok());
  server.Kill();
  // Down: the origin serves; the backend's error names the node, never the password.
  auto loaded = cache.GetOrLoad("k", [&] { return absl::StatusOr<std::string>(json); });
  CHECK((loaded.ok() && **loaded == json));
  const std::string_view key = "k";
  RequireRefused(backend->MultiGet({&key, 1}).status(), "127.0.0.1");
  server.Restart();  // empty: no persistence
  CHECK(absl::IsNotFound(cache.Get("k").status()));
  REQUIRE(cache.Put("k", json).ok());
  CHECK(Fetch(cache, "k") == json);
  CHECK(backend->Stats().connections_opened >= 2);
}

TEST_CASE("a TLS cluster round-trips and follows a redirect to a TLS port") {
  const TestCertificates& certs = TestCertificates::Get();
  RedisCluster cluster({.tls = ServerTls(certs.server_cert, certs.server_key)});
  const std::string seed = cluster.urls()[0];
  REQUIRE(absl::StartsWith(seed, "rediss://"));
  auto backend = Connect(TrustTestCa("rediss+cluster://" + seed.substr(9)));
  ChunkedCache cache(backend, {.chunk_size = 64 << 10});
  std::vector<std::string> documents;
  for (int i = 0; i < 6; ++i) {
    documents.push_back(Catalogue(0.3, i));
    REQUIRE(cache.Put("doc" + std::to_string(i), documents[i]).ok());
  }
  for (int i = 0; i < 6; ++i) CHECK(Fetch(cache, "doc" + std::to_string(i)) == documents[i]);
  CHECK(backend->Stats().node_pools >= 2);

  const internal::StoredKeys keys(cache.options().key_prefix, "doc0");
  const int slot = cluster.SlotOf(keys.manifest());
  const int from = cluster.NodeOwning(slot);
  cluster.MigrateSlot(slot, (from + 1) % 3);
  absl::StatusOr<Bytes> got = cache.Get("doc0");
  REQUIRE(got.ok());
  CHECK(**got == documents[0]);
  CHECK(backend->Stats().redirects >= 1);
  CHECK(backend->Stats().errors == 0);

  // Nodes named by IP address in CLUSTER SLOTS are verified with tls_server_name when set.
  RedisBackendOptions named = TrustTestCa("rediss+cluster://" + seed.substr(9));
  named.tls_server_name = "localhost";
  ChunkedCache named_cache(Connect(named), {.chunk_size = 64 << 10});
  for (int i = 0; i < 6; ++i) {
    CHECK(Fetch(named_cache, "doc" + std::to_string(i)) == documents[i]);
  }
  named.tls_server_name = "wrong.example";
  RequireRefused(NewRedisBackend(named).status(), "host name mismatch");
}

// The Backend contract, checked by the conformance kit, over TLS with a password.
TEST_CASE("the Redis backend over TLS keeps the Backend contract", "[conformance][concurrency]") {
  RedisServer server(GoodServer());
  const std::string url = UrlWithPassword(server);
  const absl::Status conformance = testing::CheckBackendConformance(
      [&] { return NewRedisBackend(TrustTestCa(url)).value_or(nullptr); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 1});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache
