// A RedisBackend follows a Redis Cluster through a master's failover: three masters and three
// replicas on loopback (real redis-server processes), one master killed while several threads
// read and write, and the time measured until the same backend instance serves that master's
// slots again.

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chunkcache/chunked_cache.h"
#include "chunkcache/redis_backend.h"
#include "fixtures/redis_server.h"
#include "fixtures/tls_certs.h"

namespace chunkcache {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::RedisCluster;

// Small, so the cluster fails over in ~2-3 s instead of Redis' default ~20 s.
constexpr int kNodeTimeoutMs = 1000;

// How long after the cluster itself has failed over (the replica has claimed the slots) the
// backend may still fail calls for those slots. By design it takes the failing call that notices
// (a refused connection, or CLUSTERDOWN from a live node) plus at most one rate-limited slot-map
// refresh (one per 200 ms) from a node that has heard of the promotion: measured 130-250 ms on
// loopback. The rest is slack for a loaded 2-core CI machine.
constexpr milliseconds kRecoveryBound{2000};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

RedisCluster::Options ClusterWithReplicas() {
  return {.replicas_per_master = 1,
          .extra_args = {"--cluster-node-timeout", std::to_string(kNodeTimeoutMs)}};
}

// Hash tags `per_master` for each master, found by trying "t0", "t1", ...
std::map<int, std::vector<std::string>> TagsByMaster(const RedisCluster& cluster, int per_master) {
  std::map<int, std::vector<std::string>> tags;
  for (const int master : cluster.Masters()) tags[master];
  const auto short_of_tags = [&] {
    return std::any_of(tags.begin(), tags.end(), [&](const auto& t) {
      return t.second.size() < static_cast<std::size_t>(per_master);
    });
  };
  for (int n = 0; short_of_tags(); ++n) {
    const std::string tag = "t" + std::to_string(n);
    std::vector<std::string>& of_owner = tags[cluster.NodeOwning(RedisCluster::SlotOf(tag))];
    if (of_owner.size() < static_cast<std::size_t>(per_master)) of_owner.push_back(tag);
  }
  return tags;
}

// The outcome of one backend call on the killed master's slots.
struct Probe {
  Clock::time_point start, end;
  bool ok = false;
};

// What one failover under load showed.
struct FailoverRun {
  double failover_ms = 0;   // kill → the replica claims the slots
  double recovered_ms = 0;  // kill → the end of the last failed call on those slots
  int failures = 0;         // failed calls on those slots after the kill
  int successes_after = 0;  // calls on those slots after the last failure
  int wrong = 0;            // reads that returned bytes never written under their key
  std::uint64_t refreshes = 0;
};

// Stops and joins the load threads however the measurement ends (a REQUIRE throws).
struct LoadThreads {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  ~LoadThreads() { Join(); }
  void Join() {
    stop = true;
    for (std::thread& t : threads) {
      if (t.joinable()) t.join();
    }
  }
};

// A backend in cluster mode, seeded with `url` (rediss:// URLs trust the test CA).
std::shared_ptr<RedisBackend> ClusterBackend(const std::string& url) {
  absl::StatusOr<std::shared_ptr<RedisBackend>> backend = NewRedisBackend(
      {.url = url, .cluster = true, .tls_ca_bundle_path = testing::TestCertificates::Get().ca});
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  return *std::move(backend);
}

// Kills master `victim` while two threads write and read its keys straight on `backend` and two
// more Put and Get documents of every master through a ChunkedCache on it, waits for the cluster
// to fail over and for the backend to serve the victim's slots again (or the bound to pass), and
// checks that data replicated before the kill is served afterwards.
FailoverRun KillMasterUnderLoad(RedisCluster& cluster, const std::shared_ptr<RedisBackend>& backend,
                                int victim) {
  REQUIRE(cluster.ReplicasOf(victim).size() == 1);
  const int replica = cluster.ReplicasOf(victim)[0];
  const std::map<int, std::vector<std::string>> tags = TagsByMaster(cluster, 4);
  const std::vector<std::string>& victim_tags = tags.at(victim);
  const int victim_slot = RedisCluster::SlotOf(victim_tags[0]);

  // Written before the kill and replicated: the replica must serve it afterwards.
  const std::string sentinel_key = "{" + victim_tags[0] + "}sentinel";
  const std::string sentinel_value = "written before killing node " + std::to_string(victim);
  const KeyValue sentinel{sentinel_key, sentinel_value};
  REQUIRE(backend->MultiSet({&sentinel, 1}, absl::Minutes(5)).ok());
  cluster.WaitForReplication(victim);

  FailoverRun run;
  std::atomic<int> wrong{0};
  std::mutex probes_mu;
  std::vector<Probe> probes;  // guarded by probes_mu
  std::atomic<Clock::rep> last_failure_end{0};
  std::atomic<int> successes_since_failure{0};
  ChunkedCache cache(backend);
  LoadThreads load;

  const auto prober = [&](int id) {
    std::vector<Probe> mine;
    for (int n = 0; !load.stop.load(); ++n) {
      const std::string key = "{" + victim_tags[n % victim_tags.size()] + "}p" + std::to_string(id);
      const std::string value = key + "#" + std::to_string(n);
      Probe set{.start = Clock::now()};
      const KeyValue item{key, value};
      set.ok = backend->MultiSet({&item, 1}, absl::Minutes(5)).ok();
      set.end = Clock::now();
      Probe get{.start = Clock::now()};
      const std::string_view view = key;
      absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet({&view, 1});
      get.ok = got.ok();
      get.end = Clock::now();
      // A write lost with the dead master (replication is asynchronous) reads as a miss or an
      // older value of the same key, never as anything else.
      if (got.ok() && (*got)[0].has_value() && (*got)[0]->rfind(key + "#", 0) != 0) ++wrong;
      for (const Probe& p : {set, get}) {
        mine.push_back(p);
        if (p.ok) {
          ++successes_since_failure;
        } else {
          successes_since_failure = 0;
          last_failure_end = p.end.time_since_epoch().count();
        }
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    std::lock_guard<std::mutex> lock(probes_mu);
    probes.insert(probes.end(), mine.begin(), mine.end());
  };
  const auto cache_user = [&](int id) {
    std::vector<std::string> keys;
    for (const auto& [master, of_master] : tags) {
      for (const std::string& tag : of_master) keys.push_back(tag + "-doc" + std::to_string(id));
    }
    for (int n = 0; !load.stop.load(); ++n) {
      const std::string& key = keys[n % keys.size()];
      const std::string json = "{\"key\":\"" + key + "\",\"n\":" + std::to_string(n) + "}";
      (void)cache.Put(key, json);
      absl::StatusOr<Bytes> got = cache.Get(key);
      if (got.ok() && (*got)->find("{\"key\":\"" + key + "\",") != 0) ++wrong;
      std::this_thread::sleep_for(milliseconds(2));
    }
  };
  for (int i = 0; i < 2; ++i) load.threads.emplace_back(prober, i);
  for (int i = 0; i < 2; ++i) load.threads.emplace_back(cache_user, i);
  std::this_thread::sleep_for(milliseconds(300));  // under load before the kill
  const RedisBackendStats before_kill = backend->Stats();

  const Clock::time_point killed = Clock::now();
  cluster.node(victim).Kill();

  // The cluster's own failover: the moment the replica claims the slot.
  Clock::time_point failed_over{};
  const bool promoted = testing::redis_fixture_internal::WaitFor(
      milliseconds(20000),
      [&] {
        failed_over = Clock::now();
        try {
          return cluster.OwnerAsSeenBy(replica, victim_slot) == replica;
        } catch (const std::runtime_error&) {
          return false;
        }
      },
      milliseconds(5));
  REQUIRE(promoted);
  REQUIRE(cluster.WaitForFailover(victim_slot, milliseconds(10000)) == replica);

  // Go on until the victim's slots have been served without a failure for a while, or the bound
  // (plus a second to see that it holds) has passed.
  const Clock::time_point give_up = failed_over + kRecoveryBound + milliseconds(1000);
  while (Clock::now() < give_up) {
    const Clock::time_point last_failure{Clock::duration(last_failure_end.load())};
    if (successes_since_failure.load() >= 200 && Clock::now() - last_failure > milliseconds(500)) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  load.Join();

  // Recovered: the end of the last failed call on the victim's slots; every later one succeeded.
  Clock::time_point recovered = killed;
  for (const Probe& p : probes) {
    if (p.start >= killed && !p.ok) {
      ++run.failures;
      recovered = std::max(recovered, p.end);
    }
  }
  for (const Probe& p : probes) {
    if (p.ok && p.start >= recovered) ++run.successes_after;
  }
  run.failover_ms = Ms(failed_over - killed);
  run.recovered_ms = Ms(recovered - killed);
  run.wrong = wrong.load();
  run.refreshes = backend->Stats().slot_map_refreshes - before_kill.slot_map_refreshes;
  WARN("node " << victim << " killed: cluster failover after " << run.failover_ms
               << " ms; the backend served its slots again after " << run.recovered_ms << " ms ("
               << run.recovered_ms - run.failover_ms << " ms after the failover); " << run.failures
               << " failed calls, " << run.refreshes << " slot-map refreshes");

  // The replica serves what the victim had replicated, through the same backend.
  const std::string_view sentinel_view = sentinel_key;
  absl::StatusOr<std::vector<std::optional<std::string>>> got =
      backend->MultiGet({&sentinel_view, 1});
  CHECK(got.ok());
  if (got.ok()) CHECK((*got)[0] == sentinel_value);
  // And the cache works on every master's slots.
  for (const auto& [master, of_master] : tags) {
    const std::string key = of_master[0] + "-after";
    CHECK(cache.Put(key, "{\"after\":true}").ok());
    absl::StatusOr<Bytes> doc = cache.Get(key);
    CHECK(doc.ok());
    if (doc.ok()) CHECK(**doc == "{\"after\":true}");
  }
  return run;
}

void CheckRun(const FailoverRun& run) {
  CHECK(run.failures > 0);  // the outage was exercised
  CHECK(run.successes_after >= 50);
  CHECK(run.recovered_ms - run.failover_ms <= kRecoveryBound.count());
  CHECK(run.wrong == 0);
  // Refreshes are rate-limited (one per 200 ms, plus those MOVED asks for), not one per failed
  // call (there are thousands).
  CHECK(run.refreshes <= run.recovered_ms / 200 + 10);
}

TEST_CASE(
    "the same backend serves a killed master's slots again soon after its replica takes over") {
  RedisCluster cluster(ClusterWithReplicas());
  const std::vector<int> masters = cluster.Masters();
  REQUIRE(masters.size() == 3);
  // The victim is also the backend's only seed: the refresh must find the other nodes by itself.
  const int victim = masters[0];
  const std::shared_ptr<RedisBackend> backend = ClusterBackend(cluster.node(victim).url());

  // A second backend, idle from before the kill until after the failover, with a pooled
  // connection to the victim: its first call must find the new owner by itself (one refresh, one
  // retry).
  const std::shared_ptr<RedisBackend> idle = ClusterBackend(cluster.node(victim).url());
  std::string idle_key;
  for (int n = 0; idle_key.empty(); ++n) {
    const std::string key = "idle" + std::to_string(n);
    if (cluster.NodeOwning(RedisCluster::SlotOf(key)) == victim) idle_key = key;
  }
  const KeyValue item{idle_key, "from the idle backend"};
  REQUIRE(idle->MultiSet({&item, 1}, absl::Minutes(5)).ok());  // replicated with the sentinel

  CheckRun(KillMasterUnderLoad(cluster, backend, victim));

  const RedisBackendStats before = idle->Stats();
  const std::string_view view = idle_key;
  absl::StatusOr<std::vector<std::optional<std::string>>> got = idle->MultiGet({&view, 1});
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  CHECK((*got)[0] == "from the idle backend");
  CHECK(idle->Stats().failover_retries - before.failover_retries == 1);
  CHECK(idle->Stats().slot_map_refreshes - before.slot_map_refreshes == 1);
}

TEST_CASE("over TLS, the same backend serves a killed master's slots again after the failover") {
  const testing::TestCertificates& certs = testing::TestCertificates::Get();
  RedisCluster::Options options = ClusterWithReplicas();
  options.tls = testing::RedisTls{
      .cert_file = certs.server_cert, .key_file = certs.server_key, .ca_file = certs.ca};
  RedisCluster cluster(options);
  const int victim = cluster.Masters()[0];
  const std::string seed = cluster.node(victim).url();
  REQUIRE(seed.rfind("rediss://", 0) == 0);
  CheckRun(KillMasterUnderLoad(cluster, ClusterBackend(seed), victim));
}

// Failover after failover with one backend: each killed master comes back as a replica of the
// node that took over, and the next round kills another master.
TEST_CASE("one backend follows repeated failovers", "[.soak]") {
  RedisCluster cluster(ClusterWithReplicas());
  const std::shared_ptr<RedisBackend> backend = ClusterBackend(cluster.urls()[0]);
  std::vector<double> lags;
  for (int round = 0; round < 6; ++round) {
    const std::vector<int> masters = cluster.Masters();
    const int victim = masters[static_cast<std::size_t>(round) % masters.size()];
    const FailoverRun run = KillMasterUnderLoad(cluster, backend, victim);
    CheckRun(run);
    lags.push_back(run.recovered_ms - run.failover_ms);
    cluster.node(victim).Restart();  // rejoins as a replica of the node that took over
    cluster.WaitUntilReady(milliseconds(30000));
  }
  std::sort(lags.begin(), lags.end());
  WARN("backend lag after the cluster's failover: min "
       << lags.front() << " ms, median " << lags[lags.size() / 2] << " ms, max " << lags.back()
       << " ms");
}

}  // namespace
}  // namespace chunkcache
