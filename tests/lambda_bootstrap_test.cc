// The Lambda custom runtime example (examples/lambda/bootstrap) against a loopback stand-in of the
// Lambda Runtime API: invocations served cold then warm, every response form, handler errors as
// invocation errors, init errors, deadlines, concurrent invocations, one EMF line per invocation,
// streamed responses read frame by frame (GetStream) with their time to first byte.

#include <catch2/catch.hpp>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "corrupt_entry.h"
#include "fixtures/lambda_runtime_api.h"
#include "fixtures/redis_server.h"
#include "simdjson.h"
#include "zstd.h"

namespace chunkcache {
namespace {

#ifdef CHUNKCACHE_LAMBDA_BOOTSTRAP

using testing::LambdaInvocation;
using testing::LambdaRuntimeApi;
using testing::RedisServer;
using testing::redis_fixture_internal::CapturedRun;
using testing::redis_fixture_internal::RunAndCapture;

constexpr std::size_t kBufferedLimit = 6291456;  // Lambda's buffered response limit

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// Runs the bootstrap until it has served `invocations` (CHUNKCACHE_MAX_INVOCATIONS), with `env`.
// With a `shell` script, `sh -c` runs it first, with the command line as "$@" (e.g.
// `exec "$@" >&-` starts the bootstrap with stdout closed). Throws if it runs past `timeout`.
CapturedRun RunBootstrap(const LambdaRuntimeApi& api, int invocations,
                         std::vector<std::string> env = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::string& shell = "") {
  std::vector<std::string> argv = {"env", "AWS_LAMBDA_RUNTIME_API=" + api.address(),
                                   "CHUNKCACHE_MAX_INVOCATIONS=" + std::to_string(invocations),
                                   "AWS_LAMBDA_FUNCTION_NAME=catalogue-test"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.push_back(CHUNKCACHE_LAMBDA_BOOTSTRAP);
  if (!shell.empty()) argv.insert(argv.begin(), {"sh", "-c", shell, "sh"});
  return RunAndCapture(argv, timeout);
}

// Waits up to `timeout` for `done`; returns whether it came true.
template <typename Predicate>
bool Eventually(Predicate done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return testing::redis_fixture_internal::WaitFor(timeout, done, std::chrono::milliseconds(10));
}

// The number of lines of `text` that contain `needle`.
int CountLines(const std::string& text, absl::string_view needle) {
  int count = 0;
  for (const std::string& line : Lines(text)) count += absl::StrContains(line, needle) ? 1 : 0;
  return count;
}

// Checks one EMF line and returns its "Loads" value.
std::uint64_t CheckEmfLine(const std::string& line) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(line).get(root) == simdjson::SUCCESS);
  std::string_view ns, function;
  REQUIRE(root["_aws"]["CloudWatchMetrics"].at(0)["Namespace"].get(ns) == simdjson::SUCCESS);
  CHECK(ns == "chunkcache/lambda");
  REQUIRE(root["FunctionName"].get(function) == simdjson::SUCCESS);
  CHECK(function == "catalogue-test");
  std::uint64_t loads = 0;
  REQUIRE(root["Loads"].get(loads) == simdjson::SUCCESS);
  return loads;
}

TEST_CASE("the bootstrap serves twenty invocations, cold then warm, one EMF line each") {
  LambdaRuntimeApi api;
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(api.Enqueue(R"({"op":"catalogue"})").at(0));
  }
  const CapturedRun run = RunBootstrap(api, 20, {"CHUNKCACHE_CATALOGUE_MB=1"});
  INFO(run.err);
  REQUIRE(run.succeeded());
  CHECK(absl::StrContains(run.err, "init took"));

  const std::string json = testing::GenerateCatalogue({.megabytes = 1});
  for (const std::string& id : ids) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
    CHECK(done->mode == "buffered");
    CHECK(done->response == json);
  }
  const std::vector<std::string> lines = Lines(run.out);
  REQUIRE(lines.size() == 20);
  std::uint64_t loads = 0;
  for (const std::string& line : lines) loads += CheckEmfLine(line);
  CHECK(loads == 1);                        // the origin, once
  CHECK(CheckEmfLine(lines.front()) == 1);  // on the cold invocation
  const LambdaRuntimeApi::Stats stats = api.GetStats();
  CHECK(stats.first_next_at_ms.has_value());
}

TEST_CASE("a catalogue above 6 MB is streamed, or sent compressed, never refused") {
  LambdaRuntimeApi api;
  const std::string auto_id = api.Enqueue(R"({"op":"catalogue"})").at(0);
  const std::string stream_id = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const std::string zstd_id = api.Enqueue(R"({"op":"catalogue","format":"zstd-base64"})").at(0);
  const std::string manifest_id = api.Enqueue(R"({"op":"catalogue","format":"manifest"})").at(0);
  const std::string json_id = api.Enqueue(R"({"op":"catalogue","format":"json"})").at(0);
  const CapturedRun run = RunBootstrap(api, 5, {"CHUNKCACHE_CATALOGUE_MB=8"});
  INFO(run.err);
  REQUIRE(run.succeeded());
  const std::string json = testing::GenerateCatalogue({.megabytes = 8});
  REQUIRE(json.size() > kBufferedLimit);

  for (const std::string& id : {auto_id, stream_id}) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
    CHECK(done->mode == "streaming");
    CHECK(done->response == json);
  }

  std::optional<LambdaInvocation> zstd = api.WaitFor(zstd_id, std::chrono::seconds(10));
  REQUIRE(zstd.has_value());
  CHECK(zstd->state == "succeeded");
  CHECK(zstd->mode == "buffered");
  CHECK(zstd->response.size() < kBufferedLimit);
  simdjson::dom::parser parser;
  simdjson::dom::element body;
  REQUIRE(parser.parse(zstd->response).get(body) == simdjson::SUCCESS);
  std::string_view data;
  std::uint64_t raw_size = 0;
  REQUIRE(body["data"].get(data) == simdjson::SUCCESS);
  REQUIRE(body["raw_size"].get(raw_size) == simdjson::SUCCESS);
  CHECK(raw_size == json.size());
  std::string frame;
  REQUIRE(absl::Base64Unescape(absl::string_view(data.data(), data.size()), &frame));
  std::string decoded(raw_size, '\0');
  CHECK(ZSTD_decompress(decoded.data(), decoded.size(), frame.data(), frame.size()) == raw_size);
  CHECK(decoded == json);

  std::optional<LambdaInvocation> manifest = api.WaitFor(manifest_id, std::chrono::seconds(10));
  REQUIRE(manifest.has_value());
  CHECK(manifest->state == "succeeded");
  simdjson::dom::element m;
  REQUIRE(parser.parse(manifest->response).get(m) == simdjson::SUCCESS);
  simdjson::dom::array chunks;
  REQUIRE(m["chunks"].get(chunks) == simdjson::SUCCESS);
  CHECK(chunks.size() >= 2);

  // Asked for buffered JSON that cannot fit: an invocation error that says what to ask for.
  std::optional<LambdaInvocation> refused = api.WaitFor(json_id, std::chrono::seconds(10));
  REQUIRE(refused.has_value());
  CHECK(refused->state == "errored");
  CHECK(refused->error_type == "ResourceExhausted");
  CHECK(absl::StrContains(refused->error_message, "stream"));
}

TEST_CASE("bad requests and missed deadlines are invocation errors, not crashes") {
  LambdaRuntimeApi api;
  const std::string not_json = api.Enqueue("this is not json").at(0);
  const std::string bad_op = api.Enqueue(R"({"op":"drop tables"})").at(0);
  const std::string bad_format = api.Enqueue(R"({"op":"catalogue","format":"xml"})").at(0);
  const std::string late = api.Enqueue(R"({"op":"catalogue"})", /*timeout_ms=*/1).at(0);
  const std::string fine = api.Enqueue(R"({"op":"catalogue"})").at(0);
  const CapturedRun run = RunBootstrap(api, 5, {"CHUNKCACHE_CATALOGUE_MB=0.1"});
  INFO(run.err);
  REQUIRE(run.succeeded());  // the process lived through all of them

  for (const std::string& id : {not_json, bad_op, bad_format}) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(done.has_value());
    CHECK(done->state == "errored");
    CHECK(done->error_type == "InvalidArgument");
    CHECK_FALSE(done->malformed);
    CHECK(done->headers.at("lambda-runtime-function-error-type") == "InvalidArgument");
  }
  std::optional<LambdaInvocation> missed = api.WaitFor(late, std::chrono::seconds(10));
  REQUIRE(missed.has_value());
  CHECK(missed->state == "errored");
  CHECK(missed->error_type == "DeadlineExceeded");
  std::optional<LambdaInvocation> ok = api.WaitFor(fine, std::chrono::seconds(10));
  REQUIRE(ok.has_value());
  CHECK(ok->state == "succeeded");
  CHECK(Lines(run.out).size() == 5);  // an EMF line for failed invocations too
}

TEST_CASE("an invalid backend URL is reported as an init error") {
  LambdaRuntimeApi api;
  const CapturedRun run = RunBootstrap(api, 1, {"CHUNKCACHE_BACKEND=redis://:hunter2@127.0.0.1:1"});
  CHECK_FALSE(run.succeeded());
  std::optional<std::pair<std::string, std::string>> init = api.InitError();
  REQUIRE(init.has_value());
  CHECK(init->first == "Unavailable");
  CHECK_FALSE(absl::StrContains(init->second, "hunter2"));
  CHECK(api.GetStats().next_requests == 0);

  LambdaRuntimeApi api2;
  const CapturedRun bad_scheme = RunBootstrap(api2, 1, {"CHUNKCACHE_BACKEND=ftp://somewhere"});
  CHECK_FALSE(bad_scheme.succeeded());
  REQUIRE(api2.InitError().has_value());
  CHECK(api2.InitError()->first == "InvalidArgument");
}

TEST_CASE("with two threads the bootstrap takes two invocations at once") {
  LambdaRuntimeApi api;
  CapturedRun run;
  std::thread bootstrap([&] {
    run = RunBootstrap(api, 8, {"CHUNKCACHE_CATALOGUE_MB=0.5", "CHUNKCACHE_THREADS=2"});
  });
  // Both threads wait in /next at once before there is anything to serve.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (api.GetStats().waiting_next < 2 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(api.GetStats().max_concurrent_next >= 2);
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(api.Enqueue(R"({"op":"catalogue"})").at(0));
  bootstrap.join();
  INFO(run.err);
  REQUIRE(run.succeeded());
  for (const std::string& id : ids) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
  }
  CHECK(Lines(run.out).size() == 8);
}

TEST_CASE("one failed /next is retried with a log line: all four threads keep serving") {
  LambdaRuntimeApi api;
  api.FailNext(1);
  CapturedRun run;
  std::thread bootstrap([&] {
    run = RunBootstrap(api, 8, {"CHUNKCACHE_CATALOGUE_MB=0.1", "CHUNKCACHE_THREADS=4"});
  });
  // After the failure all four threads wait in /next again (before the fix, three did).
  const bool four_waiting = Eventually([&] {
    const LambdaRuntimeApi::Stats stats = api.GetStats();
    return stats.failed_next == 1 && stats.waiting_next == 4;
  });
  const LambdaRuntimeApi::Stats stats = api.GetStats();
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(api.Enqueue(R"({"op":"catalogue"})").at(0));
  bootstrap.join();
  INFO(run.err);
  CHECK(stats.failed_next == 1);
  CHECK(stats.waiting_next == 4);
  CHECK(four_waiting);
  CHECK(run.succeeded());
  CHECK(CountLines(run.err, "GET /next: HTTP 500") == 1);  // the failure, logged once
  CHECK(CountLines(run.err, "retrying in") == 1);
  for (const LambdaInvocation& invocation : api.Invocations()) {
    INFO(invocation.request_id);
    CHECK(invocation.state == "succeeded");
  }
}

TEST_CASE("a Runtime API that keeps failing /next stops every thread: a non-zero exit in time") {
  constexpr auto kGiveUp = std::chrono::milliseconds(1000);
  // Retried until the bound, then the process ends; the slack covers the last backoff step (1 s),
  // threads parked in a long poll noticing (about 1 s) and a loaded machine.
  constexpr auto kSlack = std::chrono::milliseconds(3500);
  const std::string give_up = "CHUNKCACHE_RUNTIME_API_GIVE_UP_MS=1000";
  using Clock = std::chrono::steady_clock;

  SECTION("every /next fails from the start") {
    LambdaRuntimeApi api;
    api.FailNext(-1);
    const Clock::time_point start = Clock::now();
    const CapturedRun run =
        RunBootstrap(api, 100, {"CHUNKCACHE_THREADS=2", give_up}, std::chrono::seconds(20));
    const auto took = Clock::now() - start;
    INFO(run.err);
    CHECK_FALSE(run.succeeded());
    CHECK(took >= kGiveUp);  // retried for the whole bound, not given up at the first failure
    CHECK(took <= kGiveUp + kSlack);
    CHECK(api.GetStats().failed_next >= 2 * 3);  // each thread retried (10, 20, 40 ms, ...)
    CHECK(CountLines(run.err, "GET /next") >= 2 * 3);
    CHECK(absl::StrContains(run.err, "runtime stopped"));
  }

  SECTION("one thread's /next fails for good while three wait in a long poll") {
    LambdaRuntimeApi api;
    CapturedRun run;
    std::string failure;
    Clock::time_point finished;
    std::thread bootstrap([&] {
      try {
        run =
            RunBootstrap(api, 100, {"CHUNKCACHE_CATALOGUE_MB=0.1", "CHUNKCACHE_THREADS=4", give_up},
                         std::chrono::seconds(15));
      } catch (const std::exception& e) {
        failure = e.what();
      }
      finished = Clock::now();
    });
    REQUIRE(Eventually([&] { return api.GetStats().waiting_next == 4; }));
    // Three threads are past the failure check, parked; the one that serves this event fails.
    api.FailNext(-1);
    const Clock::time_point start = Clock::now();
    const std::string id = api.Enqueue(R"({"op":"catalogue"})").at(0);
    bootstrap.join();
    INFO(run.err);
    REQUIRE(failure.empty());  // before the fix the parked threads kept the process alive
    CHECK_FALSE(run.succeeded());
    CHECK(finished - start >= kGiveUp);
    CHECK(finished - start <= kGiveUp + kSlack);
    CHECK(api.GetStats().failed_next >= 3);
    CHECK(CountLines(run.err, "GET /next") >= 3);
    CHECK(absl::StrContains(run.err, "runtime stopped"));
    std::optional<LambdaInvocation> served = api.WaitFor(id, std::chrono::seconds(1));
    REQUIRE(served.has_value());
    CHECK(served->state == "succeeded");
  }

  SECTION("the Runtime API goes away while every thread waits") {
    LambdaRuntimeApi api;
    CapturedRun run;
    Clock::time_point finished;
    std::thread bootstrap([&] {
      run = RunBootstrap(api, 100, {"CHUNKCACHE_THREADS=2", give_up}, std::chrono::seconds(20));
      finished = Clock::now();
    });
    REQUIRE(Eventually([&] { return api.GetStats().waiting_next == 2; }));
    const Clock::time_point start = Clock::now();
    api.Kill();
    bootstrap.join();
    INFO(run.err);
    CHECK_FALSE(run.succeeded());
    CHECK(finished - start >= kGiveUp);
    CHECK(finished - start <= kGiveUp + kSlack);
    CHECK(CountLines(run.err, "GET /next") >= 2 * 3);
  }
}

TEST_CASE("request ids are percent-encoded in the URLs: a hostile id reaches no other path") {
  LambdaRuntimeApi api;
  // Each id with whether its event is answered by /response (true) or by /error (false).
  const std::vector<std::pair<std::string, bool>> cases = {{"a/b", true},
                                                           {"q?x=1", true},
                                                           {"frag#x", true},
                                                           {"with space", true},
                                                           {"..", true},
                                                           {".", false},
                                                           {"../init/error#", true},
                                                           {"../init/error?", false},
                                                           {"../../../_test/stats#", true},
                                                           {"100%", true},
                                                           {"%2F", false},
                                                           {"a&b=c;d+e", true}};
  for (const auto& [id, good] : cases) {
    api.EnqueueWithId(id, good ? R"({"op":"catalogue"})" : R"({"op":"nope"})");
  }
  const CapturedRun run = RunBootstrap(api, static_cast<int>(cases.size()),
                                       {"CHUNKCACHE_CATALOGUE_MB=0.01"}, std::chrono::seconds(60));
  INFO(run.err);
  CHECK(run.succeeded());
  const LambdaRuntimeApi::Stats stats = api.GetStats();
  CHECK(stats.bad_requests == 0);
  CHECK(stats.last_bad_request.empty());
  CHECK_FALSE(api.InitError().has_value());
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.01});
  const std::vector<LambdaInvocation> invocations = api.Invocations();
  REQUIRE(invocations.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].first);
    CHECK(invocations[i].request_id == cases[i].first);
    if (cases[i].second) {
      CHECK(invocations[i].state == "succeeded");
      CHECK(invocations[i].response == json);
    } else {
      CHECK(invocations[i].state == "errored");
      CHECK(invocations[i].error_type == "InvalidArgument");
    }
  }
}

TEST_CASE(
    "the bootstrap started with standard descriptors closed serves and writes into no socket") {
  // ">&-": the EMF lines' stdout is closed; "<&- >&- 2>&-": all three are. Before the fix,
  // libcurl's wake-up socket pair and the Runtime API connection took the free numbers, so the EMF
  // and log lines went into them.
  for (const std::string redirections : {">&-", "<&- >&- 2>&-"}) {
    INFO(redirections);
    const bool stderr_closed = absl::StrContains(redirections, "2>&-");
    testing::redis_fixture_internal::TempDir dir("chunkcache-lambda-fds-");
    const std::string pid_file = dir.path() + "/pid";
    LambdaRuntimeApi api;
    CapturedRun run;
    std::thread bootstrap([&] {
      run = RunBootstrap(api, 7, {"CHUNKCACHE_CATALOGUE_MB=0.1", "CHUNKCACHE_THREADS=1"},
                         std::chrono::seconds(60),
                         "echo $$ > '" + pid_file + "'; exec \"$@\" " + redirections);
    });
    // Parked in /next: every socket it needs is open by now.
    const bool waiting = Eventually([&] { return api.GetStats().waiting_next == 1; });
    std::string pid;
    std::getline(std::ifstream(pid_file), pid);
    std::vector<std::string> targets;
    for (int fd = 0; fd <= 2; ++fd) {
      std::error_code error;
      targets.push_back(
          std::filesystem::read_symlink("/proc/" + pid + "/fd/" + std::to_string(fd), error)
              .string());
    }
    std::vector<std::string> ids;
    for (int i = 0; i < 6; ++i) ids.push_back(api.Enqueue(R"({"op":"catalogue"})").at(0));
    ids.push_back(api.Enqueue(R"({"op":"nope"})").at(0));  // a line on stderr too
    bootstrap.join();
    INFO(run.err);
    REQUIRE(waiting);
    CHECK(targets[1] == "/dev/null");
    if (stderr_closed) {
      CHECK(targets[0] == "/dev/null");
      CHECK(targets[2] == "/dev/null");
    } else {
      // The failed EMF writes are reported (once), not silently lost.
      CHECK(CountLines(run.err, "EMF") == 1);
    }
    CHECK(run.succeeded());
    CHECK(run.out.empty());
    const LambdaRuntimeApi::Stats stats = api.GetStats();
    CHECK(stats.bad_requests == 0);
    CHECK(stats.last_bad_request.empty());
    const std::vector<LambdaInvocation> invocations = api.Invocations();
    REQUIRE(invocations.size() == ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(invocations[i].state == (i + 1 < ids.size() ? "succeeded" : "errored"));
    }
  }
}

TEST_CASE("a Redis error that quotes the password is not posted as the init error") {
  // With AUTH renamed, Redis answers `ERR unknown command 'AUTH', with args beginning with:
  // 'hunter2'`; the init error (and the log line) must not carry that.
  RedisServer redis({.extra_args = {"--rename-command", "AUTH", "AUTH-renamed-by-the-test"}});
  LambdaRuntimeApi api;
  const CapturedRun run = RunBootstrap(
      api, 1, {"CHUNKCACHE_BACKEND=redis://:hunter2@127.0.0.1:" + std::to_string(redis.port())});
  INFO(run.err);
  CHECK_FALSE(run.succeeded());
  std::optional<std::pair<std::string, std::string>> init = api.InitError();
  REQUIRE(init.has_value());
  INFO(init->first << ": " << init->second);
  CHECK_FALSE(absl::StrContains(init->second, "hunter2"));
  CHECK_FALSE(absl::StrContains(run.err, "hunter2"));
  CHECK(api.GetStats().next_requests == 0);

  // Bad URLs that hold a password: the parse error must not quote it either.
  for (const std::string url :
       {"redis://:hunter2@127.0.0.1:notaport", "redis://:hunter2@/",
        "redis://:hunter2@127.0.0.1:6379/notadb", "redis://:hunter2%zz@127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:6379?unknown=1"}) {
    INFO(url);
    LambdaRuntimeApi bad_url_api;
    const CapturedRun bad = RunBootstrap(bad_url_api, 1, {"CHUNKCACHE_BACKEND=" + url});
    INFO(bad.err);
    CHECK_FALSE(bad.succeeded());
    std::optional<std::pair<std::string, std::string>> error = bad_url_api.InitError();
    REQUIRE(error.has_value());
    CHECK_FALSE(absl::StrContains(error->second, "hunter2"));
    CHECK_FALSE(absl::StrContains(bad.err, "hunter2"));
  }
}

// The invocation figures the bootstrap adds to an EMF line: time_to_first_byte_ms (nullopt if
// absent) and response_ms. Checks they are declared in a directive of their own.
struct InvocationFigures {
  std::optional<double> time_to_first_byte_ms;
  double response_ms = -1;
};
InvocationFigures ReadInvocationFigures(const std::string& line) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(line).get(root) == simdjson::SUCCESS);
  InvocationFigures figures;
  double value = 0;
  if (root["time_to_first_byte_ms"].get(value) == simdjson::SUCCESS) {
    figures.time_to_first_byte_ms = value;
  }
  REQUIRE(root["response_ms"].get(figures.response_ms) == simdjson::SUCCESS);
  // The first directive declares them, in the line's namespace and dimensions.
  simdjson::dom::element directive = root["_aws"]["CloudWatchMetrics"].at(0);
  std::string_view ns, dimension;
  REQUIRE(directive["Namespace"].get(ns) == simdjson::SUCCESS);
  CHECK(ns == "chunkcache/lambda");
  REQUIRE(directive["Dimensions"].at(0).at(0).get(dimension) == simdjson::SUCCESS);
  CHECK(dimension == "FunctionName");
  std::set<std::string> declared;
  simdjson::dom::array metrics;
  REQUIRE(directive["Metrics"].get(metrics) == simdjson::SUCCESS);
  for (simdjson::dom::element metric : metrics) {
    std::string_view name, unit;
    REQUIRE(metric["Name"].get(name) == simdjson::SUCCESS);
    REQUIRE(metric["Unit"].get(unit) == simdjson::SUCCESS);
    CHECK(unit == "Milliseconds");
    declared.insert(std::string(name));
  }
  CHECK(declared.count("response_ms") == 1);
  CHECK(declared.count("time_to_first_byte_ms") == (figures.time_to_first_byte_ms ? 1 : 0));
  return figures;
}

using testing::StoreWithCorruptLastChunk;

TEST_CASE(
    "a streamed catalogue goes frame by frame, equals the JSON, with its time to first byte") {
  LambdaRuntimeApi api;
  const std::string cold = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const std::string warm = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const std::string warm_auto = api.Enqueue(R"({"op":"catalogue"})").at(0);
  const std::string error = api.Enqueue(R"({"op":"nope"})").at(0);
  // No near cache: the warm invocations read the stored frames (GetStream), not a decoded copy.
  const CapturedRun run = RunBootstrap(api, 4, {"CHUNKCACHE_CATALOGUE_MB=8", "CHUNKCACHE_L1_MB=0"});
  INFO(run.err);
  REQUIRE(run.succeeded());
  const std::string json = testing::GenerateCatalogue({.megabytes = 8});
  for (const std::string& id : {cold, warm, warm_auto}) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
    CHECK(done->mode == "streaming");
    CHECK(done->response_bytes == static_cast<std::int64_t>(json.size()));
    CHECK(done->response == json);
    CHECK(done->trailers.empty());
  }

  const std::vector<std::string> lines = Lines(run.out);
  REQUIRE(lines.size() == 4);
  CHECK(CheckEmfLine(lines[0]) == 1);  // the cold one loaded; the others did not
  CHECK(CheckEmfLine(lines[1]) == 0);
  for (std::size_t i = 0; i < 3; ++i) {
    INFO(lines[i]);
    const InvocationFigures figures = ReadInvocationFigures(lines[i]);
    REQUIRE(figures.time_to_first_byte_ms.has_value());
    CHECK(*figures.time_to_first_byte_ms > 0);
    CHECK(*figures.time_to_first_byte_ms <= figures.response_ms);
  }
  // An invocation that sent no body has no time to first byte.
  const InvocationFigures failed = ReadInvocationFigures(lines[3]);
  CHECK_FALSE(failed.time_to_first_byte_ms.has_value());
  CHECK(failed.response_ms >= 0);
}

TEST_CASE("once the near copy is older than l1_fresh_for, a stream sends the confirmed copy") {
  LambdaRuntimeApi api;
  const std::string cold = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  CapturedRun run;
  std::thread bootstrap([&] { run = RunBootstrap(api, 2, {"CHUNKCACHE_CATALOGUE_MB=1"}); });
  const bool served = api.WaitFor(cold, std::chrono::seconds(20)).has_value();
  // The near copy is older than l1_fresh_for (1 s): GetStream reads the manifest, which names it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const std::string confirmed = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  bootstrap.join();
  INFO(run.err);
  REQUIRE(served);
  CHECK(run.succeeded());
  std::optional<LambdaInvocation> done = api.WaitFor(confirmed, std::chrono::seconds(1));
  REQUIRE(done.has_value());
  CHECK(done->state == "succeeded");
  CHECK(done->response == testing::GenerateCatalogue({.megabytes = 1}));
}

TEST_CASE("a corrupt later frame ends a streamed response with the error trailers") {
  RedisServer redis;
  const std::string url = "redis://127.0.0.1:" + std::to_string(redis.port());
  const std::string json = testing::GenerateCatalogue({.megabytes = 8});
  StoreWithCorruptLastChunk(url, json);

  LambdaRuntimeApi api;
  const std::string streamed = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const std::string healed = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const std::string again = api.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const CapturedRun run =
      RunBootstrap(api, 3, {"CHUNKCACHE_BACKEND=" + url, "CHUNKCACHE_CATALOGUE_MB=8"});
  INFO(run.err);
  REQUIRE(run.succeeded());
  std::optional<LambdaInvocation> done = api.WaitFor(streamed, std::chrono::seconds(10));
  REQUIRE(done.has_value());
  CHECK(done->mode == "streaming");
  // The frames before the damaged one went out; then the trailers failed the invocation.
  CHECK(done->state == "errored");
  CHECK(done->error_type == "DataLoss");
  CHECK(done->trailers.at("lambda-runtime-function-error-type") == "DataLoss");
  CHECK_FALSE(done->malformed);
  CHECK(done->response_bytes > 0);
  CHECK(done->response.size() < json.size());
  CHECK(absl::StartsWith(json, done->response));
  CHECK(absl::StrContains(run.err, "invocation failed"));
  const std::vector<std::string> lines = Lines(run.out);
  REQUIRE(lines.size() == 3);
  CHECK(CheckEmfLine(lines[0]) == 0);  // the damage was found after output began: no load
  CHECK(ReadInvocationFigures(lines[0]).time_to_first_byte_ms.has_value());

  // The next invocation reads through GetOrLoad, which drops the corrupt entry and loads it; the
  // one after that streams the new entry.
  for (const std::string& id : {healed, again}) {
    std::optional<LambdaInvocation> next = api.WaitFor(id, std::chrono::seconds(10));
    REQUIRE(next.has_value());
    CHECK(next->state == "succeeded");
    CHECK(next->response == json);
  }
  CHECK(CheckEmfLine(lines[1]) == 1);
  CHECK(CheckEmfLine(lines[2]) == 0);
}

#else

TEST_CASE("the Lambda bootstrap test needs the examples") {
  WARN("built without CHUNKCACHE_BUILD_EXAMPLES: the bootstrap is not there to test");
}

#endif

}  // namespace
}  // namespace chunkcache
