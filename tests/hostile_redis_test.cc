// The Redis backend against a hostile server (tests/fixtures/hostile_redis.h): wrong reply types,
// truncations, error replies, huge length claims, redirect loops, slow and silent servers, and
// replies the client never asked for. Whatever the server does, a call must end with a clear
// status within its timeout, with bounded memory, and the backend must serve the next good
// command; no reply may ever be taken for another command's.
//
// The status each fault maps to (include/chunkcache/redis_backend.h):
//   wrong reply type, unknown -ERR/-WRONGTYPE            → Internal
//   truncated reply then close/reset, no reply then close → Unavailable
//   a reply hiredis cannot parse (unknown type byte, length out of range) → Unavailable
//   -LOADING -READONLY -BUSY -TRYAGAIN -CLUSTERDOWN -MASTERDOWN → Unavailable
//   -NOAUTH                                              → PermissionDenied
//   -OOM                                                 → ResourceExhausted
//   a reply longer than the values asked for can be (1 GB bulk claim with data flowing, endless
//   status line), an array claiming more elements than keys asked → ResourceExhausted
//   a claim, a truncated reply or a drip that then stalls, no answer at all → DeadlineExceeded
//   MOVED/ASK to itself forever                          → Unavailable (too many redirects)

#include "fixtures/hostile_redis.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "chunkcache/backend.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "format/keys.h"

namespace chunkcache {
namespace {

using namespace std::chrono_literals;
using testing::HostileRedisOptions;
using testing::HostileRedisServer;
using testing::RedisRequest;
using testing::RedisResponse;
using testing::RespArray;
using testing::RespBulk;
using testing::RespError;
using testing::RespInteger;
using testing::RespNil;
using testing::RespStatus;

constexpr absl::Duration kCommandTimeout = absl::Milliseconds(300);
// Slack over the timeout for a call to return: the CI machine has 2 busy cores.
constexpr absl::Duration kMargin = absl::Milliseconds(700);
// Peak RSS growth allowed during one hostile call: a reply is bounded by max_item_size (1 MiB
// here) per key asked, so anything near the claims (1 GB, 5 GB of array pointers) fails this.
constexpr std::size_t kRssGrowthBoundKb = 32 << 10;

// ---- Memory -------------------------------------------------------------------------------------

// A "Vm..." field of /proc/self/status in kB, or 0.
std::size_t ProcStatusKb(std::string_view field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, std::string(field) + ":")) {
      return std::stoul(line.substr(field.size() + 1));
    }
  }
  return 0;
}

// Resets the peak RSS (VmHWM) to the current RSS, so VmHWM afterwards is the peak of what follows.
// Without it (an old kernel) the peak is the process's, which still bounds the growth.
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// ---- The table ----------------------------------------------------------------------------------

enum class Call { kMultiGet, kMultiSet, kDelete, kSetIfAbsent };

// The command each call sends (what a fault is injected on).
const char* CommandOf(Call call) {
  switch (call) {
    case Call::kMultiGet:
      return "MGET";
    case Call::kMultiSet:
    case Call::kSetIfAbsent:
      return "SET";
    case Call::kDelete:
      return "DEL";
  }
  return "";
}

absl::Status RunCall(Backend& backend, Call call) {
  const std::string_view keys[] = {"{k}a", "{k}b"};
  switch (call) {
    case Call::kMultiGet:
      return backend.MultiGet(keys).status();
    case Call::kMultiSet:
      return backend.MultiSet({{"{k}a", "value"}}, absl::Minutes(1));
    case Call::kDelete:
      return backend.Delete(keys);
    case Call::kSetIfAbsent:
      return backend.SetIfAbsent("{k}lease", "token", absl::Minutes(1)).status();
  }
  return absl::InternalError("unknown call");
}

// Where the fake server stands: a plain Redis; a cluster node (it answers CLUSTER SLOTS, naming
// itself for every slot) with a backend not told about the cluster; or with a cluster backend.
enum class Topology { kSingle, kClusterNode, kCluster };

using Respond = std::function<RedisResponse(HostileRedisServer&, const RedisRequest&)>;

Respond Reply(std::string bytes) {
  return [bytes](HostileRedisServer&, const RedisRequest&) { return RedisResponse().Send(bytes); };
}
Respond ReplyThen(std::string bytes, RedisResponse (*then)(RedisResponse&)) {
  return [bytes, then](HostileRedisServer&, const RedisRequest&) {
    RedisResponse response;
    response.Send(bytes);
    return then(response);
  };
}
RedisResponse Close(RedisResponse& r) { return r.Close(); }
RedisResponse Reset(RedisResponse& r) { return r.Reset(); }
RedisResponse Hang(RedisResponse& r) { return r.Hang(); }
RedisResponse Endless(RedisResponse& r) { return r.Endless("x"); }

struct Scenario {
  std::string name;
  Call call;
  Respond respond;
  absl::StatusCode expected;
  Topology topology = Topology::kSingle;
};

std::string Slot(const RedisRequest& request) {
  return std::to_string(request.args.size() > 1 ? RedisClusterSlot(request.args[1]) : 0);
}

const std::vector<Scenario>& Scenarios() {
  using Code = absl::StatusCode;
  static const std::vector<Scenario> scenarios = {
      // Wrong reply types.
      {"MGET answered with an integer", Call::kMultiGet, Reply(RespInteger(1)), Code::kInternal},
      {"MGET answered with a status", Call::kMultiGet, Reply(RespStatus("OK")), Code::kInternal},
      {"MGET answered with a bulk string, as GET is", Call::kMultiGet, Reply(RespBulk("x")),
       Code::kInternal},
      {"MGET answered with an array holding an integer", Call::kMultiGet,
       Reply(RespArray({RespInteger(5), RespNil()})), Code::kInternal},
      {"MGET answered with an array holding an array", Call::kMultiGet,
       Reply(RespArray({RespArray({RespBulk("a")}), RespNil()})), Code::kInternal},
      {"MGET answered with fewer values than keys", Call::kMultiGet, Reply(RespArray({RespNil()})),
       Code::kInternal},
      {"MGET answered with a nil array", Call::kMultiGet, Reply("*-1\r\n"), Code::kInternal},
      {"SET answered with an integer", Call::kMultiSet, Reply(RespInteger(0)), Code::kInternal},
      {"SET answered with a bulk string", Call::kMultiSet, Reply(RespBulk("OK")), Code::kInternal},
      {"DEL answered with a status", Call::kDelete, Reply(RespStatus("OK")), Code::kInternal},
      {"SET NX answered with an integer", Call::kSetIfAbsent, Reply(RespInteger(1)),
       Code::kInternal},
      {"MGET answered with -WRONGTYPE", Call::kMultiGet,
       Reply(RespError("WRONGTYPE Operation against a key holding the wrong kind of value")),
       Code::kInternal},
      {"MGET answered with an unknown -ERR", Call::kMultiGet, Reply(RespError("ERR no")),
       Code::kInternal},
      {"MGET answered with a reply of an unknown type", Call::kMultiGet, Reply("!5\r\nwhat?\r\n"),
       Code::kUnavailable},

      // Truncations.
      {"MGET reply cut inside a value, then close", Call::kMultiGet,
       ReplyThen("*2\r\n$10\r\nabc", Close), Code::kUnavailable},
      {"MGET reply cut after the array header, then close", Call::kMultiGet,
       ReplyThen("*2\r\n", Close), Code::kUnavailable},
      {"MGET: close without a reply", Call::kMultiGet, ReplyThen("", Close), Code::kUnavailable},
      {"MGET reply cut, then reset", Call::kMultiGet, ReplyThen("*2\r\n$-1\r\n$1", Reset),
       Code::kUnavailable},
      {"SET reply cut in the status, then close", Call::kMultiSet, ReplyThen("+O", Close),
       Code::kUnavailable},
      {"SET NX reply cut, then reset", Call::kSetIfAbsent, ReplyThen("+O", Reset),
       Code::kUnavailable},
      {"DEL reply cut, then close", Call::kDelete, ReplyThen(":", Close), Code::kUnavailable},
      {"MGET reply cut inside a value, then silence", Call::kMultiGet,
       ReplyThen("*2\r\n$10\r\nabc", Hang), Code::kDeadlineExceeded},

      // Error replies.
      {"MGET: -LOADING", Call::kMultiGet,
       Reply(RespError("LOADING Redis is loading the dataset in memory")), Code::kUnavailable},
      {"SET: -READONLY", Call::kMultiSet,
       Reply(RespError("READONLY You can't write against a read only replica.")),
       Code::kUnavailable},
      {"MGET: -NOAUTH", Call::kMultiGet, Reply(RespError("NOAUTH Authentication required.")),
       Code::kPermissionDenied},
      {"SET: -NOAUTH", Call::kMultiSet, Reply(RespError("NOAUTH Authentication required.")),
       Code::kPermissionDenied},
      {"MGET: -BUSY", Call::kMultiGet,
       Reply(RespError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
                       "SHUTDOWN NOSAVE.")),
       Code::kUnavailable},
      {"SET: -OOM", Call::kMultiSet,
       Reply(RespError("OOM command not allowed when used memory > 'maxmemory'.")),
       Code::kResourceExhausted},
      {"SET NX: -OOM", Call::kSetIfAbsent,
       Reply(RespError("OOM command not allowed when used memory > 'maxmemory'.")),
       Code::kResourceExhausted},
      {"MGET: -TRYAGAIN", Call::kMultiGet,
       Reply(RespError("TRYAGAIN Multiple keys request during rehashing of slot")),
       Code::kUnavailable},
      {"MGET: -TRYAGAIN from a cluster", Call::kMultiGet,
       Reply(RespError("TRYAGAIN Multiple keys request during rehashing of slot")),
       Code::kUnavailable, Topology::kCluster},
      {"MGET: -CLUSTERDOWN", Call::kMultiGet, Reply(RespError("CLUSTERDOWN The cluster is down")),
       Code::kUnavailable},
      {"MGET: -CLUSTERDOWN from a cluster", Call::kMultiGet,
       Reply(RespError("CLUSTERDOWN The cluster is down")), Code::kUnavailable, Topology::kCluster},
      {"SET: -MASTERDOWN", Call::kMultiSet,
       Reply(RespError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set "
                       "to 'no'.")),
       Code::kUnavailable},

      // Length claims.
      {"MGET: a 1 GB bulk claim, then endless bytes", Call::kMultiGet,
       ReplyThen("*2\r\n$1000000000\r\n", Endless), Code::kResourceExhausted},
      {"MGET: a 1 GB bulk claim, then silence", Call::kMultiGet,
       ReplyThen("*2\r\n$1000000000\r\n", Hang), Code::kDeadlineExceeded},
      {"SET answered with a 1 GB bulk claim, then endless bytes", Call::kMultiSet,
       ReplyThen("$1000000000\r\n", Endless), Code::kResourceExhausted},
      {"SET answered with an endless status line", Call::kMultiSet, ReplyThen("+", Endless),
       Code::kResourceExhausted},
      // A line reply without end is refused on the SET's small budget; on an MGET's budget
      // (max_item_size per key) hiredis' line scan is quadratic, so it ends by the timeout
      // instead (DeadlineExceeded) on a slow machine.
      {"SET answered with an endless error line", Call::kMultiSet, ReplyThen("-ERR ", Endless),
       Code::kResourceExhausted},
      {"MGET: an array claiming 666666663 elements", Call::kMultiGet,
       ReplyThen("*666666663\r\n", Hang), Code::kResourceExhausted},
      {"MGET: a nested array claiming 100 M elements", Call::kMultiGet,
       ReplyThen("*2\r\n*100000000\r\n", Hang), Code::kResourceExhausted},
      {"MGET: an array claiming 2^63-1 elements", Call::kMultiGet,
       ReplyThen("*9223372036854775807\r\n", Hang), Code::kUnavailable},
      {"MGET: a bulk claiming 2^63-1 bytes", Call::kMultiGet,
       ReplyThen("*2\r\n$9223372036854775807\r\n", Endless), Code::kResourceExhausted},

      // Redirect loops.
      {"MGET: MOVED to itself forever", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("MOVED " + Slot(request) + " " + server.node()));
       },
       Code::kUnavailable, Topology::kClusterNode},
      {"SET NX: MOVED to itself forever", Call::kSetIfAbsent,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("MOVED " + Slot(request) + " " + server.node()));
       },
       Code::kUnavailable, Topology::kClusterNode},
      {"SET: MOVED to itself forever, to a cluster backend", Call::kMultiSet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("MOVED " + Slot(request) + " " + server.node()));
       },
       Code::kUnavailable, Topology::kCluster},
      {"MGET: MOVED from a server that is no cluster", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("MOVED " + Slot(request) + " " + server.node()));
       },
       Code::kInternal},
      {"MGET: ASK to itself forever", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("ASK " + Slot(request) + " " + server.node()));
       },
       Code::kUnavailable},
      {"DEL: ASK to itself forever, to a cluster backend", Call::kDelete,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(RespError("ASK " + Slot(request) + " " + server.node()));
       },
       Code::kUnavailable, Topology::kCluster},

      // Slow and silent servers.
      {"MGET reply dripped slower than the timeout", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Drip(server.Normal(request), 60ms);
       },
       Code::kDeadlineExceeded},
      {"SET reply dripped slower than the timeout", Call::kMultiSet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Drip(server.Normal(request), 150ms);
       },
       Code::kDeadlineExceeded},
      {"MGET reply late by twice the timeout", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Pause(600ms).Send(server.Normal(request));
       },
       Code::kDeadlineExceeded},
      {"MGET never answered", Call::kMultiGet,
       [](HostileRedisServer&, const RedisRequest&) { return RedisResponse().Hang(); },
       Code::kDeadlineExceeded},
      {"SET NX never answered", Call::kSetIfAbsent,
       [](HostileRedisServer&, const RedisRequest&) { return RedisResponse().Hang(); },
       Code::kDeadlineExceeded},
      {"DEL swallowed, the connection still serving", Call::kDelete,
       [](HostileRedisServer&, const RedisRequest&) { return RedisResponse(); },
       Code::kDeadlineExceeded},

      // Peers that answer right and then go away: the call succeeds, the next one reconnects.
      {"MGET answered, then the connection closed", Call::kMultiGet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(server.Normal(request)).Close();
       },
       Code::kOk},
      {"SET answered, then the connection reset", Call::kMultiSet,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(server.Normal(request)).Reset();
       },
       Code::kOk},
  };
  return scenarios;
}

TEST_CASE(
    "a hostile Redis gets a mapped status in time with bounded memory and the backend recovers") {
  const std::size_t index = GENERATE(range(std::size_t{0}, Scenarios().size()));
  const Scenario& scenario = Scenarios()[index];
  INFO("scenario: " << scenario.name);

  HostileRedisServer server({.cluster = scenario.topology != Topology::kSingle});
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewRedisBackend({.url = server.url(),
                       .connect_timeout = kCommandTimeout,
                       .command_timeout = kCommandTimeout,
                       .cluster = scenario.topology == Topology::kCluster});
  REQUIRE(backend.ok());
  REQUIRE((*backend)->MultiSet({{"{k}b", "b"}}, absl::Minutes(1)).ok());  // a pooled connection

  std::atomic<int> faults{0};
  server.Inject(CommandOf(scenario.call), [&](const RedisRequest& request) {
    ++faults;
    return scenario.respond(server, request);
  });
  ResetPeakRss();
  const std::size_t rss_before_kb = ProcStatusKb("VmRSS");
  const absl::Time start = absl::Now();
  const absl::Status status = RunCall(**backend, scenario.call);
  const absl::Duration took = absl::Now() - start;
  const std::size_t peak_kb = ProcStatusKb("VmHWM");
  INFO("status: " << status.ToString() << " after " << took << "; RSS " << rss_before_kb
                  << " kB, peak " << peak_kb << " kB");

  CHECK(faults > 0);  // the scenario did happen
  CHECK(status.code() == scenario.expected);
  CHECK(took < kCommandTimeout + kMargin);
  CHECK(peak_kb - std::min(peak_kb, rss_before_kb) < kRssGrowthBoundKb);

  // The same backend serves good commands again.
  server.ClearFaults();
  const absl::Status set = (*backend)->MultiSet({{"{k}after", "fine"}}, absl::Minutes(1));
  INFO("MultiSet after: " << set.ToString());
  CHECK(set.ok());
  const std::string_view after[] = {"{k}after", "{k}b"};
  absl::StatusOr<std::vector<std::optional<std::string>>> got = (*backend)->MultiGet(after);
  INFO("MultiGet after: " << got.status().ToString());
  REQUIRE(got.ok());
  CHECK((*got)[0] == "fine");
  CHECK((*got)[1] == "b");

  // Every connection the backend gave up was closed: one is left, idle in its pool.
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (server.open_connections() > 1 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(server.open_connections() == 1);
}

// ---- Replies nobody asked for -------------------------------------------------------------------

// Faults that leave one reply more on a connection than commands were sent on it.
struct ExtraReply {
  std::string name;
  std::string command;  // where it is injected
  std::function<RedisResponse(HostileRedisServer&, const RedisRequest&)> respond;
  bool before_backend = false;  // injected before the backend connects (on its PING)
};

std::vector<ExtraReply> ExtraReplies() {
  return {
      {"the MGET reply twice, in one write", "MGET",
       [](HostileRedisServer& server, const RedisRequest& request) {
         const std::string reply = server.Normal(request);
         return RedisResponse().Send(reply + reply);
       }},
      {"the MGET reply, then the same reply 50 ms later", "MGET",
       [](HostileRedisServer& server, const RedisRequest& request) {
         const std::string reply = server.Normal(request);
         return RedisResponse().Send(reply).Pause(50ms).Send(reply);
       }},
      {"the SET reply, then another +OK", "SET",
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(server.Normal(request) + RespStatus("OK"));
       }},
      {"the PING reply at connection, then another +PONG", "PING",
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Send(server.Normal(request) + RespStatus("PONG"));
       },
       /*before_backend=*/true},
  };
}

TEST_CASE("a connection holding an unasked-for reply is never reused: no value for another key") {
  const std::size_t index = GENERATE(range(std::size_t{0}, ExtraReplies().size()));
  const ExtraReply fault = ExtraReplies()[index];
  INFO("extra reply: " << fault.name);

  HostileRedisServer server;
  server.Set("a", "value of a");
  server.Set("b", "value of b");
  if (fault.before_backend) {
    server.Inject(
        fault.command, [&](const RedisRequest& r) { return fault.respond(server, r); }, 1);
  }
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewRedisBackend({.url = server.url(), .command_timeout = kCommandTimeout});
  if (fault.before_backend && !backend.ok()) {
    // Refusing the connection whose PING came with an extra reply is a defence too; the next
    // backend connects normally (the fault is spent).
    INFO("NewRedisBackend: " << backend.status().ToString());
    backend = NewRedisBackend({.url = server.url(), .command_timeout = kCommandTimeout});
  }
  REQUIRE(backend.ok());
  const auto get = [&](std::string_view key) { return (*backend)->MultiGet({&key, 1}); };
  if (!fault.before_backend) {
    server.Inject(
        fault.command, [&](const RedisRequest& r) { return fault.respond(server, r); }, 1);
    // The call that meets the extra reply may fail (which reply answers it cannot be told) but
    // must not return another command's reply.
    if (fault.command == "SET") {
      const absl::Status set = (*backend)->MultiSet({{"c", "value of c"}}, absl::Minutes(1));
      INFO("MultiSet(c): " << set.ToString());
      CHECK((set.ok() || absl::IsInternal(set)));
    } else {
      absl::StatusOr<std::vector<std::optional<std::string>>> a = get("a");
      INFO("MultiGet(a): " << a.status().ToString());
      if (a.ok()) CHECK((*a)[0] == "value of a");
    }
    std::this_thread::sleep_for(200ms);  // the late extra reply has arrived
  }

  // Every later read returns its own key's value or an error, never another key's; and the
  // backend gets back to right answers.
  int right = 0;
  for (const std::string key : {"b", "a", "b", "a", "b", "a"}) {
    absl::StatusOr<std::vector<std::optional<std::string>>> got = get(key);
    INFO("MultiGet(" << key << "): "
                     << (got.ok() ? ((*got)[0].has_value() ? "\"" + *(*got)[0] + "\"" : "nil")
                                  : got.status().ToString()));
    if (!got.ok()) continue;
    CHECK((*got)[0] == "value of " + key);
    if ((*got)[0] == "value of " + key) ++right;
  }
  CHECK(right >= 5);  // one error at most, on the call that found the connection out of step
}

// A ChunkedCache on a hostile server that holds the documents a and b.
struct TwoDocuments {
  TwoDocuments() {
    absl::StatusOr<std::shared_ptr<RedisBackend>> backend =
        NewRedisBackend({.url = server.url(), .command_timeout = kCommandTimeout});
    REQUIRE(backend.ok());
    cache = std::make_unique<ChunkedCache>(*std::move(backend));
    REQUIRE(cache->Put("a", a).ok());
    REQUIRE(cache->Put("b", b).ok());
  }

  HostileRedisServer server;
  std::unique_ptr<ChunkedCache> cache;
  const std::string a = R"({"name":"a","items":[1,2,3]})";
  const std::string b = R"({"name":"b","items":[4,5,6]})";
};

TEST_CASE("after an extra reply, Get(\"b\") never returns a's document") {
  TwoDocuments docs;
  HostileRedisServer& server = docs.server;
  ChunkedCache& cache = *docs.cache;
  const std::string& a = docs.a;
  const std::string& b = docs.b;

  // The server answers the next MGET or GET (Get("a")'s manifest read) twice.
  for (const char* command : {"MGET", "GET"}) {
    server.Inject(
        command,
        [&](const RedisRequest& request) {
          const std::string reply = server.Normal(request);
          return RedisResponse().Send(reply + reply);
        },
        1);
  }
  absl::StatusOr<Bytes> got_a = cache.Get("a");  // may fail, as the connection is out of step
  INFO("Get(a) with the extra reply: " << (got_a.ok() ? **got_a : got_a.status().ToString()));
  if (got_a.ok()) CHECK(**got_a == a);

  int served = 0;
  for (const auto& [key, json] :
       std::vector<std::pair<std::string, std::string>>{{"b", b}, {"a", a}, {"b", b}, {"a", a}}) {
    absl::StatusOr<Bytes> got = cache.Get(key);
    INFO("Get(" << key << "): " << (got.ok() ? **got : got.status().ToString()));
    if (!got.ok()) continue;  // an error or a miss is acceptable, another key's document is not
    CHECK(**got == json);
    if (**got == json) ++served;
  }
  CHECK(served >= 3);
}

// The second defence against replies nobody asked for: an entry binds to its key, so a manifest
// that reaches a reader of another key (a server or proxy that mixes replies up, whatever the
// connection does) is refused, not served.
TEST_CASE("a manifest served for another key is refused, not served") {
  TwoDocuments docs;
  HostileRedisServer& server = docs.server;
  ChunkedCache& cache = *docs.cache;
  const std::string& a = docs.a;
  const std::string& b = docs.b;
  const std::string a_manifest_key =
      internal::StoredKeys(cache.options().key_prefix, "a").manifest();
  const std::optional<std::string> a_manifest = server.Get(a_manifest_key);
  REQUIRE(a_manifest.has_value());

  // Every MGET and GET is answered with a's manifest in place of each value asked for.
  server.Inject("MGET", [&](const RedisRequest& request) {
    return RedisResponse().Send(
        RespArray(std::vector<std::string>(request.args.size() - 1, RespBulk(*a_manifest))));
  });
  server.Inject("GET",
                [&](const RedisRequest&) { return RedisResponse().Send(RespBulk(*a_manifest)); });
  absl::StatusOr<Bytes> got = cache.Get("b");
  INFO("Get(b): " << (got.ok() ? **got : got.status().ToString()));
  CHECK_FALSE(got.ok());
  CHECK(cache.Stats().corrupt_reads >= 1);

  server.ClearFaults();
  got = cache.Get("b");
  REQUIRE(got.ok());
  CHECK(**got == b);
}

// ---- MultiGetEach: a GET per key, each reply handed over as it is parsed ------------------------

// What one MultiGetEach handed over, in the order handed, and what it returned.
struct Handed {
  absl::Status status;
  std::vector<std::size_t> indices;
  std::vector<std::optional<std::string>> values;  // nullopt: absent
};

Handed GetEach(Backend& backend, absl::Span<const std::string_view> keys) {
  Handed handed;
  handed.status = backend.MultiGetEach(keys, [&](std::size_t i, std::optional<ItemView> item) {
    handed.indices.push_back(i);
    handed.values.emplace_back();
    if (item.has_value()) handed.values.back().emplace(item->value);
    return absl::OkStatus();
  });
  return handed;
}

// 0, 1, ..., n - 1.
std::vector<std::size_t> Indices(std::size_t n) {
  std::vector<std::size_t> indices(n);
  for (std::size_t i = 0; i < n; ++i) indices[i] = i;
  return indices;
}

// A hostile server holding "value of {e}0" ... "value of {e}5" under {e}0 ... {e}5.
struct SixItems {
  explicit SixItems(HostileRedisOptions options = {}) : server(std::move(options)) {
    for (int i = 0; i < 6; ++i) {
      names.push_back("{e}" + std::to_string(i));
      server.Set(names.back(), "value of " + names.back());
    }
    keys.assign(names.begin(), names.end());
  }
  std::vector<std::optional<std::string>> Values() const {
    std::vector<std::optional<std::string>> values;
    for (const std::string& name : names) values.push_back("value of " + name);
    return values;
  }

  HostileRedisServer server;
  std::vector<std::string> names;
  std::vector<std::string_view> keys;
};

TEST_CASE("MultiGetEach hands the first item over before the server sent the last") {
  SixItems items;
  HostileRedisServer& server = items.server;
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewRedisBackend({.url = server.url(), .command_timeout = absl::Seconds(5)});
  REQUIRE(backend.ok());
  std::atomic<bool> first_handed{false}, last_sent{false};
  // The reply carrying the last item (a GET's, or an MGET's) waits for the reader to have the
  // first item, 3 s at most.
  const auto hold_last = [&](const RedisRequest& request) {
    if (request.args.back() == items.names.back()) {
      const auto until = std::chrono::steady_clock::now() + 3s;
      while (!first_handed && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(1ms);
      }
      last_sent = true;
    }
    return RedisResponse().Send(server.Normal(request));
  };
  server.Inject("GET", hold_last);
  server.Inject("MGET", hold_last);
  bool last_sent_at_first = true;
  Handed handed;
  handed.status =
      (*backend)->MultiGetEach(items.keys, [&](std::size_t i, std::optional<ItemView> item) {
        if (i == 0) {
          last_sent_at_first = last_sent.load();
          first_handed = true;
        }
        handed.indices.push_back(i);
        handed.values.emplace_back(item.has_value() ? std::optional<std::string>(item->value)
                                                    : std::nullopt);
        return absl::OkStatus();
      });
  INFO(handed.status.ToString());
  REQUIRE(handed.status.ok());
  CHECK(last_sent);
  CHECK_FALSE(last_sent_at_first);  // item 0 was handed over while the last reply was held back
  CHECK(handed.indices == Indices(items.keys.size()));
  CHECK(handed.values == items.Values());
}

struct EachScenario {
  std::string name;
  std::size_t at;  // the key whose GET meets the fault
  Respond respond;
  absl::StatusCode expected;
};

std::vector<EachScenario> EachScenarios() {
  using Code = absl::StatusCode;
  // max_item_size (1 MiB) and 4 KiB: more than any framing a GET's reply may add.
  const std::string just_too_big = RespBulk(std::string((1 << 20) + 4096, 'x'));
  // The replies before the fault have surely arrived when the connection is reset.
  const auto reset_after = [](std::string bytes) -> Respond {
    return [bytes](HostileRedisServer&, const RedisRequest&) {
      return RedisResponse().Send(bytes).Pause(50ms).Reset();
    };
  };
  return {
      {"a whole reply just over max_item_size", 2, Reply(just_too_big), Code::kResourceExhausted},
      {"a 1 GB bulk claim, then endless bytes", 2, ReplyThen("$1000000000\r\n", Endless),
       Code::kResourceExhausted},
      {"a 1 GB bulk claim for the first key", 0, ReplyThen("$1000000000\r\n", Endless),
       Code::kResourceExhausted},
      {"an endless status line", 3, ReplyThen("+", Endless), Code::kResourceExhausted},
      {"an integer", 2, Reply(RespInteger(7)), Code::kInternal},
      {"a status", 5, Reply(RespStatus("OK")), Code::kInternal},
      {"an array of one value", 2, Reply(RespArray({RespBulk("x")})), Code::kInternal},
      {"an array claiming 666666663 elements", 2, ReplyThen("*666666663\r\n", Hang),
       Code::kResourceExhausted},
      {"-WRONGTYPE", 1,
       Reply(RespError("WRONGTYPE Operation against a key holding the wrong kind of value")),
       Code::kInternal},
      {"-LOADING", 2, Reply(RespError("LOADING Redis is loading the dataset in memory")),
       Code::kUnavailable},
      {"a reply cut inside the value, then reset", 2, reset_after("$20\r\nvalue of"),
       Code::kUnavailable},
      {"a reset for the first key", 0, ReplyThen("", Reset), Code::kUnavailable},
      {"a close without the reply", 4, ReplyThen("", Close), Code::kUnavailable},
      {"a reply never sent", 3, ReplyThen("", Hang), Code::kDeadlineExceeded},
      {"a reply dripped slower than the timeout", 1,
       [](HostileRedisServer& server, const RedisRequest& request) {
         return RedisResponse().Drip(server.Normal(request), 60ms);
       },
       Code::kDeadlineExceeded},
  };
}

TEST_CASE("MultiGetEach against a hostile server: the items before the fault, then its status") {
  const std::size_t index = GENERATE(range(std::size_t{0}, EachScenarios().size()));
  const EachScenario scenario = EachScenarios()[index];
  INFO("scenario: " << scenario.name << ", at key " << scenario.at);

  SixItems items;
  HostileRedisServer& server = items.server;
  absl::StatusOr<std::shared_ptr<RedisBackend>> backend =
      NewRedisBackend({.url = server.url(),
                       .connect_timeout = kCommandTimeout,
                       .command_timeout = kCommandTimeout,
                       .pool_size = 1});
  REQUIRE(backend.ok());
  std::atomic<int> faults{0};
  server.Inject("GET", [&](const RedisRequest& request) {
    if (request.args.at(1) != items.names[scenario.at]) {
      return RedisResponse().Send(server.Normal(request));
    }
    ++faults;
    return scenario.respond(server, request);
  });
  ResetPeakRss();
  const std::size_t rss_before_kb = ProcStatusKb("VmRSS");
  const absl::Time start = absl::Now();
  const Handed handed = GetEach(**backend, items.keys);
  const absl::Duration took = absl::Now() - start;
  const std::size_t peak_kb = ProcStatusKb("VmHWM");
  INFO("status: " << handed.status.ToString() << " after " << took);

  CHECK(faults > 0);
  CHECK(handed.status.code() == scenario.expected);
  CHECK(handed.indices == Indices(scenario.at));  // each item before the fault, once
  const std::vector<std::optional<std::string>> values = items.Values();
  CHECK(handed.values == std::vector<std::optional<std::string>>(
                             values.begin(), values.begin() + static_cast<long>(scenario.at)));
  CHECK(took < kCommandTimeout + kMargin);
  CHECK(peak_kb - std::min(peak_kb, rss_before_kb) < kRssGrowthBoundKb);
  CHECK((*backend)->Stats().errors == 1);

  // The same backend serves good calls again, on a connection in step.
  server.ClearFaults();
  const std::string_view others[] = {items.keys[5], items.keys[4]};
  absl::StatusOr<std::vector<std::optional<std::string>>> got = (*backend)->MultiGet(others);
  INFO("MultiGet after: " << got.status().ToString());
  REQUIRE(got.ok());
  CHECK(*got == std::vector<std::optional<std::string>>{values[5], values[4]});
  const Handed again = GetEach(**backend, items.keys);
  INFO("MultiGetEach after: " << again.status.ToString());
  CHECK(again.status.ok());
  CHECK(again.values == values);

  // Every connection the backend gave up was closed: one is left, idle in its pool.
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (server.open_connections() > 1 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(server.open_connections() == 1);
}

TEST_CASE("MultiGetEach follows a MOVED or ASK met after items were handed over, once each") {
  const bool ask = GENERATE(false, true);
  CAPTURE(ask);
  // A cluster backend on a fake cluster node that owns every slot (CLUSTER SLOTS names it).
  SixItems items({.cluster = true});
  HostileRedisServer& server = items.server;
  absl::StatusOr<std::shared_ptr<RedisBackend>> backend =
      NewRedisBackend({.url = server.url(), .command_timeout = absl::Seconds(2), .cluster = true});
  REQUIRE(backend.ok());
  std::atomic<int> redirected{0};
  server.Inject("GET", [&](const RedisRequest& request) {
    if (request.args.at(1) != items.names[3] || redirected++ > 0) {
      return RedisResponse().Send(server.Normal(request));
    }
    return RedisResponse().Send(
        RespError((ask ? "ASK " : "MOVED ") + Slot(request) + " " + server.node()));
  });
  const RedisBackendStats before = (*backend)->Stats();
  const Handed handed = GetEach(**backend, items.keys);
  INFO(handed.status.ToString());
  REQUIRE(handed.status.ok());
  CHECK(redirected == 2);  // the GET redirected, and the one sent again
  CHECK(handed.indices == Indices(items.keys.size()));
  CHECK(handed.values == items.Values());
  CHECK((*backend)->Stats().redirects - before.redirects == 1);
  CHECK(server.commands("ASKING") == (ask ? 3 : 0));  // before each GET sent again
}

TEST_CASE("a call's deadline bounds MultiGetEach, the time in its sink included") {
  SixItems items;
  HostileRedisServer& server = items.server;
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewRedisBackend({.url = server.url(), .command_timeout = absl::Seconds(3)});
  REQUIRE(backend.ok());
  const absl::Duration budget = absl::Milliseconds(300);
  for (const bool slow_sink : {false, true}) {
    CAPTURE(slow_sink);
    server.ClearFaults();
    if (!slow_sink) {
      server.Inject("GET", [&](const RedisRequest& request) {
        if (request.args.at(1) == items.names[4]) return RedisResponse().Hang();
        return RedisResponse().Send(server.Normal(request));
      });
    }
    const absl::Time start = absl::Now();
    Handed handed;
    {
      const ScopedCallDeadline deadline(start + budget);
      handed.status =
          (*backend)->MultiGetEach(items.keys, [&](std::size_t i, std::optional<ItemView>) {
            handed.indices.push_back(i);
            if (slow_sink) absl::SleepFor(absl::Milliseconds(120));
            return absl::OkStatus();
          });
    }
    const absl::Duration took = absl::Now() - start;
    INFO(handed.status.ToString() << " after " << took);
    CHECK(absl::IsDeadlineExceeded(handed.status));
    CHECK(took < budget + (slow_sink ? absl::Milliseconds(120) : absl::ZeroDuration()) + kMargin);
    CHECK(handed.indices == Indices(handed.indices.size()));  // from the first, none skipped
    if (slow_sink) {  // items at about 0, 120 and 240 ms, then past the deadline
      CHECK(handed.indices.size() >= 1);
      CHECK(handed.indices.size() <= 4);
    } else {
      CHECK(handed.indices.size() == 4);  // up to the reply never sent
    }
  }
  server.ClearFaults();
  CHECK(GetEach(**backend, items.keys).values == items.Values());
}

// ---- The fixture itself -------------------------------------------------------------------------

TEST_CASE("the hostile Redis fixture plays a real Redis until told otherwise") {
  HostileRedisServer server;
  absl::StatusOr<std::shared_ptr<RedisBackend>> made =
      NewRedisBackend({.url = server.url(), .command_timeout = absl::Seconds(2)});
  REQUIRE(made.ok());
  const std::shared_ptr<RedisBackend> backend = *made;

  // A multi-chunk document through a ChunkedCache: SET PX, MGET, DEL of replaced chunks.
  ChunkedCache cache(backend, {.chunk_size = 4096});
  const std::string first = testing::GenerateCatalogue({.megabytes = 0.1, .seed = 1});
  const std::string second = testing::GenerateCatalogue({.megabytes = 0.1, .seed = 2});
  REQUIRE(cache.Put("doc", first).ok());
  CHECK(**cache.Get("doc") == first);
  const std::size_t items = server.size();
  CHECK(items > 2);
  REQUIRE(cache.Put("doc", second).ok());
  CHECK(**cache.Get("doc") == second);
  CHECK(server.commands("DEL") >= 1);
  CHECK(server.size() <= items + 2);  // the first generation's chunks were deleted
  REQUIRE(cache.Invalidate("doc").ok());
  CHECK(absl::IsNotFound(cache.Get("doc").status()));

  // SET NX, PTTL, expiry.
  CHECK(*backend->SetIfAbsent("lease", "one", absl::Seconds(30)) == true);
  CHECK(*backend->SetIfAbsent("lease", "two", absl::Seconds(30)) == false);
  CHECK(server.Get("lease") == "one");
  absl::StatusOr<std::vector<std::optional<absl::Duration>>> ttls =
      backend->TimeToLive({"lease", "absent"});
  REQUIRE(ttls.ok());
  REQUIRE((*ttls)[0].has_value());
  CHECK(*(*ttls)[0] > absl::Seconds(25));
  CHECK_FALSE((*ttls)[1].has_value());
  REQUIRE(backend->MultiSet({{"short", "x"}}, absl::Milliseconds(50)).ok());
  std::this_thread::sleep_for(100ms);
  CHECK_FALSE(server.Get("short").has_value());

  // A fault injected for a number of commands, then the store answers again.
  server.Inject(
      "MGET", [](const RedisRequest&) { return RedisResponse().Send(RespError("LOADING")); }, 1);
  const std::string_view key = "lease";
  CHECK(absl::IsUnavailable(backend->MultiGet({&key, 1}).status()));
  CHECK((*backend->MultiGet({&key, 1}))[0] == "one");
  CHECK(server.connections() >= 1);
  CHECK(server.commands() > server.commands("MGET"));
}

TEST_CASE("the hostile Redis fixture checks passwords like Redis") {
  HostileRedisServer server({.password = "s3cret"});
  const std::string at = "@127.0.0.1:" + std::to_string(server.port());
  CHECK(NewRedisBackend({.url = "redis://:s3cret" + at}).ok());
  CHECK(NewRedisBackend({.url = "redis://alice:s3cret" + at}).ok());
  CHECK(absl::IsPermissionDenied(NewRedisBackend({.url = "redis://:wrong" + at}).status()));
  absl::StatusOr<std::shared_ptr<Backend>> anonymous = NewRedisBackend({.url = server.url()});
  REQUIRE(anonymous.ok());  // PING needs no password
  CHECK(absl::IsPermissionDenied((*anonymous)->MultiSet({{"k", "v"}}, absl::Minutes(1))));
}

// ---- Credentials in server text, call deadlines -------------------------------------------------

// A server that echoes an unknown command's arguments must not put the password in a
// status (AUTH renamed on the server).
TEST_CASE("server text echoing the AUTH arguments never carries the password into a status") {
  HostileRedisServer server({.password = "pa55-w0rd-xyz"});
  server.Inject("AUTH", [](const RedisRequest& request) {
    std::string text = "ERR unknown command 'AUTH', with args beginning with:";
    for (std::size_t i = 1; i < request.args.size(); ++i) text += " '" + request.args[i] + "'";
    return RedisResponse().Send(RespError(text));
  });
  const std::string at = "@127.0.0.1:" + std::to_string(server.port());
  for (const std::string url :
       {"redis://:pa55-w0rd-xyz" + at, "redis://alice:pa55-w0rd-xyz" + at}) {
    const absl::Status status = NewRedisBackend({.url = url}).status();
    INFO(status.ToString());
    CHECK_FALSE(status.ok());
    CHECK_FALSE(absl::StrContains(status.ToString(), "pa55-w0rd-xyz"));
  }
}

// A backend call made for a chunkcache call with a deadline ends by that deadline, even
// when command_timeout is longer.
TEST_CASE("a call's deadline bounds a Redis command shorter than command_timeout") {
  HostileRedisServer server;
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewRedisBackend({.url = server.url(), .command_timeout = absl::Seconds(3)});
  REQUIRE(backend.ok());
  ChunkedCache cache(*backend);
  REQUIRE(cache.Put("k", R"({"k":1})").ok());
  const absl::Duration budget = absl::Milliseconds(300);
  for (const bool drip : {false, true}) {
    CAPTURE(drip);
    server.ClearFaults();
    for (const char* command : {"MGET", "GET"}) {
      // `drip` by value: a connection thread of the last round may still run the handler.
      server.Inject(command, [&, drip](const RedisRequest& request) {
        return drip ? RedisResponse().Drip(server.Normal(request), 100ms) : RedisResponse().Hang();
      });
    }
    {
      const absl::Time start = absl::Now();
      ScopedCallDeadline deadline(start + budget);
      const std::string_view key = "k";
      const absl::Status status = (*backend)->MultiGet({&key, 1}).status();
      const absl::Duration took = absl::Now() - start;
      INFO("MultiGet: " << status.ToString() << " after " << took);
      CHECK(absl::IsDeadlineExceeded(status));
      CHECK(took < budget + kMargin);
    }
    {
      const absl::Time start = absl::Now();
      const absl::Status status = cache.Get("k", {.deadline = start + budget}).status();
      const absl::Duration took = absl::Now() - start;
      INFO("Get: " << status.ToString() << " after " << took);
      CHECK(absl::IsDeadlineExceeded(status));
      CHECK(took < budget + kMargin);
    }
  }
}

}  // namespace
}  // namespace chunkcache
