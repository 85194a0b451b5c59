// MomentoBackend against hostile HTTP servers (tests/fixtures/hostile_http.h), one scripted
// scenario at a time: whatever a server sends — short bodies, resets, redirects, empty replies,
// endless bodies, floods of headers or of "100 Continue", slow drips, echoes of the API key — a
// call ends with a clear status of the expected code, within its deadline, with memory bounded by
// max_item_size, and with no part of the API key in the status.

#include <sys/types.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/momento_backend.h"
#include "fixtures/hostile_http.h"
#include "test_util.h"  // CHUNKCACHE_UNDER_SANITIZER: the memory bound is checked only without

namespace chunkcache {
namespace {

using std::chrono::milliseconds;
using testing::HostileHttpServer;
using testing::HostileScript;
using testing::HttpResponse;

// Long and unlike anything a server or libcurl would print by chance.
const std::string kApiKey = "hostile-test-key-7f3a9c1e5b2d4086a1b3c5d7e9f01234-QxZw";

constexpr std::size_t kMaxItem = std::size_t{4} << 20;
constexpr absl::Duration kDeadline = absl::Milliseconds(600);
// How late after its deadline a call may end: scheduling on a loaded 2-core CI machine.
constexpr absl::Duration kMargin = absl::Milliseconds(150);
// Growth of the peak RSS a call may cause: a few times max_item_size for the reply and its
// copies, plus libcurl's buffers. Any scenario that buffered what it is sent would take 20 MB
// to 64 MB more.
constexpr std::int64_t kMaxGrowthBytes = 20 << 20;

MomentoBackendOptions Options(const HostileHttpServer& server) {
  return {.endpoint = server.endpoint(),
          .cache_name = "c",
          .api_key = kApiKey,
          .request_timeout = absl::Milliseconds(250),
          .deadline = kDeadline,
          .max_attempts = 3,
          .backoff_base = absl::Milliseconds(1),
          .backoff_cap = absl::Milliseconds(10),
          .max_item_size = kMaxItem};
}

// A field of /proc/self/status in bytes ("VmHWM", "VmRSS"); -1 if unreadable.
std::int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, absl::StrCat(field, ":"))) {
      return std::stoll(line.substr(field.size() + 1)) * 1024;
    }
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux: "5" into clear_refs); false if the kernel refuses.
bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

// The first 12-byte piece of the key found in `text`, or "" if none.
std::string KeyPieceIn(const std::string& text) {
  for (std::size_t i = 0; i + 12 <= kApiKey.size(); ++i) {
    if (absl::StrContains(text, kApiKey.substr(i, 12))) {
      return kApiKey.substr(i, 12);
    }
  }
  return "";
}

enum class Op { kGet, kPut, kDelete };

struct Scenario {
  std::string name;
  HostileScript script;
  absl::StatusCode expected;
  Op op = Op::kGet;
  // Answered before the deadline, without running into a timeout.
  bool quick = true;
};

std::string Headers(int status, const std::string& extra = "") {
  return absl::StrCat("HTTP/1.1 ", status, " Hostile\r\n", extra, "\r\n");
}

std::vector<Scenario> Scenarios(const std::string& elsewhere) {
  using absl::StatusCode;
  const std::string megabyte(1 << 20, 'x');
  std::string kilobyte_header = absl::StrCat("X-Junk: ", std::string(1000, 'j'), "\r\n");
  std::string chunk = absl::StrCat("10000\r\n", std::string(0x10000, 'c'), "\r\n");
  return {
      {"accepts, reads the request, never answers", HostileScript().Hang(),
       StatusCode::kDeadlineExceeded, Op::kGet, false},
      {"never answers a PUT", HostileScript().Hang(), StatusCode::kDeadlineExceeded, Op::kPut,
       false},
      {"closes without a reply", HostileScript(), StatusCode::kUnavailable},
      {"resets on accept, before reading", HostileScript().WithoutReadingRequest().Reset(),
       StatusCode::kUnavailable},
      {"short body: 10 of 1000 bytes, then FIN",
       HostileScript().Send(Headers(200, "Content-Length: 1000\r\n") + std::string(10, 'x')),
       StatusCode::kUnavailable},
      {"reset after 100 bytes of the body",
       HostileScript()
           .Send(Headers(200, "Content-Length: 1000\r\n") + std::string(100, 'x'))
           .Pause(milliseconds(20))
           .Reset(),
       StatusCode::kUnavailable},
      {"redirect to another server, the key in Location",
       HostileScript().Send(HttpResponse(
           302, "", absl::StrCat("Location: ", elsewhere, "/cache/c?key=", kApiKey, "\r\n"))),
       StatusCode::kUnknown},
      {"permanent redirect of a PUT",
       HostileScript().Send(HttpResponse(308, "", absl::StrCat("Location: ", elsewhere, "\r\n"))),
       StatusCode::kUnknown, Op::kPut},
      {"empty 200 to a GET (an empty value)", HostileScript().Send(HttpResponse(200, "")),
       StatusCode::kOk},
      {"empty 200 to a GET, no length, then FIN", HostileScript().Send(Headers(200)),
       StatusCode::kOk},
      {"empty 200 to a PUT", HostileScript().Send(HttpResponse(200, "")), StatusCode::kOk,
       Op::kPut},
      {"200 announcing 64 MB",
       HostileScript().Send(Headers(200, "Content-Length: 67108864\r\n")).Repeat(megabyte, 64),
       StatusCode::kResourceExhausted},
      {"200 with an endless body and no length",
       HostileScript().Send(Headers(200)).Endless(megabyte), StatusCode::kResourceExhausted},
      {"200 with an endless chunked body",
       HostileScript().Send(Headers(200, "Transfer-Encoding: chunked\r\n")).Endless(chunk),
       StatusCode::kResourceExhausted},
      {"500 with an endless body", HostileScript().Send(Headers(500)).Endless(megabyte),
       StatusCode::kUnavailable},
      {"200 to a PUT with an endless body", HostileScript().Send(Headers(200)).Endless(megabyte),
       StatusCode::kOk, Op::kPut},
      {"404 to a DELETE with a 64 MB body",
       HostileScript().Send(Headers(404, "Content-Length: 67108864\r\n")).Repeat(megabyte, 64),
       StatusCode::kOk, Op::kDelete},
      {"20 MB of headers in 1 KB lines",
       HostileScript().Send("HTTP/1.1 200 OK\r\n").Repeat(kilobyte_header, 20'000).Send("\r\n"),
       StatusCode::kUnavailable},
      {"one 20 MB header line",
       HostileScript().Send("HTTP/1.1 200 OK\r\nX-Big: ").Repeat(megabyte, 20).Send("\r\n\r\n"),
       StatusCode::kUnavailable},
      {"a flood of 100 Continue",
       HostileScript().Repeat("HTTP/1.1 100 Continue\r\n\r\n", 1'000'000),
       StatusCode::kUnavailable},
      {"headers dripped a byte every 30 ms",
       HostileScript().Drip(HttpResponse(200, "{}"), milliseconds(30)),
       StatusCode::kDeadlineExceeded, Op::kGet, false},
      {"body dripped a byte every 30 ms",
       HostileScript()
           .Send(Headers(200, "Content-Length: 1000\r\n"))
           .Drip(std::string(1000, 'd'), milliseconds(30)),
       StatusCode::kDeadlineExceeded, Op::kGet, false},
      {"HTTP 999 echoing the key", HostileScript().Send(HttpResponse(999, kApiKey)),
       StatusCode::kUnknown},
      {"500 echoing the Authorization header",
       HostileScript().Send(HttpResponse(500, absl::StrCat("Authorization: ", kApiKey))),
       StatusCode::kUnavailable},
      {"401 with the key repeated in the body, and in a header",
       HostileScript().Send(HttpResponse(401, absl::StrCat(kApiKey, kApiKey, kApiKey),
                                         absl::StrCat("X-Key: ", kApiKey, "\r\n"))),
       StatusCode::kUnauthenticated},
      {"not HTTP: an SSH banner", HostileScript().Send("SSH-2.0-OpenSSH_9.2\r\n"),
       StatusCode::kUnavailable},
      {"bad chunked encoding",
       HostileScript().Send(Headers(200, "Transfer-Encoding: chunked\r\n") + "zz\r\nxx\r\n"),
       StatusCode::kUnavailable},
      {"two different Content-Lengths",
       HostileScript().Send(Headers(200, "Content-Length: 2\r\nContent-Length: 5\r\n") + "{}"),
       StatusCode::kUnavailable},
  };
}

TEST_CASE("every hostile Momento scenario gives a clear status in time, in bounded memory") {
  // Where redirects point: it must never be asked anything.
  HostileHttpServer elsewhere(HostileScript().Send(HttpResponse(200, "followed")));
#ifdef CHUNKCACHE_UNDER_SANITIZER
  const bool peak_resets = false;
#else
  const bool peak_resets = ResetPeakRss();
  if (!peak_resets) WARN("cannot reset VmHWM (/proc/self/clear_refs): memory is not checked");
#endif

  for (Scenario& scenario : Scenarios(elsewhere.endpoint())) {
    CAPTURE(scenario.name);
    HostileHttpServer server(std::move(scenario.script));
    absl::StatusOr<std::shared_ptr<MomentoBackend>> backend = NewMomentoBackend(Options(server));
    REQUIRE(backend.ok());

    const std::string value(1000, 'v');
    ResetPeakRss();
    const std::int64_t rss_before = ProcStatusBytes("VmRSS");
    const absl::Time start = absl::Now();
    absl::Status status;
    std::optional<std::string> got;
    switch (scenario.op) {
      case Op::kGet: {
        auto values = (*backend)->MultiGet({"k"});
        status = values.status();
        if (values.ok()) got = (*values)[0];
        break;
      }
      case Op::kPut:
        status = (*backend)->MultiSet({{"k", value}}, absl::Seconds(60));
        break;
      case Op::kDelete:
        status = (*backend)->Delete({"k"});
        break;
    }
    const absl::Duration took = absl::Now() - start;
    const std::int64_t growth = ProcStatusBytes("VmHWM") - rss_before;
    INFO(status.ToString() << "\nafter " << absl::FormatDuration(took) << ", peak RSS +"
                           << growth / 1024 << " KiB");

    CHECK(status.code() == scenario.expected);
    if (scenario.op == Op::kGet && status.ok()) CHECK(got == std::string());
    if (!status.ok()) CHECK(status.message().size() > 20);  // says something
    CHECK(took < kDeadline + kMargin);
    if (scenario.quick) CHECK(took < kDeadline / 2);
    CHECK(KeyPieceIn(status.ToString()) == "");
    if (peak_resets) CHECK(growth < kMaxGrowthBytes);
    // The key did go to the hostile server (it is in play), and nowhere else.
    CHECK(server.connections() >= 1);
    if (server.requests() > 0) CHECK(absl::StrContains(server.first_request_head(), kApiKey));
  }
  CHECK(elsewhere.connections() == 0);
}

TEST_CASE(
    "MultiGetEach on a hostile Momento server ends like MultiGet, handing over only a reply") {
  HostileHttpServer elsewhere(HostileScript().Send(HttpResponse(200, "followed")));
  for (Scenario& scenario : Scenarios(elsewhere.endpoint())) {
    if (scenario.op != Op::kGet) continue;
    CAPTURE(scenario.name);
    HostileHttpServer server(std::move(scenario.script));
    absl::StatusOr<std::shared_ptr<MomentoBackend>> backend = NewMomentoBackend(Options(server));
    REQUIRE(backend.ok());

    std::vector<std::optional<std::string>> got;
    const std::string_view key = "k";
    const absl::Time start = absl::Now();
    const absl::Status status =
        (*backend)->MultiGetEach({&key, 1}, [&](std::size_t index, std::optional<ItemView> item) {
          CHECK(index == got.size());
          got.push_back(item.has_value() ? std::optional<std::string>(item->value) : std::nullopt);
          return absl::OkStatus();
        });
    const absl::Duration took = absl::Now() - start;
    INFO(status.ToString() << "\nafter " << absl::FormatDuration(took));

    CHECK(status.code() == scenario.expected);
    if (status.ok()) {
      CHECK(got == std::vector<std::optional<std::string>>{std::string()});
    } else {
      CHECK(got.empty());
    }
    CHECK(took < kDeadline + kMargin);
    if (scenario.quick) CHECK(took < kDeadline / 2);
    CHECK(KeyPieceIn(status.ToString()) == "");
  }
  CHECK(elsewhere.connections() == 0);
}

// A reply followed by bytes nobody asked for (a second, smuggled reply) must not answer the next
// request on that connection: libcurl does not reuse a connection with unread input.
TEST_CASE("a smuggled second reply on a kept connection never answers the next request") {
  HostileHttpServer server(HostileScript()
                               .Send(HttpResponse(200, "first") + HttpResponse(200, "smuggled"))
                               .ReadRequest()
                               .Send(HttpResponse(200, "second-on-same-connection")));
  absl::StatusOr<std::shared_ptr<MomentoBackend>> backend = NewMomentoBackend(Options(server));
  REQUIRE(backend.ok());
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    auto values = (*backend)->MultiGet({"a"});
    INFO(values.status().ToString());
    if (!values.ok()) continue;  // an error is fine; a wrong value is not
    CHECK((*values)[0] != std::optional<std::string>("smuggled"));
  }
}

// The same through ChunkedCache: a GetOrLoad on a hostile server answers with the loaded value
// (the backend failed with time to spare) or DeadlineExceeded at the caller's deadline.
TEST_CASE("GetOrLoad on a hostile Momento server ends by its deadline with a clear status") {
  const std::string megabyte(1 << 20, 'x');
  struct Case {
    const char* name;
    HostileScript script;
    bool loads;
  };
  std::vector<Case> cases;
  cases.push_back({"silent", HostileScript().Hang(), false});
  cases.push_back(
      {"dripping", HostileScript().Drip(HttpResponse(200, "{}"), milliseconds(30)), false});
  cases.push_back({"endless body", HostileScript().Send(Headers(200)).Endless(megabyte), true});
  cases.push_back({"resets", HostileScript().Reset(), true});
  for (Case& c : cases) {
    CAPTURE(c.name);
    HostileHttpServer server(std::move(c.script));
    absl::StatusOr<std::shared_ptr<MomentoBackend>> backend =
        NewMomentoBackend({.endpoint = server.endpoint(), .cache_name = "c", .api_key = kApiKey});
    REQUIRE(backend.ok());
    ChunkedCache cache(*backend);
    int loads = 0;
    const absl::Time start = absl::Now();
    absl::StatusOr<Bytes> got = cache.GetOrLoad("k",
                                                [&]() -> absl::StatusOr<std::string> {
                                                  ++loads;
                                                  return std::string(R"({"loaded":true})");
                                                },
                                                {.deadline = start + absl::Milliseconds(300)});
    const absl::Duration took = absl::Now() - start;
    INFO(got.status().ToString() << " after " << absl::FormatDuration(took));
    CHECK(took < absl::Milliseconds(300) + absl::Milliseconds(100));
    CHECK(KeyPieceIn(got.status().ToString()) == "");
    if (c.loads) {
      REQUIRE(got.ok());
      CHECK(**got == R"({"loaded":true})");
      CHECK(loads == 1);
    } else {
      CHECK(got.status().code() == absl::StatusCode::kDeadlineExceeded);
      CHECK(loads == 0);
    }
  }
}

}  // namespace
}  // namespace chunkcache
