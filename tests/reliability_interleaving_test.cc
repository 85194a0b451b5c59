// Deterministic interleavings (issue 15): one operation A runs on a thread and is frozen at one of
// its backend calls (before or after it) by a PausingBackend; a second operation B runs to
// completion, or until it is found waiting for A; A is released; a few follow-up reads run; then,
// with nothing in flight, the key is read three more times. Every pair of operations is run
// against every pause point of A, on every cache configuration (near cache on/off,
// stale-while-revalidate on/off, lease on/off) and from each starting state of the key.
//
// Every operation's start and end are ticks of one sequence counter, and every value offered
// (Put, or returned by a loader) is distinct, so the history can be checked as a register's:
//  - never-written: a read returns only bytes that were Put or loaded (and not before that began);
//  - older bytes: a read R may not return the value of a write W (absent for Invalidate) when a
//    write X began after W ended and ended before R began ("once an operation of this process
//    returned, no later read returns older bytes"; a NotFound after a completed Put with no
//    Invalidate since is one case);
//  - went back: a read may not return a value entirely older than what a read that ended before
//    it began returned;
//  - disagree: two reads with no write overlapping or between them return the same thing (after
//    everything settled: this cache before and after its near copies go stale, and another cache
//    without a near cache reading the backend);
//  - no read is counted corrupt (no faults are injected), no call fails.
// A load is a write of its value from the loader's call until the GetOrLoad that gave it (and the
// background refresh holding a copy of it) is done.

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "fixtures/pausing_backend.h"
#include "format/keys.h"
#include "test_util.h"

#if defined(__SANITIZE_THREAD__)
#define CHUNKCACHE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHUNKCACHE_TSAN 1
#endif
#endif
#ifndef CHUNKCACHE_TSAN
#define CHUNKCACHE_TSAN 0
#endif

namespace chunkcache {
namespace {

using testing::PausingBackend;
using Kind = PausingBackend::Kind;
using When = PausingBackend::When;

constexpr bool kTsan = CHUNKCACHE_TSAN != 0;
constexpr std::string_view kKey = "k";
constexpr std::string_view kPrefix = "cc:";
// How long B may run before it counts as waiting for A (single-flight, a lease): then A is
// released. Too short only turns a schedule into another legitimate one.
const absl::Duration kBlockedAfter = absl::Milliseconds(kTsan ? 100 : 30);
// Bounds on waits that only a wrong schedule or a hang exceeds.
const absl::Duration kPauseTimeout = absl::Seconds(5);
const absl::Duration kHangTimeout = absl::Seconds(15);

constexpr std::uint64_t kOpen = std::numeric_limits<std::uint64_t>::max();

// ---- History ---------------------------------------------------------------------------------

struct Write {
  std::string label;                 // "v0", "put-2", "load-1", "invalidate-1", "initial"
  std::optional<std::string> value;  // empty: the write makes the key absent
  std::uint64_t start = 0;
  std::uint64_t end = kOpen;  // kOpen until it is known to be over
  std::string by;
};

struct Read {
  std::string by;
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  absl::Status status;               // OK or NotFound expected
  std::optional<std::string> value;  // when OK
};

// How big the values are: several 128-byte chunks (reads and writes make every kind of backend
// call), or small enough to sit in the manifest (an inline entry: no chunks).
enum class Payload { kChunked, kInline };

// The JSON of a value: its label, and for a chunked value enough incompressible padding.
std::string MakeJson(std::string_view label, Payload payload = Payload::kChunked) {
  if (payload == Payload::kInline) return absl::StrFormat(R"({"v":"%s"})", std::string(label));
  std::mt19937_64 random(std::hash<std::string_view>{}(label));
  std::string pad;
  while (pad.size() < 480) absl::StrAppend(&pad, absl::Hex(random(), absl::kZeroPad16));
  return absl::StrFormat(R"({"v":"%s","pad":"%s"})", std::string(label), pad);
}

// Thread-safe record of one schedule's operations.
class History {
 public:
  History() {
    writes_.push_back({"initial", std::nullopt, 0, 0, "nobody (the key starts absent)"});
  }

  std::uint64_t Tick() { return seq_.fetch_add(1) + 1; }

  std::string NewLabel(std::string_view kind) {
    std::lock_guard<std::mutex> lock(mu_);
    return absl::StrCat(std::string(kind), "-", ++labels_);
  }

  std::size_t AddWrite(Write write) {
    std::lock_guard<std::mutex> lock(mu_);
    writes_.push_back(std::move(write));
    return writes_.size() - 1;
  }
  void EndWrite(std::size_t index, std::uint64_t end) {
    std::lock_guard<std::mutex> lock(mu_);
    writes_[index].end = end;
  }
  void AddRead(Read read) {
    std::lock_guard<std::mutex> lock(mu_);
    reads_.push_back(std::move(read));
  }
  void AddProblem(std::string problem) {
    std::lock_guard<std::mutex> lock(mu_);
    problems_.push_back(std::move(problem));
  }

  std::vector<Write> writes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_;
  }
  std::vector<Read> reads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reads_;
  }
  std::vector<std::string> problems() const {
    std::lock_guard<std::mutex> lock(mu_);
    return problems_;
  }

 private:
  std::atomic<std::uint64_t> seq_{0};
  mutable std::mutex mu_;
  int labels_ = 0;
  std::vector<Write> writes_;
  std::vector<Read> reads_;
  std::vector<std::string> problems_;
};

// ---- The checker -----------------------------------------------------------------------------

std::string Interval(std::uint64_t start, std::uint64_t end) {
  return end == kOpen ? absl::StrCat("[", start, ", open)")
                      : absl::StrCat("[", start, ", ", end, "]");
}

std::string Describe(const Write& w) {
  return absl::StrCat(w.label, " (", w.by, " ", Interval(w.start, w.end), ")");
}

std::string Describe(const Read& r) { return absl::StrCat(r.by, " ", Interval(r.start, r.end)); }

// What a read returned, by the label of the write it matches.
std::string Result(const Read& r, const std::vector<Write>& writes) {
  if (absl::IsNotFound(r.status)) return "NotFound";
  if (!r.status.ok()) return r.status.ToString();
  for (const Write& w : writes) {
    if (w.value == r.value) return w.label;
  }
  return absl::StrCat("unknown bytes \"", r.value->substr(0, 40), "...\"");
}

// The writes whose result `r` may have returned without breaking the "older bytes" rule; sets
// `why` to the first reason when there are none.
std::vector<std::size_t> Sources(const Read& r, const std::vector<Write>& writes,
                                 std::string* why) {
  std::vector<std::size_t> matching;
  for (std::size_t i = 0; i < writes.size(); ++i) {
    if (writes[i].value == r.value && writes[i].start < r.end) matching.push_back(i);
  }
  if (matching.empty()) {
    *why = r.value.has_value() ? "never-written: returned bytes that were never Put or loaded"
                               : "never-written: NotFound, and nothing ever made the key absent";
    return {};
  }
  std::vector<std::size_t> sources;
  for (std::size_t i : matching) {
    const Write& w = writes[i];
    const Write* newer = nullptr;
    for (const Write& x : writes) {
      if (w.end != kOpen && x.start > w.end && x.end < r.start) {
        newer = &x;
        break;
      }
    }
    if (newer == nullptr) {
      sources.push_back(i);
    } else if (why->empty()) {
      *why = absl::StrCat("older bytes: returned ", Describe(w), ", but ", Describe(*newer),
                          " began after it and returned before this read began");
    }
  }
  return sources;
}

// Violations of the rules above in one history, each a line naming the reads and writes.
std::vector<std::string> CheckHistory(const std::vector<Write>& writes,
                                      const std::vector<Read>& reads) {
  std::vector<std::string> violations;
  std::vector<std::vector<std::size_t>> sources(reads.size());
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const Read& r = reads[i];
    if (!r.status.ok() && !absl::IsNotFound(r.status)) {
      violations.push_back(absl::StrCat(Describe(r), " failed: ", r.status.ToString()));
      continue;
    }
    std::string why;
    sources[i] = Sources(r, writes, &why);
    if (sources[i].empty()) {
      violations.push_back(absl::StrCat(Describe(r), " returned ", Result(r, writes), " — ", why));
    }
  }
  for (std::size_t i = 0; i < reads.size(); ++i) {
    for (std::size_t j = 0; j < reads.size(); ++j) {
      const Read& r1 = reads[i];
      const Read& r2 = reads[j];
      if (i == j || sources[i].empty() || sources[j].empty()) continue;
      if (r1.end < r2.start) {  // r2 began after r1 returned: nothing older than what r1 saw
        const bool went_back =
            std::all_of(sources[i].begin(), sources[i].end(), [&](std::size_t s1) {
              return std::all_of(sources[j].begin(), sources[j].end(),
                                 [&](std::size_t s2) { return writes[s2].end < writes[s1].start; });
            });
        if (went_back) {
          violations.push_back(absl::StrCat("went back: ", Describe(r2), " returned ",
                                            Result(r2, writes), ", older than ", Result(r1, writes),
                                            " that ", Describe(r1), " had returned"));
        }
      }
      // No write overlaps or lies between the two reads: they see the same register value.
      if (i < j && r1.value != r2.value) {
        const std::uint64_t from = std::min(r1.start, r2.start);
        const std::uint64_t to = std::max(r1.end, r2.end);
        const bool write_between = std::any_of(writes.begin(), writes.end(), [&](const Write& w) {
          return w.end > from && w.start < to;
        });
        if (!write_between) {
          violations.push_back(absl::StrCat("disagree: ", Describe(r1), " returned ",
                                            Result(r1, writes), " but ", Describe(r2), " returned ",
                                            Result(r2, writes), " with no write between them"));
        }
      }
    }
  }
  return violations;
}

// ---- Operations ------------------------------------------------------------------------------

enum class Op { kGet, kGetOrLoad, kRefresh, kPut, kInvalidate };

const char* OpName(Op op) {
  switch (op) {
    case Op::kGet:
      return "Get";
    case Op::kGetOrLoad:
      return "GetOrLoad";
    case Op::kRefresh:
      return "Refresh";
    case Op::kPut:
      return "Put";
    case Op::kInvalidate:
      return "Invalidate";
  }
  return "?";
}

// Which test thread makes a backend call; the cache's own threads (refresh) are kCache.
enum class Role { kCache, kMain, kA, kB };
thread_local Role tls_role = Role::kCache;

// Completion of one operation: it returned, and no copy of its loader is left in the cache (a
// background refresh holding one is over).
class Completion {
 public:
  explicit Completion(bool has_loader) : loader_alive_(has_loader) {}

  void Returned() {
    Set([&] { returned_ = true; });
  }
  void LoaderGone() {
    Set([&] { loader_alive_ = false; });
  }

  bool Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return returned_ && !loader_alive_; });
  }

 private:
  template <typename F>
  void Set(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    f();
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool returned_ = false;
  bool loader_alive_;
};

// Shared by every copy of one GetOrLoad's loader: each call is a write of a new value, which ends
// when the last copy is destroyed (the GetOrLoad returned and no refresh holds one).
class LoaderToken {
 public:
  LoaderToken(History* history, Payload payload, std::shared_ptr<Completion> completion,
              std::string by)
      : history_(history),
        payload_(payload),
        completion_(std::move(completion)),
        by_(std::move(by)) {}
  ~LoaderToken() {
    const std::uint64_t end = history_->Tick();
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t index : writes_) history_->EndWrite(index, end);
    completion_->LoaderGone();
  }
  LoaderToken(const LoaderToken&) = delete;
  LoaderToken& operator=(const LoaderToken&) = delete;

  absl::StatusOr<std::string> Load() {
    const std::string label = history_->NewLabel("load");
    std::string json = MakeJson(label, payload_);
    const std::size_t index =
        history_->AddWrite({label, json, history_->Tick(), kOpen, absl::StrCat("loader of ", by_)});
    std::lock_guard<std::mutex> lock(mu_);
    writes_.push_back(index);
    return json;
  }

 private:
  History* const history_;
  const Payload payload_;
  const std::shared_ptr<Completion> completion_;
  const std::string by_;
  std::mutex mu_;
  std::vector<std::size_t> writes_;
};

using testing::FakeClock;

struct Config {
  bool l1 = false;
  bool swr = false;
  bool lease = false;
};

std::string Describe(const Config& c) {
  return absl::StrCat("L1 ", c.l1 ? "on" : "off", ", SWR ", c.swr ? "on" : "off", ", lease ",
                      c.lease ? "on" : "off");
}

// The key before A starts: absent; present (stored, not in the near cache); warm (stored and in
// the near cache, due for revalidation). With SWR on, a present entry is stale.
enum class State { kAbsent, kPresent, kWarm };

const char* StateName(State s) {
  switch (s) {
    case State::kAbsent:
      return "absent";
    case State::kPresent:
      return "present";
    case State::kWarm:
      return "warm";
  }
  return "?";
}

const absl::Duration kSoftTtl = absl::Minutes(1);
const absl::Duration kL1FreshFor = absl::Seconds(1);
// Between the setup and A: past soft_ttl (entries are stale with SWR on) and l1_fresh_for.
const absl::Duration kSetupAge = kSoftTtl + absl::Seconds(1);

CacheOptions OptionsFor(const Config& c, const FakeClock* clock) {
  CacheOptions o;
  o.key_prefix = std::string(kPrefix);
  o.chunk_size = kMinChunkSize;
  o.ttl = absl::Minutes(10);
  o.l1_capacity_bytes = c.l1 ? std::size_t{1} << 20 : 0;
  o.l1_fresh_for = kL1FreshFor;
  o.soft_ttl = c.swr ? kSoftTtl : absl::ZeroDuration();
  o.lease_ttl = c.lease ? absl::Seconds(5) : absl::ZeroDuration();
  o.lease_poll_initial = absl::Milliseconds(1);
  o.lease_poll_max = absl::Milliseconds(4);
  o.clock = [clock] { return clock->Now(); };
  return o;
}

struct PausePoint {
  Kind kind;
  int nth;
  When when;
  std::string target;  // which stored key the call is for: manifest, chunks or lease
};

std::string Describe(const PausePoint& p) {
  return absl::StrCat(p.when == When::kBefore ? "before " : "after ",
                      PausingBackend::KindName(p.kind), "#", p.nth, " (", p.target, ")");
}

struct Schedule {
  Op a;
  std::optional<Op> b;  // empty: A alone
  State state;
  Config config;
  Payload payload;
  std::optional<PausePoint> pause;  // empty: A is not paused
};

std::string Describe(const Schedule& s) {
  std::string text = absl::StrCat("A=", OpName(s.a));
  if (s.pause.has_value()) absl::StrAppend(&text, " paused ", Describe(*s.pause));
  absl::StrAppend(&text, " | B=", s.b.has_value() ? OpName(*s.b) : "none", " | key ",
                  StateName(s.state), " | ", Describe(s.config),
                  s.payload == Payload::kInline ? " | inline" : " | chunked");
  return text;
}

struct Outcome {
  std::vector<std::string> violations;
  std::vector<PausingBackend::Call> a_calls;  // A's backend calls, when recorded
  bool b_blocked = false;
};

// Everything one schedule uses. Threads hold it by shared_ptr, so that a hung schedule can be
// abandoned (leaked) instead of destroyed under them.
struct Env {
  Env(const Config& c, Payload p)
      : config(c),
        payload(p),
        backend(std::make_shared<PausingBackend>(
            NewMemoryBackend({.capacity_bytes = 4 << 20, .shards = 1}))),
        stored(kPrefix, kKey),
        cache(std::make_unique<ChunkedCache>(backend, OptionsFor(c, &clock))) {}

  const Config config;
  const Payload payload;
  FakeClock clock;
  History history;  // outlives the cache: loader copies in it refer to it
  std::shared_ptr<PausingBackend> backend;
  const internal::StoredKeys stored;
  std::unique_ptr<ChunkedCache> cache;
};

Read MakeRead(std::string by, std::uint64_t start, std::uint64_t end,
              const absl::StatusOr<Bytes>& result) {
  Read read{std::move(by), start, end, result.status(), std::nullopt};
  if (result.ok()) read.value = **result;
  return read;
}

// Runs `op` on the calling thread as `role`; `label` names the value of a Put.
void RunOp(Env& env, Op op, Role role, const std::string& by,
           const std::shared_ptr<Completion>& done, std::string label = "") {
  tls_role = role;
  History& h = env.history;
  switch (op) {
    case Op::kGet: {
      const std::uint64_t start = h.Tick();
      absl::StatusOr<Bytes> got = env.cache->Get(kKey);
      h.AddRead(MakeRead(by, start, h.Tick(), got));
      break;
    }
    case Op::kGetOrLoad:
    case Op::kRefresh: {
      const std::uint64_t start = h.Tick();
      absl::StatusOr<Bytes> got = env.cache->GetOrLoad(
          kKey, [token = std::make_shared<LoaderToken>(&h, env.payload, done, by)] {
            return token->Load();
          });
      h.AddRead(MakeRead(by, start, h.Tick(), got));
      break;
    }
    case Op::kPut: {
      if (label.empty()) label = h.NewLabel("put");
      std::string json = MakeJson(label, env.payload);
      const std::uint64_t start = h.Tick();
      const absl::Status status = env.cache->Put(kKey, json);
      const std::uint64_t end = h.Tick();
      // A failed Put may still have taken effect: it stays open.
      h.AddWrite({label, std::move(json), start, status.ok() ? end : kOpen, by});
      if (!status.ok()) h.AddProblem(absl::StrCat(by, " failed: ", status.ToString()));
      break;
    }
    case Op::kInvalidate: {
      const std::uint64_t start = h.Tick();
      const absl::Status status = env.cache->Invalidate(kKey);
      const std::uint64_t end = h.Tick();
      h.AddWrite({h.NewLabel("invalidate"), std::nullopt, start, status.ok() ? end : kOpen, by});
      if (!status.ok()) h.AddProblem(absl::StrCat(by, " failed: ", status.ToString()));
      break;
    }
  }
  done->Returned();
}

bool HasLoader(Op op) { return op == Op::kGetOrLoad || op == Op::kRefresh; }

// Runs `op` on a thread of its own as `role`.
std::thread Start(const std::shared_ptr<Env>& env, Op op, Role role, std::string by,
                  std::shared_ptr<Completion> done) {
  return std::thread([env, op, role, by = std::move(by), done = std::move(done)] {
    RunOp(*env, op, role, by, done);
  });
}

// A's backend calls: its own thread's, or the cache's refresh thread's for a refresh; only those
// of the key under test.
PausingBackend::Filter CallsOf(Op a, const internal::StoredKeys& stored) {
  const Role role = a == Op::kRefresh ? Role::kCache : Role::kA;
  const std::string prefix = stored.manifest();
  return [role, prefix](const PausingBackend::Call& call) {
    return tls_role == role &&
           std::any_of(call.keys.begin(), call.keys.end(), [&](const std::string& key) {
             return std::string_view(key).substr(0, prefix.size()) == prefix;
           });
  };
}

std::string Target(const internal::StoredKeys& stored, const PausingBackend::Call& call) {
  if (call.keys.empty()) return "no key";
  if (call.keys[0] == stored.manifest()) return "manifest";
  if (call.keys[0] == stored.Lease()) return "lease";
  return absl::StrCat(call.keys.size(), " chunks");
}

Outcome RunSchedule(const Schedule& s, bool record) {
  Outcome outcome;
  auto env = std::make_shared<Env>(s.config, s.payload);
  History& h = env->history;
  tls_role = Role::kMain;
  auto finished = std::make_shared<Completion>(false);

  // Setup: v0 stored (and read into the near cache), then time passes.
  if (s.state != State::kAbsent) {
    RunOp(*env, Op::kPut, Role::kMain, "setup Put", std::make_shared<Completion>(false), "v0");
  }
  if (s.state == State::kWarm) {
    RunOp(*env, Op::kGet, Role::kMain, "setup Get", std::make_shared<Completion>(false));
  }
  env->clock.Advance(kSetupAge);
  tls_role = Role::kMain;

  if (record) env->backend->Record(CallsOf(s.a, env->stored));
  if (s.pause.has_value()) {
    env->backend->Arm({.kind = s.pause->kind,
                       .nth = s.pause->nth,
                       .when = s.pause->when,
                       .filter = CallsOf(s.a, env->stored)});
  }
  auto a_done = std::make_shared<Completion>(HasLoader(s.a));
  std::thread a = Start(env, s.a, Role::kA, absl::StrCat("A ", OpName(s.a)), a_done);
  std::thread b;
  auto b_done = std::make_shared<Completion>(s.b.has_value() && HasLoader(*s.b));
  if (!s.b.has_value()) b_done->Returned();

  // Gives up on the schedule: the threads may still use the environment, so it is leaked.
  auto abandon = [&](std::string why) {
    env->backend->Release();
    outcome.violations.push_back(std::move(why));
    a.detach();
    if (b.joinable()) b.detach();
    new std::shared_ptr<Env>(env);  // NOLINT: deliberately leaked
    return outcome;
  };

  if (s.pause.has_value()) {
    // Wait for A to reach the pause point (or to finish without reaching it).
    const absl::Time give_up = absl::Now() + kPauseTimeout;
    while (!env->backend->WaitUntilPaused(absl::Milliseconds(5))) {
      if (a_done->Wait(absl::ZeroDuration()) || absl::Now() > give_up) break;
    }
    if (!env->backend->paused()) {
      if (!a_done->Wait(kHangTimeout)) return abandon("harness: A neither paused nor finished");
      a.join();
      outcome.violations.push_back(
          absl::StrCat("harness: A finished without reaching its pause point"));
      return outcome;
    }
    if (s.b.has_value()) {
      b = Start(env, *s.b, Role::kB, absl::StrCat("B ", OpName(*s.b)), b_done);
      outcome.b_blocked = !b_done->Wait(kBlockedAfter);
    }
    env->backend->Release();
  }
  if (!a_done->Wait(kHangTimeout)) return abandon("hang: A did not finish");
  if (!b_done->Wait(kHangTimeout)) return abandon("hang: B did not finish");
  a.join();
  if (b.joinable()) b.join();
  if (record) {
    outcome.a_calls = env->backend->TakeRecorded();
    env->backend->Record(nullptr);
  }

  // Follow-up reads, then the settled reads.
  RunOp(*env, Op::kGet, Role::kMain, "follow-up Get #1", finished);
  auto f2_done = std::make_shared<Completion>(true);
  RunOp(*env, Op::kGetOrLoad, Role::kMain, "follow-up GetOrLoad #2", f2_done);
  if (!f2_done->Wait(kHangTimeout)) return abandon("hang: the follow-up GetOrLoad's refresh");
  RunOp(*env, Op::kGet, Role::kMain, "follow-up Get #3", finished);
  RunOp(*env, Op::kGet, Role::kMain, "settled Get #4", finished);
  env->clock.Advance(2 * kL1FreshFor);  // near copies must be revalidated now
  RunOp(*env, Op::kGet, Role::kMain, "settled Get #5 (near copy stale)", finished);
  {
    Config plain;  // another process: no near cache, no lease, no SWR
    ChunkedCache other(env->backend, OptionsFor(plain, &env->clock));
    const std::uint64_t start = h.Tick();
    absl::StatusOr<Bytes> got = other.Get(kKey);
    h.AddRead(MakeRead("settled Get #6 (another cache, no L1)", start, h.Tick(), got));
    if (other.Stats().corrupt_reads != 0) {
      outcome.violations.push_back(
          "corrupt: another cache reading the backend counted a corrupt "
          "read");
    }
  }

  for (std::string& v : CheckHistory(h.writes(), h.reads())) outcome.violations.push_back(v);
  for (std::string& p : h.problems()) outcome.violations.push_back(p);
  if (const std::uint64_t corrupt = env->cache->Stats().corrupt_reads; corrupt != 0) {
    outcome.violations.push_back(absl::StrCat("corrupt: ", corrupt, " corrupt reads"));
  }
  if (!outcome.violations.empty()) {
    std::vector<std::string> ops;
    for (const Write& w : h.writes()) ops.push_back(absl::StrCat("  write ", Describe(w)));
    for (const Read& r : h.reads()) {
      ops.push_back(absl::StrCat("  read  ", Describe(r), " -> ", Result(r, h.writes())));
    }
    outcome.violations.push_back(absl::StrCat("history:\n", absl::StrJoin(ops, "\n")));
  }
  return outcome;
}

// ---- The table -------------------------------------------------------------------------------

std::vector<Config> Configs() {
  std::vector<Config> configs;
  for (bool l1 : {false, true}) {
    for (bool swr : {false, true}) {
      for (bool lease : {false, true}) configs.push_back({l1, swr, lease});
    }
  }
  return configs;
}

// The starting states in which `a` is the operation it names: a GetOrLoad leads a load only on
// an absent key (on a present one it is a read, and with SWR a refresh: both covered by the other
// operations), a refresh needs a stale entry; warm needs a near cache.
std::vector<State> StatesFor(Op a, const Config& c) {
  std::vector<State> states;
  for (State s : {State::kAbsent, State::kPresent, State::kWarm}) {
    if (s == State::kWarm && !c.l1) continue;
    if (a == Op::kRefresh && (!c.swr || s == State::kAbsent)) continue;
    if (a == Op::kGetOrLoad && c.swr && s != State::kAbsent) continue;
    states.push_back(s);
  }
  return states;
}

// B: a refresh is what a GetOrLoad of a stale entry starts (B waits for it), so the GetOrLoad B
// covers it.
constexpr Op kOpsB[] = {Op::kGet, Op::kGetOrLoad, Op::kPut, Op::kInvalidate};

struct Failure {
  std::string schedule;
  std::string details;
};

struct TableResult {
  int schedules = 0;
  int blocked = 0;
  std::vector<Failure> failures;  // one per failing schedule
};

// At most a few violations of a schedule, then its history.
std::string Details(const std::vector<std::string>& violations) {
  constexpr std::size_t kShown = 4;
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < violations.size(); ++i) {
    const bool history = absl::StartsWith(violations[i], "history:");
    if (i < kShown || history) lines.push_back(violations[i]);
    if (i == kShown && !history) lines.push_back("...");
  }
  return absl::StrJoin(lines, "\n");
}

// The payloads a table runs: both, except under ThreadSanitizer (ten times slower) where the
// inline one, the simpler path, is left out.
std::vector<Payload> Payloads() {
  if (kTsan) return {Payload::kChunked};
  return {Payload::kChunked, Payload::kInline};
}

// Runs A alone to learn its backend calls, then every B against every pause point of A.
TableResult RunTable(Op a) {
  TableResult result;
  for (Payload payload : Payloads()) {
    for (const Config& config : Configs()) {
      for (State state : StatesFor(a, config)) {
        Schedule solo{a, std::nullopt, state, config, payload, std::nullopt};
        Outcome alone = RunSchedule(solo, /*record=*/true);
        ++result.schedules;
        if (!alone.violations.empty()) {
          result.failures.push_back({Describe(solo), Details(alone.violations)});
        }
        const internal::StoredKeys names(kPrefix, kKey);
        std::vector<PausePoint> points;
        int nth[PausingBackend::kKinds] = {};
        for (const PausingBackend::Call& call : alone.a_calls) {
          const int n = ++nth[static_cast<std::size_t>(call.kind)];
          for (When when : {When::kBefore, When::kAfter}) {
            points.push_back({call.kind, n, when, Target(names, call)});
          }
        }
        if (points.empty()) {
          result.failures.push_back({Describe(solo), "harness: A made no backend call"});
        }
        for (const PausePoint& point : points) {
          for (Op b : kOpsB) {
            const Schedule s{a, b, state, config, payload, point};
            const Outcome o = RunSchedule(s, /*record=*/false);
            ++result.schedules;
            if (o.b_blocked) ++result.blocked;
            if (!o.violations.empty()) {
              result.failures.push_back(
                  {absl::StrCat(Describe(s), o.b_blocked ? " | B waited" : ""),
                   Details(o.violations)});
            }
          }
        }
      }
    }
  }
  return result;
}

void CheckTable(Op a) {
  const auto start = std::chrono::steady_clock::now();
  const TableResult result = RunTable(a);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(absl::StrFormat("%d schedules (%d with B waiting for A) in %.1f s; %d failed",
                       result.schedules, result.blocked, seconds, result.failures.size()));
  CHECK(result.schedules > 0);
  // In detail: the first few, or all of them with CHUNKCACHE_INTERLEAVING_ALL set; then the list.
  const std::size_t detailed =
      std::getenv("CHUNKCACHE_INTERLEAVING_ALL") != nullptr ? result.failures.size() : 10;
  std::vector<std::string> list;
  for (std::size_t i = 0; i < result.failures.size(); ++i) {
    const Failure& f = result.failures[i];
    if (i < detailed) FAIL_CHECK(f.schedule << "\n" << f.details);
    list.push_back(f.schedule);
  }
  INFO("failing schedules:\n" << absl::StrJoin(list, "\n"));
  CHECK(result.failures.empty());
}

// ---- Self-tests ------------------------------------------------------------------------------

TEST_CASE("the pausing backend holds the nth matching call before or after forwarding it",
          "[concurrency]") {
  auto memory = NewMemoryBackend();
  PausingBackend backend(memory);
  const KeyValue item{"x", "1"};
  REQUIRE(backend.MultiSet({&item, 1}, absl::Minutes(1)).ok());

  for (When when : {When::kBefore, When::kAfter}) {
    backend.Arm({.kind = Kind::kDelete,
                 .nth = 2,
                 .when = when,
                 .filter = PausingBackend::AnyKey([](std::string_view k) { return k == "x"; })});
    const std::string_view other = "y", x = "x";
    REQUIRE(backend.Delete({&other, 1}).ok());  // does not match the filter
    REQUIRE(backend.Delete({&other, 1}).ok());
    REQUIRE(backend.MultiSet({&item, 1}, absl::Minutes(1)).ok());
    REQUIRE(backend.Delete({&other, 1}).ok());
    std::atomic<bool> returned{false};
    absl::Status first_status, second_status;  // Catch assertions stay on the main thread
    std::thread first([&] { first_status = backend.Delete({&x, 1}); });  // the 1st match
    first.join();
    CHECK(first_status.ok());
    REQUIRE(backend.MultiSet({&item, 1}, absl::Minutes(1)).ok());
    std::thread second([&] {
      second_status = backend.Delete({&x, 1});  // the 2nd: held
      returned = true;
    });
    REQUIRE(backend.WaitUntilPaused(absl::Seconds(5)));
    CHECK(backend.reached());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_FALSE(returned);
    // Before: the item is still there; after: it is gone, but the caller has not returned.
    const std::string_view keys[] = {"x"};
    const bool present = (*memory->MultiGet(keys))[0].has_value();
    CHECK(present == (when == When::kBefore));
    backend.Release();
    second.join();
    CHECK(second_status.ok());
    CHECK(returned);
    CHECK_FALSE((*memory->MultiGet(keys))[0].has_value());
  }
  CHECK(backend.calls(Kind::kDelete) == 10);
  CHECK(backend.calls(Kind::kMultiSet) == 5);
  CHECK_FALSE(backend.WaitUntilPaused(absl::Milliseconds(10)));  // disarmed
}

TEST_CASE("the interleaving checker flags never-written bytes, older bytes and disagreements") {
  const std::string v1 = MakeJson("v1"), v2 = MakeJson("v2");
  const Write initial{"initial", std::nullopt, 0, 0, "nobody"};
  const Write put1{"v1", v1, 1, 2, "Put"};
  const Write put2{"v2", v2, 3, 4, "Put"};
  const Write invalidate{"inv", std::nullopt, 5, 6, "Invalidate"};

  // Clean: reads during and after the writes return what a register could.
  CHECK(CheckHistory({initial, put1, put2},
                     {{"r", 2, 5, absl::OkStatus(), v1}, {"r", 5, 6, absl::OkStatus(), v2}})
            .empty());
  CHECK(CheckHistory({initial, put1, put2, invalidate},
                     {{"r", 4, 7, absl::OkStatus(), v2}, {"r", 7, 8, absl::NotFoundError(""), {}}})
            .empty());

  auto only = [](const std::vector<std::string>& violations, std::string_view rule) {
    return !violations.empty() &&
           std::all_of(violations.begin(), violations.end(),
                       [&](const std::string& v) { return v.find(rule) != std::string::npos; });
  };
  // Bytes nobody wrote.
  CHECK(only(CheckHistory({initial, put1}, {{"r", 3, 4, absl::OkStatus(), MakeJson("x")}}),
             "never-written"));
  // v1 after Put(v2) returned; NotFound after a Put returned; v2 after Invalidate returned.
  CHECK(only(CheckHistory({initial, put1, put2}, {{"r", 5, 6, absl::OkStatus(), v1}}),
             "older bytes"));
  CHECK(only(CheckHistory({initial, put1}, {{"r", 3, 4, absl::NotFoundError(""), {}}}),
             "older bytes"));
  CHECK(only(CheckHistory({initial, put1, put2, invalidate}, {{"r", 7, 8, absl::OkStatus(), v2}}),
             "older bytes"));
  // A read overlapping Put(v2) saw v2; a later one overlapping nothing new returns v1.
  const Write slow_put2{"v2", v2, 3, 20, "Put"};
  CHECK(only(CheckHistory({initial, put1, slow_put2},
                          {{"r", 4, 5, absl::OkStatus(), v2}, {"r", 6, 7, absl::OkStatus(), v1}}),
             "went back"));
  // Two reads with no write around them disagree (both values were concurrent before).
  const Write load{"load", MakeJson("load"), 1, 10, "loader"};
  const Write put3{"v3", MakeJson("v3"), 2, 9, "Put"};
  CHECK(only(CheckHistory({initial, load, put3}, {{"r", 11, 12, absl::OkStatus(), *load.value},
                                                  {"r", 13, 14, absl::OkStatus(), *put3.value}}),
             "disagree"));
}

// ---- The table, by operation A -----------------------------------------------------------------

TEST_CASE("interleavings: a Get paused at each of its backend calls", "[concurrency]") {
  CheckTable(Op::kGet);
}

TEST_CASE("interleavings: a GetOrLoad leader paused at each of its backend calls",
          "[concurrency]") {
  CheckTable(Op::kGetOrLoad);
}

TEST_CASE("interleavings: a background refresh paused at each of its backend calls",
          "[concurrency]") {
  CheckTable(Op::kRefresh);
}

TEST_CASE("interleavings: a Put paused at each of its backend calls", "[concurrency]") {
  CheckTable(Op::kPut);
}

TEST_CASE("interleavings: an Invalidate paused at each of its backend calls", "[concurrency]") {
  CheckTable(Op::kInvalidate);
}

}  // namespace
}  // namespace chunkcache
