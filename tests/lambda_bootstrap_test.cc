// The Lambda custom runtime example (examples/lambda/bootstrap) against a loopback stand-in of the
// Lambda Runtime API: invocations served cold then warm, every response form, handler errors as
// invocation errors, init errors, deadlines, concurrent invocations, one EMF line per invocation.

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catalogue.h"
#include "fixtures/lambda_runtime_api.h"
#include "simdjson.h"
#include "zstd.h"

namespace chunkcache {
namespace {

#ifdef CHUNKCACHE_LAMBDA_BOOTSTRAP

using testing::LambdaInvocation;
using testing::LambdaRuntimeApi;
using testing::redis_fixture_internal::CapturedRun;
using testing::redis_fixture_internal::RunAndCapture;

constexpr std::size_t kBufferedLimit = 6291456;  // Lambda's buffered response limit

// Runs the bootstrap until it has served `invocations` (CHUNKCACHE_MAX_INVOCATIONS), with `env`.
CapturedRun RunBootstrap(const LambdaRuntimeApi& api, int invocations,
                         std::vector<std::string> env = {}) {
  std::vector<std::string> argv = {"env", "AWS_LAMBDA_RUNTIME_API=" + api.address(),
                                   "CHUNKCACHE_MAX_INVOCATIONS=" + std::to_string(invocations),
                                   "AWS_LAMBDA_FUNCTION_NAME=catalogue-test"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.push_back(CHUNKCACHE_LAMBDA_BOOTSTRAP);
  return RunAndCapture(argv, std::chrono::seconds(60));
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
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

  const std::string json = catalogue::GenerateCatalogue({.megabytes = 1});
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
  const std::string json = catalogue::GenerateCatalogue({.megabytes = 8});
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

#else

TEST_CASE("the Lambda bootstrap test needs the examples") {
  WARN("built without CHUNKCACHE_BUILD_EXAMPLES: the bootstrap is not there to test");
}

#endif

}  // namespace
}  // namespace chunkcache
