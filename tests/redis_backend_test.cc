#include "chunkcache/redis_backend.h"

#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/testing/backend_conformance.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/hostile_redis.h"
#include "fixtures/redis_server.h"
#include "format/keys.h"
#include "test_util.h"

namespace chunkcache {

// While positive, lookups of "localhost" stall this many milliseconds: this binary's getaddrinfo
// (below) stands in front of libc's, so a hung resolver is simulated without any DNS traffic.
std::atomic<int> lookup_stall_ms{0};

namespace {

using testing::RedisCluster;
using testing::RedisServer;

std::shared_ptr<RedisBackend> Connect(RedisBackendOptions options) {
  absl::StatusOr<std::shared_ptr<RedisBackend>> backend = NewRedisBackend(std::move(options));
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  return *std::move(backend);
}

std::string Catalogue(double megabytes, std::uint64_t seed = 1) {
  return testing::GenerateCatalogue({.megabytes = megabytes, .seed = seed});
}

// Every key the server holds.
std::vector<std::string> Keys(const RedisServer& server) {
  const std::string out = server.Cli({"--scan"});
  std::vector<std::string> keys = absl::StrSplit(out, '\n', absl::SkipEmpty());
  return keys;
}

TEST_CASE("the 10 MB catalogue and the corpus round-trip through Redis") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});
  ChunkedCache cache(backend);
  std::vector<std::pair<std::string, std::string>> documents = {{"catalogue", Catalogue(10)}};
  for (const auto& file : testing::CorpusFiles()) {
    documents.emplace_back(file.filename().string(), testing::ReadFile(file));
  }
  for (const auto& [key, json] : documents) REQUIRE(cache.Put(key, json).ok());
  for (const auto& [key, json] : documents) {
    CAPTURE(key);
    absl::StatusOr<Bytes> got = cache.Get(key);
    REQUIRE(got.ok());
    CHECK(**got == json);
  }

  // What is on the server: bounded items, every one with a TTL, one slot per logical key.
  const std::vector<std::string> keys = Keys(server);
  CHECK(keys.size() >= 4);  // the catalogue alone is a manifest and three chunks
  for (const std::string& key : keys) {
    CAPTURE(key);
    CHECK(std::stoul(server.Cli({"STRLEN", key})) <= backend->max_item_size());
    const long ttl_ms = std::stol(server.Cli({"PTTL", key}));
    CHECK(ttl_ms > 0);
    const std::string tag = key.substr(key.find('{'), key.find('}') - key.find('{') + 1);
    CHECK(RedisClusterSlot(key) == RedisClusterSlot(tag));
  }
}

TEST_CASE("a MultiGet of many chunk keys is one round trip") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});
  std::vector<std::string> keys, stored;
  std::vector<KeyValue> items;
  for (int i = 0; i < 50; ++i) keys.push_back("{k}:" + std::to_string(i));
  for (const std::string& key : keys) stored.push_back("value of " + key);
  for (int i = 0; i < 50; ++i) items.push_back({keys[i], stored[i]});
  REQUIRE(backend->MultiSet(items, absl::Minutes(1)).ok());
  std::vector<std::string_view> views(keys.begin(), keys.end());
  views.push_back("{k}:absent");
  const std::uint64_t before = backend->Stats().round_trips;
  auto values = backend->MultiGet(views);
  REQUIRE(values.ok());
  CHECK(backend->Stats().round_trips - before == 1);
  for (std::size_t i = 0; i < keys.size(); ++i) CHECK((*values)[i] == "value of " + keys[i]);
  CHECK(!values->back().has_value());
}

TEST_CASE("SetIfAbsent stores only when the key is absent, with a TTL") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});
  CHECK(*backend->SetIfAbsent("lease", "a", absl::Seconds(30)) == true);
  CHECK(*backend->SetIfAbsent("lease", "b", absl::Seconds(30)) == false);
  const std::string_view key = "lease";
  CHECK((*backend->MultiGet({&key, 1}))[0] == "a");
  const long ttl = std::stol(server.Cli({"PTTL", "lease"}));
  CHECK((ttl > 0 && ttl <= 30000));
}

TEST_CASE("bad items and TTLs are InvalidArgument and store nothing") {
  RedisServer server;
  auto backend = Connect({.url = server.url(), .max_item_size = 1000});
  const std::string big(1001, 'x');
  const KeyValue items[] = {{"a", "small"}, {"b", big}};
  CHECK(absl::IsInvalidArgument(backend->MultiSet(items, absl::Minutes(1))));
  CHECK(absl::IsInvalidArgument(backend->MultiSet({items, 1}, absl::ZeroDuration())));
  CHECK(Keys(server).empty());
}

TEST_CASE("URLs: database, unix socket and bad URLs") {
  const testing::TempDir dir;
  const std::string socket = (dir.path() / "redis.sock").string();
  RedisServer server({.unix_socket = socket});
  auto db0 = Connect({.url = server.url()});
  auto db1 = Connect({.url = server.url() + "/1"});
  const KeyValue item{"k", "in db 1"};
  REQUIRE(db1->MultiSet({&item, 1}, absl::Minutes(1)).ok());
  const std::string_view key = "k";
  CHECK(!(*db0->MultiGet({&key, 1}))[0].has_value());
  auto over_unix = Connect({.url = "unix://" + socket + "?db=1"});
  CHECK((*over_unix->MultiGet({&key, 1}))[0] == "in db 1");

  for (const std::string bad : {"http://x", "redis://", "redis://host:99999", "redis://h:1/x",
                                "unix://relative", "redis://a:%zz@h"}) {
    CAPTURE(bad);
    CHECK(absl::IsInvalidArgument(NewRedisBackend({.url = bad}).status()));
  }
  CHECK(absl::IsUnavailable(NewRedisBackend({.url = "redis://127.0.0.1:1"}).status()));
}

TEST_CASE("passwords and ACL users: right credentials work, wrong ones are PermissionDenied") {
  RedisServer server({.extra_args = {"--requirepass", "s3cret"}});
  const std::string host_port = "127.0.0.1:" + std::to_string(server.port());
  CHECK(NewRedisBackend({.url = "redis://:s3cret@" + host_port}).ok());
  CHECK(absl::IsPermissionDenied(NewRedisBackend({.url = "redis://:wrong@" + host_port}).status()));
  CHECK(absl::IsPermissionDenied(NewRedisBackend({.url = "redis://" + host_port}).status()));

  server.Cli({"ACL", "SETUSER", "alice", "on", ">p%ss", "~*", "+@all"});
  CHECK(NewRedisBackend({.url = "redis://alice:p%25ss@" + host_port}).ok());
  CHECK(absl::IsPermissionDenied(
      NewRedisBackend({.url = "redis://alice:nope@" + host_port}).status()));
}

TEST_CASE("a killed server degrades to the loader and the backend reconnects after a restart") {
  RedisServer server;
  auto backend = Connect({.url = server.url(), .command_timeout = absl::Milliseconds(500)});
  ChunkedCache cache(backend);
  const std::string json = Catalogue(0.5);
  REQUIRE(cache.Put("k", json).ok());
  REQUIRE(cache.Get("k").ok());

  server.Kill();
  const std::string_view key = "k";
  CHECK(absl::IsUnavailable(backend->MultiGet({&key, 1}).status()));
  int loads = 0;
  auto got = cache.GetOrLoad("k", [&] {
    ++loads;
    return absl::StatusOr<std::string>(json);
  });
  REQUIRE(got.ok());  // the caller is served by the origin
  CHECK(**got == json);
  CHECK(loads == 1);
  CHECK(cache.Stats().fallbacks == 1);

  server.Restart();  // empty: no persistence
  CHECK(absl::IsNotFound(cache.Get("k").status()));
  REQUIRE(cache.Put("k", json).ok());
  CHECK(**cache.Get("k") == json);
  CHECK(backend->Stats().connections_opened >= 2);
}

TEST_CASE("a command slower than the timeout is DeadlineExceeded within the timeout") {
  RedisServer server;
  auto backend = Connect({.url = server.url(), .command_timeout = absl::Milliseconds(300)});
  std::thread sleeper([&] { server.Cli({"DEBUG", "SLEEP", "2"}); });
  absl::SleepFor(absl::Milliseconds(200));  // let DEBUG SLEEP start
  const absl::Time start = absl::Now();
  const std::string_view key = "k";
  const absl::Status status = backend->MultiGet({&key, 1}).status();
  const absl::Duration took = absl::Now() - start;
  sleeper.join();
  CHECK(absl::IsDeadlineExceeded(status));
  CHECK(took < absl::Milliseconds(1200));  // bounded by the timeout, not by the server's sleep
  // The timed-out connection was dropped; the next call works on a fresh one.
  CHECK(backend->MultiGet({&key, 1}).ok());
}

TEST_CASE("entries evicted under maxmemory read as misses, never as wrong bytes") {
  RedisServer server({.extra_args = {"--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"}});
  auto backend = Connect({.url = server.url()});
  ChunkedCache cache(backend, {.chunk_size = 64 << 10});
  std::vector<std::string> documents;
  for (int i = 0; i < 12; ++i) documents.push_back(Catalogue(0.6, i));
  int stored = 0;
  for (int i = 0; i < 12; ++i) {
    const absl::Status s = cache.Put("doc" + std::to_string(i), documents[i]);
    if (s.ok())
      ++stored;
    else
      CHECK(absl::IsResourceExhausted(s));  // OOM while the server evicts
  }
  int hits = 0, misses = 0;
  for (int i = 0; i < 12; ++i) {
    absl::StatusOr<Bytes> got = cache.Get("doc" + std::to_string(i));
    if (got.ok()) {
      CHECK(**got == documents[i]);
      ++hits;
    } else {
      CHECK(absl::IsNotFound(got.status()));
      ++misses;
    }
  }
  CHECK(stored > 0);
  CHECK(misses > 0);  // 12 x ~190 KB compressed cannot fit in 3 MB
  INFO("hits " << hits << ", misses " << misses << ", corrupt " << cache.Stats().corrupt_reads);
}

// A fake server on a loopback port for one connection: answers PING, then writes `reply` to the
// next request, and then, with `endless`, streams junk until the test ends.
class FakeRedis {
 public:
  explicit FakeRedis(std::string reply, bool endless = false) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    socklen_t length = sizeof(address);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    REQUIRE(listen(listener_, 4) == 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, reply = std::move(reply), endless] {
      const int peer = accept(listener_, nullptr, nullptr);
      char buffer[4096];
      if (read(peer, buffer, sizeof(buffer)) > 0) (void)!write(peer, "+PONG\r\n", 7);
      if (read(peer, buffer, sizeof(buffer)) > 0) {
        (void)!write(peer, reply.data(), reply.size());
        const std::string junk(64 << 10, 'x');
        while (endless && !stop_ && write(peer, junk.data(), junk.size()) > 0) {
        }
        while (!stop_) absl::SleepFor(absl::Milliseconds(5));  // no EOF before the test is done
      }
      close(peer);
    });
  }
  ~FakeRedis() {
    stop_ = true;
    thread_.join();
    close(listener_);
  }

  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_CASE("a reply larger than the values asked for is refused, not buffered") {
  FakeRedis fake("*1\r\n$1000000000\r\n", /*endless=*/true);
  auto backend =
      Connect({.url = fake.url(), .command_timeout = absl::Seconds(5), .max_item_size = 1 << 20});
  const std::string_view key = "k";
  CHECK(absl::IsResourceExhausted(backend->MultiGet({&key, 1}).status()));
}

// hiredis 0.14 callocs 8 bytes per element an array header claims, before any element arrives
// (found by fuzz_redis_replies: "*666666663" → a 5.3 GB calloc). Without the guard the claim
// below is allocated and the call waits for elements that never come: DeadlineExceeded.
TEST_CASE("an array header claiming more elements than keys asked is refused before allocating") {
  const std::string_view keys[] = {"{k}a", "{k}b"};
  for (const std::string reply :
       {"*666666663\r\n", "*3\r\n", "*2\r\n*100000\r\n", "*2\r\n$-1\r\n*3\r\n"}) {
    CAPTURE(reply);
    FakeRedis fake(reply);
    auto backend =
        Connect({.url = fake.url(), .command_timeout = absl::Seconds(3), .max_item_size = 1 << 20});
    const absl::Status status = backend->MultiGet(keys).status();
    CHECK(absl::IsResourceExhausted(status));
    CHECK_THAT(std::string(status.message()), Catch::Contains("MGET claims an array of"));
  }
  // A reply of exactly the keys asked is read as usual.
  FakeRedis fake("*2\r\n$1\r\na\r\n$-1\r\n");
  auto backend = Connect({.url = fake.url(), .command_timeout = absl::Seconds(3)});
  absl::StatusOr<std::vector<std::optional<std::string>>> values = backend->MultiGet(keys);
  REQUIRE(values.ok());
  CHECK((*values)[0] == "a");
  CHECK_FALSE((*values)[1].has_value());
}

TEST_CASE("many threads share one Redis backend", "[concurrency]") {
  RedisServer server;
  auto backend = Connect({.url = server.url(), .pool_size = 4});
  ChunkedCache cache(backend, {.chunk_size = 16 << 10});
  const std::string a = Catalogue(0.2, 1), b = Catalogue(0.3, 2);
  REQUIRE(cache.Put("shared", a).ok());
  std::atomic<int> wrong{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        if (t < 2) {
          if (!cache.Put("shared", (i + t) % 2 ? a : b).ok()) ++errors;
        } else {
          absl::StatusOr<Bytes> got = cache.Get("shared");
          if (got.ok() && **got != a && **got != b) ++wrong;
          if (!got.ok() && !absl::IsNotFound(got.status())) ++errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(errors == 0);
  CHECK(cache.Stats().corrupt_reads == 0);
}

TEST_CASE("a cluster spreads keys over its nodes and a Get stays one MGET on one node") {
  RedisCluster cluster;
  auto backend = Connect({.url = cluster.urls()[0], .cluster = true});
  ChunkedCache cache(backend, {.chunk_size = 64 << 10});
  std::vector<std::string> documents;
  for (int i = 0; i < 12; ++i) {
    documents.push_back(Catalogue(0.4, i));
    REQUIRE(cache.Put("doc" + std::to_string(i), documents[i]).ok());
  }
  std::set<int> owners;
  for (int i = 0; i < 12; ++i) {
    const internal::StoredKeys keys(cache.options().key_prefix, "doc" + std::to_string(i));
    owners.insert(cluster.NodeOwning(cluster.SlotOf(keys.manifest())));
  }
  CHECK(owners.size() >= 2);

  for (int i = 0; i < 12; ++i) {
    const RedisBackendStats before = backend->Stats();
    absl::StatusOr<Bytes> got = cache.Get("doc" + std::to_string(i));
    REQUIRE(got.ok());
    CHECK(**got == documents[i]);
    const RedisBackendStats after = backend->Stats();
    CHECK(after.round_trips - before.round_trips == 2);  // the manifest, then the chunks
  }
}

TEST_CASE("a slot migrated during the test is followed through MOVED") {
  RedisCluster cluster;
  auto backend = Connect({.url = cluster.urls()[0], .cluster = true});
  ChunkedCache cache(backend, {.chunk_size = 64 << 10});
  const std::string json = Catalogue(0.4);
  REQUIRE(cache.Put("moving", json).ok());
  const internal::StoredKeys keys(cache.options().key_prefix, "moving");
  const int slot = cluster.SlotOf(keys.manifest());
  const int from = cluster.NodeOwning(slot);
  cluster.MigrateSlot(slot, (from + 1) % 3);
  CHECK(cluster.NodeOwning(slot) == (from + 1) % 3);

  absl::StatusOr<Bytes> got = cache.Get("moving");
  REQUIRE(got.ok());
  CHECK(**got == json);
  CHECK(backend->Stats().redirects >= 1);
  CHECK(backend->Stats().slot_map_refreshes >= 2);
  REQUIRE(cache.Put("moving", Catalogue(0.3, 9)).ok());
  CHECK(**cache.Get("moving") == Catalogue(0.3, 9));
}

TEST_CASE("a backend not told about the cluster switches to cluster mode on MOVED") {
  RedisCluster cluster;
  auto backend = Connect({.url = cluster.urls()[0]});
  ChunkedCache cache(backend);
  for (int i = 0; i < 6; ++i) {
    const std::string json = "{\"i\":" + std::to_string(i) + "}";
    REQUIRE(cache.Put("key" + std::to_string(i), json).ok());
    CHECK(**cache.Get("key" + std::to_string(i)) == json);
  }
  CHECK(backend->Stats().slot_map_refreshes >= 1);
}

}  // namespace
}  // namespace chunkcache

namespace chunkcache {
namespace {

TEST_CASE("a server out of memory is ResourceExhausted") {
  testing::RedisServer server(
      {.extra_args = {"--maxmemory", "1mb", "--maxmemory-policy", "noeviction"}});
  auto backend = Connect({.url = server.url()});
  const std::string value(512 << 10, 'v');
  absl::Status status;
  for (int i = 0; i < 8 && status.ok(); ++i) {
    const std::string key = "k" + std::to_string(i);
    const KeyValue item{key, value};
    status = backend->MultiSet({&item, 1}, absl::Minutes(1));
  }
  CHECK(absl::IsResourceExhausted(status));
}

TEST_CASE("an ASK redirect during a slot migration is followed") {
  testing::RedisCluster cluster;
  auto backend = Connect({.url = cluster.urls()[0], .cluster = true});
  const std::string key = "{ask}new-key";
  const int slot = testing::RedisCluster::SlotOf(key);
  const int from = cluster.NodeOwning(slot), to = (from + 1) % 3;
  const std::string to_id = cluster.node(to).Cli({"CLUSTER", "MYID"});
  const std::string from_id = cluster.node(from).Cli({"CLUSTER", "MYID"});
  cluster.node(to).Cli({"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", from_id});
  cluster.node(from).Cli({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", to_id});
  // The key is absent from the source, so the source answers ASK and the target must be asked.
  const KeyValue item{key, "via ASK"};
  REQUIRE(backend->MultiSet({&item, 1}, absl::Minutes(1)).ok());
  CHECK(backend->Stats().redirects >= 1);
  const std::string_view view = key;
  CHECK((*backend->MultiGet({&view, 1}))[0] == "via ASK");
  CHECK(cluster.node(to).Cli({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}) == "1");
}

// A key of each cluster node's slots, by node index.
std::vector<std::string> KeyOnEachNode(const RedisCluster& cluster) {
  std::vector<std::string> keys(RedisCluster::kMasters);
  for (int n = 0; std::any_of(keys.begin(), keys.end(), [](const auto& k) { return k.empty(); });
       ++n) {
    const std::string key = "key" + std::to_string(n);
    std::string& slot = keys[cluster.NodeOwning(RedisCluster::SlotOf(key))];
    if (slot.empty()) slot = key;
  }
  return keys;
}

TEST_CASE("a plain redis:// backend on a cluster node serves the call that finds the cluster") {
  RedisCluster cluster;
  const std::vector<std::string> keys = KeyOnEachNode(cluster);
  // Each call below is the first of a new backend that is not told it talks to a cluster.
  const RedisBackendOptions plain{.url = cluster.urls()[0]};
  {
    auto backend = Connect(plain);
    absl::StatusOr<bool> stored = backend->SetIfAbsent(keys[2], "mine", absl::Minutes(1));
    INFO("SetIfAbsent: " << stored.status().ToString());
    REQUIRE(stored.ok());
    CHECK(*stored);
    CHECK(cluster.node(2).Cli({"GET", keys[2]}) == "mine");
  }
  {
    auto backend = Connect(plain);
    const KeyValue item{keys[1], "v1"};
    const absl::Status status = backend->MultiSet({&item, 1}, absl::Minutes(1));
    INFO("MultiSet: " << status.ToString());
    CHECK(status.ok());
    CHECK(cluster.node(1).Cli({"GET", keys[1]}) == "v1");
  }
  {
    // Keys of three slots in one MGET: the node answers CROSSSLOT, not MOVED.
    for (int i = 0; i < 3; ++i) cluster.node(i).Cli({"SET", keys[i], "v" + std::to_string(i)});
    auto backend = Connect(plain);
    const std::vector<std::string_view> views = {keys[2], keys[0], keys[1], "absent"};
    absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet(views);
    INFO("MultiGet: " << got.status().ToString());
    REQUIRE(got.ok());
    CHECK(*got == std::vector<std::optional<std::string>>{"v2", "v0", "v1", std::nullopt});
  }
  {
    auto backend = Connect(plain);
    const std::vector<std::string_view> views = {keys[0], keys[1], keys[2]};
    const absl::Status status = backend->Delete(views);
    INFO("Delete: " << status.ToString());
    CHECK(status.ok());
    for (int i = 0; i < 3; ++i) CHECK(cluster.node(i).Cli({"EXISTS", keys[i]}) == "0");
  }
  {
    auto backend = Connect(plain);
    ChunkedCache cache(backend, {.chunk_size = 64 << 10});
    std::string name;  // a document whose entry is on another node than the seed
    for (int n = 0; name.empty(); ++n) {
      const std::string candidate = "doc" + std::to_string(n);
      const internal::StoredKeys stored(cache.options().key_prefix, candidate);
      if (cluster.NodeOwning(RedisCluster::SlotOf(stored.manifest())) != 0) name = candidate;
    }
    const absl::Status miss = cache.Get(name).status();
    INFO("Get: " << miss.ToString());
    CHECK(absl::IsNotFound(miss));
    const std::string json = Catalogue(0.3);
    const absl::Status put = cache.Put(name, json);
    INFO("Put: " << put.ToString());
    REQUIRE(put.ok());
    CHECK(**cache.Get(name) == json);
  }
}

TEST_CASE("an IP literal and localhost both connect") {
  RedisServer server;
  const std::string port = std::to_string(server.port());
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    CAPTURE(host);
    auto backend = Connect({.url = "redis://" + host + ":" + port});
    REQUIRE(backend->MultiSet({{"k", host}}, absl::Minutes(1)).ok());
    const std::string_view key = "k";
    CHECK((*backend->MultiGet({&key, 1}))[0] == host);
  }
}

TEST_CASE("a stalled host name lookup is bounded by connect_timeout") {
  RedisServer server;
  const std::string url = "redis://localhost:" + std::to_string(server.port());
  lookup_stall_ms = 1500;
  const absl::Time start = absl::Now();
  const absl::Status status =
      NewRedisBackend({.url = url, .connect_timeout = absl::Milliseconds(200)}).status();
  const absl::Duration took = absl::Now() - start;
  lookup_stall_ms = 0;
  INFO(status.ToString() << " after " << took);
  CHECK(absl::IsDeadlineExceeded(status));
  CHECK(took < absl::Milliseconds(800));
  // An IP literal needs no lookup, and a lookup that answers connects as before.
  lookup_stall_ms = 1500;
  CHECK(NewRedisBackend({.url = server.url(), .connect_timeout = absl::Milliseconds(200)}).ok());
  lookup_stall_ms = 0;
  CHECK(NewRedisBackend({.url = url, .connect_timeout = absl::Milliseconds(200)}).ok());
}

TEST_CASE("TimeToLive reports each key's remaining lifetime") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});
  REQUIRE(backend->MultiSet({{"a", "1"}}, absl::Seconds(100)).ok());
  REQUIRE(backend->MultiSet({{"b", "2"}}, absl::InfiniteDuration()).ok());
  absl::StatusOr<std::vector<std::optional<absl::Duration>>> ttls =
      backend->TimeToLive({"a", "b", "absent"});
  REQUIRE(ttls.ok());
  REQUIRE((*ttls)[0].has_value());
  CHECK(*(*ttls)[0] > absl::Seconds(90));
  CHECK(*(*ttls)[0] <= absl::Seconds(100));
  CHECK((*ttls)[1] == absl::InfiniteDuration());
  CHECK_FALSE((*ttls)[2].has_value());
}

TEST_CASE("a server that dies under a large write is an error, not a SIGPIPE") {
  std::signal(SIGPIPE, SIG_DFL);  // what a process gets by default: SIGPIPE would kill it
  RedisServer server;
  auto backend = Connect({.url = server.url(), .max_item_size = 8 << 20});
  REQUIRE(backend->MultiSet({{"warm", "x"}}, absl::Seconds(60)).ok());  // a pooled connection
  server.Kill();
  const std::string big(8 << 20, 'x');
  for (int i = 0; i < 3; ++i) {
    const absl::Status status = backend->MultiSet({{"big", big}}, absl::Seconds(60));
    CHECK(status.code() == absl::StatusCode::kUnavailable);
  }
}

// ---- Broken and hostile peers -------------------------------------------------------------------

using std::chrono::milliseconds;
using testing::HostileRedisOptions;
using testing::HostileRedisServer;
using testing::RedisRequest;
using testing::RedisResponse;
using testing::RespArray;
using testing::RespBulk;
using testing::RespError;

// The value MultiGet returns for one key: the value, "(absent)" or the error's code name.
std::string GetOne(RedisBackend& backend, std::string_view key) {
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend.MultiGet({&key, 1});
  if (!got.ok()) return absl::StatusCodeToString(got.status().code());
  return (*got)[0].value_or("(absent)");
}

TEST_CASE("a peer's unasked reply never shifts later replies onto another key") {
  HostileRedisServer server;
  server.Set("a", "value of a");
  server.Set("b", "value of b");
  // pool_size 1: every call takes the one pooled connection, if it is still fit for use.
  auto backend =
      Connect({.url = server.url(), .command_timeout = absl::Milliseconds(200), .pool_size = 1});
  SECTION("the unasked reply comes in the same write as the asked one") {
    server.Inject(
        "MGET",
        [&](const RedisRequest& request) {
          const std::string reply = server.Normal(request);
          return RedisResponse().Send(reply + reply);
        },
        1);
  }
  SECTION("the unasked reply comes after the call returned") {
    server.Inject(
        "MGET",
        [&](const RedisRequest& request) {
          const std::string reply = server.Normal(request);
          return RedisResponse().Send(reply).Pause(milliseconds(30)).Send(reply);
        },
        1);
  }
  SECTION("the reply comes after the call timed out") {
    server.Inject(
        "MGET",
        [&](const RedisRequest& request) {
          return RedisResponse().Pause(milliseconds(400)).Send(server.Normal(request));
        },
        1);
  }
  // The first read may fail (a reply it cannot tell from an unasked one); it is never b's.
  const std::string first = GetOne(*backend, "a");
  CHECK(first != "value of b");
  absl::SleepFor(absl::Milliseconds(500));  // everything the server sends has arrived
  int wrong = 0, failed = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string got = GetOne(*backend, "b");
    if (got == "value of a") ++wrong;
    if (got != "value of a" && got != "value of b") ++failed;
  }
  INFO("first read: " << first << "; connections opened " << backend->Stats().connections_opened);
  CHECK(wrong == 0);
  CHECK(failed == 0);
  CHECK(GetOne(*backend, "a") == "value of a");
}

TEST_CASE("a refused AUTH never puts the password into a status") {
  // With AUTH renamed away, Redis answers "ERR unknown command 'AUTH', with args beginning with:"
  // and the arguments: the user name and the password (its first 128 bytes).
  RedisServer server({.extra_args = {"--rename-command", "AUTH", ""}});
  const std::string host_port = "127.0.0.1:" + std::to_string(server.port());
  const std::string long_password(200, 'p');
  for (const auto& [user, password] : std::vector<std::pair<std::string, std::string>>{
           {"", "hunter2-secret"}, {"cacheuser", "hunter2-secret"}, {"", long_password}}) {
    CAPTURE(user);
    const absl::Status status =
        NewRedisBackend({.url = "redis://" + user + ":" + password + "@" + host_port}).status();
    const std::string text = status.ToString();
    INFO(text);
    CHECK_FALSE(status.ok());
    CHECK(text.find(password.substr(0, 16)) == std::string::npos);
    if (!user.empty()) CHECK(text.find(user) == std::string::npos);
    CHECK(text.find("AUTH") != std::string::npos);  // still says what failed
  }
}

TEST_CASE("server text quoting the password or user name is redacted in every status") {
  const std::string password = "hunter2-secret-of-the-cache";
  HostileRedisServer server({.password = password});
  auto backend = Connect({.url = "redis://cacheuser:" + password + "@" + server.node()});
  // The whole password, and a prefix of it as a server cuts a long argument short.
  server.Inject("MGET", [&](const RedisRequest&) {
    return RedisResponse().Send(
        RespError("ERR cacheuser " + password + " '" + password.substr(0, 20) + "'"));
  });
  server.Inject("SET", [&](const RedisRequest&) {
    return RedisResponse().Send(RespError("BUSY " + password));
  });
  const std::string_view key = "k";
  const std::string get = backend->MultiGet({&key, 1}).status().ToString();
  const std::string set = backend->MultiSet({{"k", "v"}}, absl::Minutes(1)).ToString();
  for (const std::string& text : {get, set}) {
    INFO(text);
    CHECK(text.find("hunter2-secret") == std::string::npos);
    CHECK(text.find("cacheuser") == std::string::npos);
    CHECK(text.find("<redacted>") != std::string::npos);
  }
}

// A valid MGET reply of one `size`-byte value, sent one byte per 20 ms.
RedisResponse DrippingValue(std::size_t size) {
  return RedisResponse().Drip(RespArray({RespBulk(std::string(size, 'x'))}), milliseconds(20));
}

TEST_CASE("a call's deadline bounds every Redis command and the connect") {
  HostileRedisServer server;
  // Long timeouts of its own: only the call's deadline can end the commands below in time.
  // Database 1, so that every new connection sends a SELECT; pool_size 0, so every call opens one.
  auto backend = Connect({.url = server.url() + "/1",
                          .connect_timeout = absl::Seconds(5),
                          .command_timeout = absl::Seconds(5),
                          .pool_size = 0});
  SECTION("a dripping reply") {
    server.Inject("MGET", [](const RedisRequest&) { return DrippingValue(1000); });
  }
  SECTION("a dripping SELECT reply while connecting") {
    server.Inject("SELECT", [](const RedisRequest&) {
      return RedisResponse().Drip("+OK\r\n", milliseconds(200));
    });
  }
  const absl::Time start = absl::Now();
  absl::Status status;
  {
    const ScopedCallDeadline deadline(start + absl::Milliseconds(300));
    const std::string_view key = "k";
    status = backend->MultiGet({&key, 1}).status();
  }
  const absl::Duration took = absl::Now() - start;
  INFO(status.ToString() << " after " << took);
  CHECK(absl::IsDeadlineExceeded(status));
  CHECK(took < absl::Milliseconds(400));
  // Past the deadline already: nothing is sent.
  const std::uint64_t commands = server.commands();
  {
    const ScopedCallDeadline deadline(absl::Now() - absl::Milliseconds(1));
    const std::string_view key = "k";
    CHECK(absl::IsDeadlineExceeded(backend->MultiGet({&key, 1}).status()));
  }
  CHECK(server.commands() == commands);
}

TEST_CASE("GetOrLoad with a 300 ms deadline against a dripping Redis ends at its deadline") {
  HostileRedisServer server;
  auto backend = Connect({.url = server.url()});  // default timeouts: 1 s
  ChunkedCache cache(backend);
  server.Inject("MGET", [](const RedisRequest&) { return DrippingValue(1000); });
  server.Inject("GET", [](const RedisRequest&) {
    return RedisResponse().Drip(RespBulk(std::string(1000, 'x')), milliseconds(20));
  });
  std::atomic<int> loads{0};
  const absl::Time start = absl::Now();
  absl::StatusOr<Bytes> got = cache.GetOrLoad("doc",
                                              [&] {
                                                ++loads;
                                                return absl::StatusOr<std::string>("{}");
                                              },
                                              {.deadline = start + absl::Milliseconds(300)});
  const absl::Duration took = absl::Now() - start;
  INFO(got.status().ToString() << " after " << took);
  CHECK(absl::IsDeadlineExceeded(got.status()));
  CHECK(took < absl::Milliseconds(400));
  absl::SleepFor(absl::Milliseconds(300));
  CHECK(loads == 0);
}

TEST_CASE("ASK redirects to ever new nodes keep the number of node pools bounded") {
  HostileRedisServer server({.cluster = true});
  // Loopback ports bound but not listening: a connection to one is refused at once, and nobody
  // else can listen on them while the test holds them.
  std::vector<int> sockets, ports;
  for (int i = 0; i < 100; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    sockets.push_back(fd);
    ports.push_back(ntohs(address.sin_port));
  }
  std::atomic<std::size_t> asks{0};
  server.Inject("MGET", [&](const RedisRequest& request) {
    const std::string target = "127.0.0.1:" + std::to_string(ports[asks++ % ports.size()]);
    return RedisResponse().Send(
        RespError("ASK " + std::to_string(RedisClusterSlot(request.args[1])) + " " + target));
  });
  auto backend = Connect({.url = server.url(), .cluster = true});
  std::uint64_t most = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "key" + std::to_string(i);
    const std::string_view view = key;
    CHECK_FALSE(backend->MultiGet({&view, 1}).ok());  // every target refuses
    most = std::max(most, backend->Stats().node_pools);
  }
  for (const int fd : sockets) close(fd);
  INFO(asks << " ASK targets; at most " << most << " node pools");
  CHECK(asks >= 300);
  CHECK(most <= 1 + 32);  // the seed's, and 32 spare ones
  // The node pools of the slot map are never the ones dropped: the server still serves.
  server.ClearFaults();
  const std::string_view key = "k";
  CHECK(backend->MultiGet({&key, 1}).ok());
}

TEST_CASE("more threads than pool_size keep their connections instead of churning them",
          "[concurrency]") {
  constexpr int kThreads = 32;
  RedisServer server;
  auto backend = Connect({.url = server.url(), .pool_size = 8});
  REQUIRE(backend->MultiSet({{"k", "v"}}, absl::Minutes(1)).ok());
  const std::uint64_t before = backend->Stats().connections_opened;
  std::atomic<int> errors{0};
  const absl::Time until = absl::Now() + absl::Seconds(1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      const std::string_view key = "k";
      while (absl::Now() < until) {
        if (!backend->MultiGet({&key, 1}).ok()) ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  const RedisBackendStats stats = backend->Stats();
  const std::uint64_t opened = stats.connections_opened - before;
  INFO("connections opened: " << opened << " for " << stats.calls << " calls");
  CHECK(errors == 0);
  CHECK(opened <= kThreads);  // at most one per thread calling at once
}

TEST_CASE("a max_item_size near SIZE_MAX does not overflow the reply bound") {
  RedisServer server;
  for (const std::size_t max_item_size :
       {std::numeric_limits<std::size_t>::max(), std::numeric_limits<std::size_t>::max() / 2,
        std::numeric_limits<std::size_t>::max() - 300}) {
    CAPTURE(max_item_size);
    auto backend = Connect({.url = server.url(), .max_item_size = max_item_size});
    const std::string value(10000, 'v');
    REQUIRE(backend->MultiSet({{"{k}1", value}, {"{k}2", value}, {"{k}3", value}}, absl::Minutes(1))
                .ok());
    absl::StatusOr<std::vector<std::optional<std::string>>> got =
        backend->MultiGet({"{k}1", "{k}2", "{k}3"});
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    for (const auto& v : *got) CHECK(v == value);
  }
}

// ---- MultiGetEach -------------------------------------------------------------------------------

// What one MultiGetEach handed over, in the order handed, and what it returned.
struct Handed {
  absl::Status status;
  std::vector<std::size_t> indices;
  std::vector<std::optional<std::string>> values;  // nullopt: absent
  std::vector<std::shared_ptr<const void>> owners;
};

// MultiGetEach of `keys`, its sink stopping the call (Cancelled) after handing index `stop_after`.
Handed GetEach(Backend& backend, absl::Span<const std::string_view> keys,
               std::size_t stop_after = std::numeric_limits<std::size_t>::max()) {
  Handed handed;
  handed.status = backend.MultiGetEach(keys, [&](std::size_t i, std::optional<ItemView> item) {
    handed.indices.push_back(i);
    handed.values.emplace_back();
    if (item.has_value()) {
      CHECK(item->owner != nullptr);
      handed.values.back().emplace(item->value);
      handed.owners.push_back(std::move(item->owner));
    }
    if (i == stop_after) return absl::CancelledError("the reader has seen enough");
    return absl::OkStatus();
  });
  return handed;
}

// Stores one item for a minute.
absl::Status Store(Backend& backend, std::string_view key, std::string_view value) {
  const KeyValue item{key, value};
  return backend.MultiSet({&item, 1}, absl::Minutes(1));
}

// 0, 1, ..., n - 1.
std::vector<std::size_t> Indices(std::size_t n) {
  std::vector<std::size_t> indices(n);
  for (std::size_t i = 0; i < n; ++i) indices[i] = i;
  return indices;
}

TEST_CASE("MultiGetEach hands over MultiGet's answer, key by key, in one round trip") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});
  REQUIRE(backend
              ->MultiSet({{"{d}a", "alpha"}, {"{d}empty", ""}, {"{d}c", std::string(5000, 'c')}},
                         absl::Minutes(1))
              .ok());
  const std::vector<std::string_view> keys = {"{d}a", "{d}absent", "{d}empty",
                                              "{d}c", "{d}a",      "{d}gone"};
  absl::StatusOr<std::vector<std::optional<std::string>>> expected = backend->MultiGet(keys);
  REQUIRE(expected.ok());
  const RedisBackendStats before = backend->Stats();
  const Handed handed = GetEach(*backend, keys);
  const RedisBackendStats after = backend->Stats();
  INFO(handed.status.ToString());
  REQUIRE(handed.status.ok());
  CHECK(handed.indices == Indices(keys.size()));
  CHECK(handed.values == *expected);
  CHECK(after.calls - before.calls == 1);
  CHECK(after.round_trips - before.round_trips == 1);
  CHECK(after.commands - before.commands == keys.size());  // a GET per key
  CHECK(after.errors == before.errors);
  // An empty key list hands nothing over.
  CHECK(GetEach(*backend, {}).indices.empty());
}

TEST_CASE("MultiGetEach hands over twelve 1 MiB items, each kept by its owner") {
  RedisServer server;
  auto backend = Connect({.url = server.url()});  // max_item_size 1 MiB
  constexpr std::size_t kItems = 12;
  std::vector<std::string> names, values;
  for (std::size_t i = 0; i < kItems; ++i) {
    names.push_back("{big}" + std::to_string(i));
    values.push_back(std::string(std::size_t{1} << 20, static_cast<char>('a' + i)));
    values.back()[i] = '!';  // no two alike
    REQUIRE(Store(*backend, names.back(), values.back()).ok());
  }
  const std::vector<std::string_view> keys(names.begin(), names.end());
  Handed handed = GetEach(*backend, keys);
  INFO(handed.status.ToString());
  REQUIRE(handed.status.ok());
  CHECK(handed.indices == Indices(kItems));
  REQUIRE(handed.values.size() == kItems);
  for (std::size_t i = 0; i < kItems; ++i) CHECK(handed.values[i] == values[i]);
  CHECK(handed.owners.size() == kItems);
  // The next call on the same connection is in step.
  CHECK(GetEach(*backend, {keys[3], keys[1]}).values ==
        std::vector<std::optional<std::string>>{values[3], values[1]});
}

TEST_CASE("a sink that stops MultiGetEach early gets its error back; the backend stays in step") {
  RedisServer server;
  // pool_size 1: the next call takes the same pooled connection, if it is still fit for use.
  auto backend = Connect({.url = server.url(), .pool_size = 1});
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) {
    names.push_back("{s}" + std::to_string(i));
    REQUIRE(Store(*backend, names.back(), "value " + std::to_string(i)).ok());
  }
  const std::vector<std::string_view> keys(names.begin(), names.end());
  const std::size_t stop_after = GENERATE(0, 2, 9);  // 9: the last, no reply left unread
  CAPTURE(stop_after);
  const RedisBackendStats before = backend->Stats();
  const Handed handed = GetEach(*backend, keys, stop_after);
  CHECK(absl::IsCancelled(handed.status));
  CHECK(handed.status.message() == "the reader has seen enough");
  CHECK(handed.indices == Indices(stop_after + 1));
  CHECK(handed.values.back() == "value " + std::to_string(stop_after));
  CHECK(backend->Stats().errors == before.errors);  // the sink's error is not the backend's

  // Other keys, on whatever connection: their own values, never the replies left unread.
  for (int round = 0; round < 3; ++round) {
    const std::string_view others[] = {keys[7], keys[8]};
    absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet(others);
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    CHECK(*got == std::vector<std::optional<std::string>>{"value 7", "value 8"});
    const Handed again = GetEach(*backend, {keys[4], keys[5]});
    CHECK(again.status.ok());
    CHECK(again.values == std::vector<std::optional<std::string>>{"value 4", "value 5"});
  }
  const RedisBackendStats after = backend->Stats();
  CHECK(after.connection_failures == before.connection_failures);
  // A connection left with replies in flight is closed, not reused.
  CHECK(after.connections_discarded - before.connections_discarded == (stop_after < 9 ? 1 : 0));
}

TEST_CASE("MultiGetEach in a cluster: one node, MOVED after a migration, keys of several slots") {
  RedisCluster cluster;
  auto backend = Connect({.url = cluster.urls()[0], .cluster = true});
  const std::vector<std::string_view> keys = {"{m}0", "{m}1", "{m}absent", "{m}3"};
  REQUIRE(
      backend->MultiSet({{"{m}0", "zero"}, {"{m}1", "one"}, {"{m}3", "three"}}, absl::Minutes(1))
          .ok());
  const std::vector<std::optional<std::string>> expected = {"zero", "one", std::nullopt, "three"};
  Handed handed = GetEach(*backend, keys);
  REQUIRE(handed.status.ok());
  CHECK(handed.values == expected);

  const int slot = RedisCluster::SlotOf("{m}0");
  const int from = cluster.NodeOwning(slot);
  cluster.MigrateSlot(slot, (from + 1) % 3);
  const RedisBackendStats before = backend->Stats();
  handed = GetEach(*backend, keys);
  INFO(handed.status.ToString());
  REQUIRE(handed.status.ok());
  CHECK(handed.indices == Indices(keys.size()));
  CHECK(handed.values == expected);
  CHECK(backend->Stats().redirects - before.redirects >= 1);
  CHECK(backend->Stats().slot_map_refreshes > before.slot_map_refreshes);

  // Keys of several nodes: answered too (through MultiGet), in key order.
  const std::vector<std::string> spread = KeyOnEachNode(cluster);
  for (int i = 0; i < 3; ++i) cluster.node(i).Cli({"SET", spread[i], "n" + std::to_string(i)});
  handed = GetEach(*backend, {spread[2], "{m}1", spread[0], spread[1]});
  REQUIRE(handed.status.ok());
  CHECK(handed.indices == Indices(4));
  CHECK(handed.values == std::vector<std::optional<std::string>>{"n2", "one", "n0", "n1"});

  // A backend not told about the cluster finds it in its first MultiGetEach.
  auto plain = Connect({.url = cluster.urls()[0]});
  for (const std::vector<std::string_view>& asked :
       {std::vector<std::string_view>{keys.begin(), keys.end()},
        std::vector<std::string_view>{spread[0], spread[2], spread[1], "absent"}}) {
    handed = GetEach(*plain, asked);
    INFO(handed.status.ToString());
    REQUIRE(handed.status.ok());
    CHECK(handed.indices == Indices(asked.size()));
    absl::StatusOr<std::vector<std::optional<std::string>>> got = plain->MultiGet(asked);
    REQUIRE(got.ok());
    CHECK(handed.values == *got);
  }
}

// The Backend contract, checked by the conformance kit, on one server and on a cluster (TTLs in
// milliseconds: PX). Every check gets a new backend on the same server.
TEST_CASE("the Redis backend keeps the Backend contract", "[conformance][concurrency]") {
  RedisServer server;
  const std::string url = server.url();
  const absl::Status conformance = testing::CheckBackendConformance(
      [&] { return NewRedisBackend({.url = url}).value_or(nullptr); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 2});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

TEST_CASE("the Redis backend on a cluster keeps the Backend contract",
          "[conformance][concurrency]") {
  RedisCluster cluster;
  const std::string seed = cluster.urls()[0];
  const absl::Status conformance = testing::CheckBackendConformance(
      [&] { return NewRedisBackend({.url = seed, .cluster = true}).value_or(nullptr); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 2});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache

// Stands in front of libc's getaddrinfo for the whole test binary (the library's calls and
// hiredis' included) to simulate a resolver that hangs; forwards every lookup unchanged.
extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** result) {
  using Getaddrinfo = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static const auto real = reinterpret_cast<Getaddrinfo>(dlsym(RTLD_NEXT, "getaddrinfo"));
  const int stall_ms = chunkcache::lookup_stall_ms.load();
  if (stall_ms > 0 && node != nullptr && std::strcmp(node, "localhost") == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
  }
  return real(node, service, hints, result);
}
