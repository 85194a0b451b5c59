// The shared primitives in src/internal/: JSON quoting, the fd owner, the backoff draws.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "internal/backoff.h"
#include "internal/json.h"
#include "internal/object_pool.h"
#include "internal/percent_encode.h"
#include "internal/unique_fd.h"
#include "internal/worker_pool.h"
#include "simdjson.h"

namespace chunkcache::internal {
namespace {

TEST_CASE("JsonString quotes what JSON needs quoted and round-trips through a parser",
          "[internal]") {
  CHECK(JsonString("") == "\"\"");
  CHECK(JsonString("a\"b\\c") == R"("a\"b\\c")");
  CHECK(JsonString(std::string("\x01\n\x1f", 3)) == R"("\u0001\u000a\u001f")");
  CHECK(JsonString("caf\xc3\xa9") == "\"caf\xc3\xa9\"");

  std::string every;
  for (int c = 1; c < 128; ++c) every.push_back(static_cast<char>(c));
  simdjson::dom::parser parser;
  const std::string doc = "[" + JsonString(every) + "]";
  simdjson::dom::element parsed;
  REQUIRE(parser.parse(doc).get(parsed) == simdjson::SUCCESS);
  std::string_view back;
  REQUIRE(parsed.at(0).get(back) == simdjson::SUCCESS);
  CHECK(back == every);

  std::string out = "x=";
  AppendJsonString(&out, "y");
  CHECK(out == "x=\"y\"");
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST_CASE("UniqueFd closes what it owns, once, and moves ownership", "[internal]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  {
    UniqueFd a(fds[0]);
    UniqueFd b(std::move(a));
    CHECK_FALSE(a.valid());
    CHECK(b.get() == fds[0]);
    UniqueFd c;
    c = std::move(b);
    CHECK(IsOpen(fds[0]));
  }
  CHECK_FALSE(IsOpen(fds[0]));

  UniqueFd d(fds[1]);
  const int raw = d.Release();
  CHECK_FALSE(d.valid());
  CHECK(IsOpen(raw));
  d.Reset(raw);
  d.Reset();
  CHECK_FALSE(IsOpen(raw));
}

TEST_CASE("Backoff ceilings double up to the cap and draws stay in their ranges", "[internal]") {
  const absl::Duration base = absl::Milliseconds(10), cap = absl::Seconds(1);
  CHECK(ExponentialCeiling(0, base, cap) == base);
  CHECK(ExponentialCeiling(1, base, cap) == base);
  CHECK(ExponentialCeiling(4, base, cap) == absl::Milliseconds(80));
  CHECK(ExponentialCeiling(1000, base, cap) == cap);  // no overflow on a huge attempt

  absl::BitGen gen;
  absl::Duration full_min = absl::InfiniteDuration(), full_max = absl::ZeroDuration();
  absl::Duration equal_min = absl::InfiniteDuration();
  for (int i = 0; i < 10000; ++i) {
    const absl::Duration f = FullJitter(absl::Milliseconds(100), gen);
    const absl::Duration e = EqualJitter(absl::Milliseconds(100), gen);
    REQUIRE(f >= absl::ZeroDuration());
    REQUIRE(f <= absl::Milliseconds(100));
    REQUIRE(e >= absl::Milliseconds(50));
    REQUIRE(e <= absl::Milliseconds(100));
    full_min = std::min(full_min, f);
    full_max = std::max(full_max, f);
    equal_min = std::min(equal_min, e);
  }
  // Spread over the range, not stuck at one end.
  CHECK(full_min < absl::Milliseconds(5));
  CHECK(full_max > absl::Milliseconds(95));
  CHECK(equal_min < absl::Milliseconds(55));
  CHECK(FullJitter(absl::ZeroDuration(), gen) == absl::ZeroDuration());
  CHECK(EqualJitter(-absl::Seconds(1), gen) == absl::ZeroDuration());
}

// An object that counts its destructions, and whether it may be reused.
struct Pooled {
  explicit Pooled(int* destroyed, int id = 0) : destroyed(destroyed), id(id) {}
  ~Pooled() { ++*destroyed; }
  int* destroyed;
  int id;
  bool fit = true;
};

TEST_CASE("ObjectPool makes objects only when none is idle and keeps max_idle", "[internal]") {
  int made = 0, destroyed = 0;
  ObjectPool<Pooled> pool([&] { return std::make_unique<Pooled>(&destroyed, ++made); }, 1);
  {
    ObjectPool<Pooled>::Handle first = pool.Acquire();
    ObjectPool<Pooled>::Handle second = pool.Acquire();
    CHECK(made == 2);
  }  // given back: `second` first, kept; then `first`, destroyed at once
  CHECK(destroyed == 1);
  CHECK(pool.Acquire()->id == 2);
  CHECK(made == 2);
  pool.Clear();
  CHECK(destroyed == 2);
  CHECK(pool.TakeIdle() == nullptr);
}

TEST_CASE("ObjectPool drops unfit objects and surplus idle past surplus_ttl", "[internal]") {
  int destroyed = 0;
  std::size_t discarded = 0;
  ObjectPool<Pooled>::Options options;
  options.max_idle = 1;
  options.surplus_ttl = absl::Milliseconds(30);
  options.reusable = [](const Pooled& object) { return object.fit; };
  options.on_discard = [&](std::size_t n) { discarded += n; };
  ObjectPool<Pooled> pool(options);

  auto unfit = std::make_unique<Pooled>(&destroyed);
  unfit->fit = false;
  pool.Put(std::move(unfit));
  CHECK(destroyed == 1);
  CHECK(discarded == 1);

  // Three given back while max_idle is 1: the surplus stays for surplus_ttl, then goes.
  for (int id = 1; id <= 3; ++id) pool.Put(std::make_unique<Pooled>(&destroyed, id));
  CHECK(destroyed == 1);
  absl::SleepFor(absl::Milliseconds(40));
  std::unique_ptr<Pooled> taken = pool.TakeIdle();
  REQUIRE(taken != nullptr);
  CHECK(taken->id == 3);
  CHECK(destroyed == 3);  // ids 1 and 2, aged out
  CHECK(discarded == 3);

  // An idle object that became unfit is dropped on the way to a fit one.
  Pooled* watched = taken.get();
  pool.Put(std::make_unique<Pooled>(&destroyed, 4));
  pool.Put(std::move(taken));
  watched->fit = false;
  CHECK(pool.TakeIdle()->id == 4);
  CHECK(destroyed == 5);  // id 3 dropped; id 4 destroyed with the returned pointer
  CHECK(discarded == 4);
}

TEST_CASE("PercentEncode keeps what the predicate allows and writes the rest as %XX",
          "[internal]") {
  CHECK(PercentEncode("a-b.c_d~e", IsUrlUnreserved) == "a-b.c_d~e");
  CHECK(PercentEncode("a b/c?d", IsUrlUnreserved) == "a%20b%2Fc%3Fd");
  CHECK(PercentEncode(std::string("\x00\xff", 2), IsUrlUnreserved) == "%00%FF");
  CHECK(PercentEncode("", IsUrlUnreserved).empty());
  CHECK(PercentEncode("abc", [](unsigned char c) { return c != 'b'; }) == "a%62c");
  for (int c = 0; c < 256; ++c) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool mark = c == '-' || c == '.' || c == '_' || c == '~';
    REQUIRE(IsUrlUnreserved(static_cast<unsigned char>(c)) == (alnum || mark));
  }
}

TEST_CASE("a TaskGroup without a pool runs each job at once, on the calling thread", "[internal]") {
  std::vector<int> order;
  TaskGroup group(nullptr, 4);
  for (int i = 0; i < 5; ++i) {
    group.Add([&order, i] { order.push_back(i); });
    CHECK(order.size() == static_cast<std::size_t>(i + 1));  // already ran
  }
  group.Wait();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("a TaskGroup runs every job once, on the caller and on pool threads",
          "[internal][concurrency]") {
  WorkerPool pool(2);
  for (const bool leave_to_helpers : {false, true}) {
    CAPTURE(leave_to_helpers);
    std::vector<std::atomic<int>> runs(200);
    std::mutex mu;
    std::set<std::thread::id> threads;
    TaskGroup group(&pool, 2);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      group.Add([&, i] {
        ++runs[i];
        std::lock_guard<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
      });
    }
    if (leave_to_helpers) {
      group.WaitForHelpers();
    } else {
      group.Wait();
    }
    for (const std::atomic<int>& n : runs) CHECK(n == 1);
    CHECK(threads.size() >= 1);
    CHECK(threads.size() <= 3);  // the caller and at most two helpers
  }
}

TEST_CASE("groups of many threads share one pool, each waiting for its own jobs only",
          "[internal][concurrency]") {
  WorkerPool pool(2);
  std::atomic<bool> wrong{false};
  std::vector<std::thread> callers;
  for (int t = 0; t < 6; ++t) {
    callers.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        std::vector<int> done(16, 0);  // each written by one job, read after the wait
        TaskGroup group(&pool, 1 + t % 2);
        for (std::size_t i = 0; i < done.size(); ++i) group.Add([&done, i] { done[i] = 1; });
        if (round % 2 == 0) {
          group.Wait();
        } else {
          group.WaitForHelpers();
        }
        for (const int d : done) wrong = wrong || d != 1;
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  CHECK_FALSE(wrong);
}

TEST_CASE("a forked child runs a pool's jobs on its own thread and can destroy the pool",
          "[internal]") {
  auto* pool = new WorkerPool(2);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The pool's threads stayed in the parent: jobs must still run, here.
    int ran = 0;
    {
      TaskGroup group(pool, 2);
      for (int i = 0; i < 4; ++i) group.Add([&ran] { ++ran; });
      group.WaitForHelpers();
    }
    delete pool;  // must not wait for the parent's threads
    _exit(ran == 4 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  delete pool;
}

}  // namespace
}  // namespace chunkcache::internal
