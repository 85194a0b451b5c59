// The cross-process lease (CacheOptions::lease_ttl) across real processes: lease_worker children
// (tests/lease_worker.cc) share one redis-server and a file where every loader call appends a
// line, so the test counts origin loads across processes. The last cases stand two caches over
// one memory backend in for two processes, to look at one of them closely (counters, log, the
// backend calls of its next read).

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/redis_server.h"
#include "test_util.h"

#ifndef CHUNKCACHE_LEASE_WORKER
#error "CHUNKCACHE_LEASE_WORKER must name the lease_worker binary"
#endif

namespace chunkcache {
namespace {

using testing::Eventually;
using testing::Gate;
using testing::RedisServer;
using testing::redis_fixture_internal::ChildProcess;
using testing::redis_fixture_internal::DescribeWaitStatus;
using testing::redis_fixture_internal::TempDir;
using testing::redis_fixture_internal::UniqueFd;

// The stored lease key of logical key "catalogue" under the default prefix "cc:".
constexpr char kLeaseKey[] = "cc:{catalogue}:lease";
using Clock = std::chrono::steady_clock;

// How long a test waits for its workers before it gives up on them (and kills them).
constexpr auto kWorkerTimeout = std::chrono::seconds(15);

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Loader calls recorded in the count file ("load <pid>" lines) by all workers so far.
int CountLoads(const std::string& count_file) {
  std::ifstream in(count_file);
  int loads = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("load ")) ++loads;
  }
  return loads;
}

// A worker's "ok <size> won=N waited=N wait_hits=N wait_loads=N loads=N" line.
struct Report {
  std::uint64_t size = 0;
  std::uint64_t won = 0;
  std::uint64_t waited = 0;
  std::uint64_t wait_hits = 0;
  std::uint64_t wait_loads = 0;
  std::uint64_t loads = 0;
};

std::optional<Report> ParseReport(absl::string_view out) {
  const absl::string_view line = out.substr(0, out.find('\n'));
  const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.size() != 7 || fields[0] != "ok") return std::nullopt;
  Report report;
  if (!absl::SimpleAtoi(fields[1], &report.size)) return std::nullopt;
  absl::flat_hash_map<absl::string_view, std::uint64_t*> counters = {
      {"won", &report.won},
      {"waited", &report.waited},
      {"wait_hits", &report.wait_hits},
      {"wait_loads", &report.wait_loads},
      {"loads", &report.loads}};
  for (std::size_t i = 2; i < fields.size(); ++i) {
    const std::pair<absl::string_view, absl::string_view> field = absl::StrSplit(fields[i], '=');
    auto it = counters.find(field.first);
    if (it == counters.end() || it->second == nullptr) return std::nullopt;
    if (!absl::SimpleAtoi(field.second, it->second)) return std::nullopt;
    it->second = nullptr;  // each counter once
  }
  return report;
}

// One lease_worker child, its stdout and stderr in files of `dir`. The destructor kills it if it
// still runs (SIGTERM, then SIGKILL) and reaps it.
class Worker {
 public:
  Worker(const TempDir& dir, std::string name, const std::vector<std::string>& flags)
      : name_(std::move(name)),
        out_file_(dir.path() + "/" + name_ + ".out"),
        err_file_(dir.path() + "/" + name_ + ".err") {
    std::vector<std::string> argv = {CHUNKCACHE_LEASE_WORKER};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const UniqueFd out(::open(out_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    const UniqueFd err(::open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    REQUIRE(out.valid());
    REQUIRE(err.valid());
    process_ = ChildProcess(argv, out.get(), err.get());
  }

  bool running() const { return process_.running(); }

  // SIGKILL now, reaped.
  void Kill() {
    if (process_.pid() > 0) ::kill(process_.pid(), SIGKILL);
    Wait(Clock::now() + kWorkerTimeout);
  }

  // Waits for the worker to exit (killing it at `deadline`) and returns its wait status, -1 if it
  // had to be killed.
  int Wait(Clock::time_point deadline) {
    if (process_.pid() <= 0) return status_.value_or(-1);  // reaped already
    while (Clock::now() < deadline) {
      if (std::optional<int> status = process_.TryReap()) {
        status_ = *status;
        return *status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    process_.Kill();
    status_ = -1;
    return -1;
  }

  bool succeeded() const { return status_ && WIFEXITED(*status_) && WEXITSTATUS(*status_) == 0; }
  std::string out() const { return ReadWholeFile(out_file_); }

  // Everything known about the worker, for failure messages.
  std::string Describe() const {
    std::string text = name_ + ": ";
    if (!status_) {
      text += "running";
    } else if (*status_ == -1) {
      text += "did not finish within the timeout (killed)";
    } else {
      text += DescribeWaitStatus(*status_);
    }
    absl::StrAppend(&text, "\n  stdout: ", out(), "  stderr: ", ReadWholeFile(err_file_), "\n");
    return text;
  }

 private:
  std::string name_;
  std::string out_file_;
  std::string err_file_;
  std::optional<int> status_;
  ChildProcess process_;
};

// What a group of workers racing on one cold key did.
struct Race {
  std::vector<std::optional<Report>> reports;  // one per worker, nullopt if it did not say "ok"
  int exited_ok = 0;                           // workers that exited 0
  int loads = 0;                               // lines in the count file
  std::string transcript;                      // every worker's status and output
};

// Starts `workers` lease_worker processes that all call GetOrLoad at the same wall-clock time, a
// little in the future so that starting the processes, connecting and generating the JSON are
// out of the race, and waits for them.
Race RunRace(const RedisServer& server, int workers, int lease_ttl_ms) {
  TempDir dir("chunkcache-lease-");
  const std::string count_file = dir.path() + "/loads";
  const std::int64_t start_at = absl::ToUnixMillis(absl::Now() + absl::Milliseconds(500));
  std::vector<std::unique_ptr<Worker>> children;
  for (int i = 0; i < workers; ++i) {
    children.push_back(std::make_unique<Worker>(
        dir, absl::StrCat("worker", i),
        std::vector<std::string>{absl::StrCat("--redis_url=", server.url()),
                                 absl::StrCat("--count_file=", count_file),
                                 absl::StrCat("--lease_ttl_ms=", lease_ttl_ms), "--load_ms=300",
                                 absl::StrCat("--start_at_unix_ms=", start_at)}));
  }
  Race race;
  const Clock::time_point deadline = Clock::now() + kWorkerTimeout;
  for (auto& child : children) {
    child->Wait(deadline);
    if (child->succeeded()) ++race.exited_ok;
    race.reports.push_back(ParseReport(child->out()));
    race.transcript += child->Describe();
  }
  race.loads = CountLoads(count_file);
  absl::StrAppend(&race.transcript, "count file:\n", ReadWholeFile(count_file));
  return race;
}

std::size_t ExpectedSize() {
  static const std::size_t size = testing::GenerateCatalogue({.megabytes = 1, .seed = 1}).size();
  return size;
}

TEST_CASE("eight processes cold-starting on one key load it about once") {
  RedisServer server;
  constexpr int kWorkers = 8;
  const Race race = RunRace(server, kWorkers, /*lease_ttl_ms=*/5000);
  INFO(race.transcript);

  CHECK(race.exited_ok == kWorkers);
  Report total;
  for (const std::optional<Report>& report : race.reports) {
    REQUIRE(report.has_value());
    CHECK(report->size == ExpectedSize());
    total.won += report->won;
    total.waited += report->waited;
    total.wait_hits += report->wait_hits;
    total.wait_loads += report->wait_loads;
    total.loads += report->loads;
  }
  CHECK(race.loads >= 1);
  CHECK(race.loads <= 2);
  CHECK(total.loads == static_cast<std::uint64_t>(race.loads));  // the workers' own count agrees
  CHECK(total.won >= 1);
  CHECK(total.waited >= 5);                    // most found the lease taken...
  CHECK(total.wait_hits + 1 >= total.waited);  // ...and were answered by the holder's entry
  CHECK(total.won + total.wait_loads == total.loads);
  CHECK(server.Cli({"EXISTS", kLeaseKey}) == "0");  // released by its holder
}

TEST_CASE("a lease whose holder dies expires and another process loads") {
  RedisServer server;
  TempDir dir("chunkcache-lease-");
  const std::string count_file = dir.path() + "/loads";
  const std::string url_flag = absl::StrCat("--redis_url=", server.url());
  const std::string count_flag = absl::StrCat("--count_file=", count_file);

  Worker holder(dir, "holder", {url_flag, count_flag, "--hold", "--lease_ttl_ms=1500"});
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
  while (CountLoads(count_file) == 0 && holder.running() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  INFO(holder.Describe());
  REQUIRE(CountLoads(count_file) == 1);  // the holder has the lease and is loading
  CHECK(server.Cli({"EXISTS", kLeaseKey}) == "1");
  // Kill it at once: the second worker must start while the lease is still alive (~1.5 s).
  holder.Kill();

  Worker second(dir, "second", {url_flag, count_flag, "--lease_ttl_ms=1500", "--load_ms=50"});
  second.Wait(Clock::now() + kWorkerTimeout);
  INFO(second.Describe());
  REQUIRE(second.succeeded());
  const std::optional<Report> report = ParseReport(second.out());
  REQUIRE(report.has_value());
  CHECK(report->size == ExpectedSize());
  CHECK(CountLoads(count_file) == 2);
  CHECK(report->waited == 1);      // it found the dead holder's lease...
  CHECK(report->wait_hits == 0);   // ...no entry ever came...
  CHECK(report->wait_loads == 1);  // ...so it loaded by itself once the lease expired
  CHECK(report->won == 0);
  CHECK(report->loads == 1);
  CHECK(server.Cli({"EXISTS", kLeaseKey}) == "0");
}

TEST_CASE("without a lease every process loads") {
  RedisServer server;
  constexpr int kWorkers = 8;
  const Race race = RunRace(server, kWorkers, /*lease_ttl_ms=*/0);
  INFO(race.transcript);

  CHECK(race.exited_ok == kWorkers);
  for (const std::optional<Report>& report : race.reports) {
    REQUIRE(report.has_value());
    CHECK(report->size == ExpectedSize());
    CHECK(report->loads == 1);
    CHECK(report->won + report->waited == 0);
  }
  CHECK(race.loads == kWorkers);
}

// ---- Two caches over one memory backend -----------------------------------------------------

// Opens its gate when it goes (declared after the caches, it goes first): a failed REQUIRE must
// not leave a refresh thread waiting at the gate for a cache destructor to join.
struct OpenOnExit {
  std::shared_ptr<Gate> gate;
  ~OpenOnExit() { gate->Open(); }
};

// A loader that counts its calls and returns `json` once `gate` is open.
Loader GatedLoader(std::shared_ptr<Gate> gate, std::shared_ptr<std::atomic<int>> calls,
                   std::string json) {
  return [gate, calls, json]() -> absl::StatusOr<std::string> {
    ++*calls;
    gate->Wait();
    return json;
  };
}

// What a CacheOptions::log received.
struct CapturedLog {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(LogLevel, std::string_view)> Sink() {
    return [this](LogLevel, std::string_view message) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(message);
    };
  }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mu);
    return lines;
  }
};

TEST_CASE("a stale refresh left to the lease holder counts as lease-held, not dropped",
          "[concurrency]") {
  testing::FakeClock clock;
  auto backend = NewMemoryBackend({.clock = clock.AsFunction()});
  const CacheOptions options = {.ttl = absl::Minutes(10),
                                .soft_ttl = absl::Minutes(1),
                                .lease_ttl = absl::Seconds(30),
                                .clock = clock.AsFunction()};
  ChunkedCache a(backend, options), b(backend, options);  // two processes
  const std::string v1 = testing::GenerateCatalogue({.megabytes = 0.01, .seed = 1});
  const std::string v2 = testing::GenerateCatalogue({.megabytes = 0.01, .seed = 2});
  REQUIRE(a.Put("k", v1).ok());
  clock.Advance(absl::Minutes(2));  // stale
  auto gate = std::make_shared<Gate>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  const Loader loader = GatedLoader(gate, calls, v2);
  const OpenOnExit open_on_exit{gate};
  REQUIRE(a.GetOrLoad("k", loader).ok());            // stale: a refreshes...
  REQUIRE(Eventually([&] { return *calls == 1; }));  // ...holding the key's lease
  REQUIRE(b.GetOrLoad("k", loader).ok());            // stale: b's refresh finds the lease held
  REQUIRE(Eventually([&] { return b.Stats().refreshes_lease_held == 1; }));
  const CacheStats stats = b.Stats();
  CHECK(stats.refreshes_dropped == 0);  // its queue was never full
  CHECK(stats.refreshes == 0);
  gate->Open();
  REQUIRE(Eventually([&] { return a.Stats().refreshes == 1 && a.Stats().puts == 2; }));
  CHECK(*calls == 1);
  CHECK(a.Stats().refreshes_lease_held == 0);
  CHECK(a.Stats().refreshes_dropped == 0);
}

TEST_CASE("a backend without SetIfAbsent turns the lease off with one warning per cache",
          "[concurrency]") {
  auto backend = std::make_shared<testing::ForwardingBackend>(NewMemoryBackend());
  CapturedLog log;
  ChunkedCache cache(backend, {.lease_ttl = absl::Seconds(10), .log = log.Sink()});
  const Loader loader = [] { return absl::StatusOr<std::string>("[1]"); };
  // Misses from several threads at once, then more after the log's one-second limit has passed:
  // the warning is said once, not once per second.
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        if (!cache.GetOrLoad(absl::StrCat("k", t, "-", i), loader).ok()) ++failed;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(failed == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  for (int i = 0; i < 20; ++i) CHECK(cache.GetOrLoad(absl::StrCat("later", i), loader).ok());
  CHECK(cache.Stats().loads == 100);
  CHECK(cache.Stats().leases_won + cache.Stats().leases_waited == 0);
  const std::vector<std::string> lines = log.Lines();
  REQUIRE(lines.size() == 1);
  CAPTURE(lines[0]);
  CHECK(absl::StrContains(lines[0], "lease"));
  CHECK(absl::StrContains(lines[0], "off"));
  CHECK(absl::StrContains(lines[0], "SetIfAbsent"));

  // Another cache over such a backend says it again (once per cache, not per process).
  CapturedLog other_log;
  ChunkedCache other(backend, {.lease_ttl = absl::Seconds(10), .log = other_log.Sink()});
  for (int i = 0; i < 5; ++i) CHECK(other.GetOrLoad(absl::StrCat("o", i), loader).ok());
  CHECK(other_log.Lines().size() == 1);
  // Without lease_ttl nothing is said.
  CapturedLog quiet_log;
  ChunkedCache quiet(backend, {.log = quiet_log.Sink()});
  CHECK(quiet.GetOrLoad("q", loader).ok());
  CHECK(quiet_log.Lines().empty());
}

TEST_CASE("a process that waited for another's lease keeps the entry it read in its near cache",
          "[concurrency]") {
  testing::FakeClock clock;
  auto memory = NewMemoryBackend({.clock = clock.AsFunction()});
  auto a_backend = std::make_shared<testing::CountingBackend>(memory);
  auto b_backend = std::make_shared<testing::CountingBackend>(memory);
  const CacheOptions options = {.chunk_size = 16 << 10,
                                .l1_capacity_bytes = 64 << 20,
                                .l1_fresh_for = absl::Seconds(1),
                                .lease_ttl = absl::Seconds(30),
                                .clock = clock.AsFunction()};
  ChunkedCache a(a_backend, options), b(b_backend, options);  // two processes
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.25, .seed = 3});
  auto gate = std::make_shared<Gate>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  const Loader loader = GatedLoader(gate, calls, json);

  absl::StatusOr<Bytes> loaded, waited;
  std::thread holder([&] { loaded = a.GetOrLoad("k", loader); });
  const bool holding = Eventually([&] { return *calls == 1; });  // a holds the lease, loading
  std::thread waiter([&] { waited = b.GetOrLoad("k", loader); });
  const bool waiting = Eventually([&] { return b.Stats().leases_waited == 1; });
  gate->Open();
  holder.join();
  waiter.join();
  REQUIRE(holding);
  REQUIRE(waiting);
  REQUIRE(loaded.ok());
  REQUIRE(waited.ok());
  CHECK(**waited == json);
  REQUIRE(b.Stats().lease_wait_hits == 1);
  CHECK(*calls == 1);

  // b's next Get within l1_fresh_for: answered by its near cache, no backend call.
  const CacheStats before = b.Stats();
  b_backend->multi_gets = 0;
  absl::StatusOr<Bytes> next = b.Get("k");
  REQUIRE(next.ok());
  CHECK(**next == json);
  CHECK(b_backend->multi_gets == 0);
  CHECK(b.Stats().l1_hits == before.l1_hits + 1);
  CHECK(b.Stats().bytes_read == before.bytes_read);

  // After l1_fresh_for: revalidated by the manifest alone (the copy has the entry's identity).
  clock.Advance(absl::Seconds(2));
  const CacheStats later = b.Stats();
  next = b.Get("k");
  REQUIRE(next.ok());
  CHECK(**next == json);
  CHECK(b_backend->multi_gets == 1);
  CHECK(b.Stats().l1_revalidations == later.l1_revalidations + 1);
  CHECK(b.Stats().chunks_read == later.chunks_read);
  CHECK(b.Stats().bytes_read - later.bytes_read < 1024);
}

}  // namespace
}  // namespace chunkcache
