#include "chunkcache/metrics.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/redis_server.h"
#include "simdjson.h"
#include "test_util.h"

namespace chunkcache {
namespace {

// Stats with something in every section: hits, misses, loads, corrupt reads, backend errors.
CacheStats BusyStats() {
  auto faulty = NewFaultInjectionBackend(NewMemoryBackend()).value();
  ChunkedCache cache(faulty, {.chunk_size = 4096, .l1_capacity_bytes = 1 << 20});
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.05});
  REQUIRE(cache.Put("a", json).ok());
  for (int i = 0; i < 5; ++i) REQUIRE(cache.Get("a").ok());
  CHECK(cache.Get("absent").status().code() == absl::StatusCode::kNotFound);
  REQUIRE(cache.GetOrLoad("b", [&] { return absl::StatusOr<std::string>(json); }).ok());
  faulty->SetOptions({.read_error_rate = 1});
  CHECK_FALSE(cache.Get("c").ok());
  faulty->SetOptions({.read_error_rate = 1, .error_code = absl::StatusCode::kDeadlineExceeded});
  CHECK_FALSE(cache.Get("c").ok());
  faulty->SetOptions({.flip_byte_rate = 1});
  CHECK_FALSE(cache.Get("b2").ok());
  REQUIRE(cache.Put("d", json).ok());
  CHECK_FALSE(cache.Get("d").ok());  // corrupt
  return cache.Stats();
}

// Checks the text exposition format line by line, strictly: HELP and TYPE once per family and
// before its samples, sample names and labels well-formed and belonging to the family, histogram
// buckets cumulative and ending in +Inf == _count. Returns family name -> type.
std::map<std::string, std::string> CheckPrometheusText(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? (-?[0-9.e+-]+|\+Inf))");
  std::map<std::string, std::string> families;
  std::string family, family_type;
  std::uint64_t last_bucket = 0;
  bool saw_inf = false;
  REQUIRE(absl::EndsWith(text, "\n"));
  for (absl::string_view line_view : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const std::string line(line_view);
    CAPTURE(line);
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      REQUIRE(families.count(m[1]) == 0);  // one family, one HELP
      family = m[1];
      family_type.clear();
      last_bucket = 0;
      saw_inf = false;
      continue;
    }
    if (std::regex_match(line, m, type)) {
      REQUIRE(m[1] == family);
      REQUIRE(family_type.empty());
      family_type = m[2];
      families[family] = family_type;
      continue;
    }
    REQUIRE(std::regex_match(line, m, sample));
    REQUIRE_FALSE(family_type.empty());
    const std::string name = m[1];
    if (family_type == "histogram") {
      REQUIRE((name == family + "_bucket" || name == family + "_sum" || name == family + "_count"));
      if (name == family + "_bucket") {
        const std::uint64_t value = std::stoull(m[7]);
        CHECK(value >= last_bucket);
        last_bucket = value;
        saw_inf = absl::StrContains(line, "le=\"+Inf\"");
      }
      if (name == family + "_count") {
        CHECK(saw_inf);
        CHECK(std::stoull(m[7]) == last_bucket);
      }
    } else {
      REQUIRE(name == family);
      if (family_type == "counter") CHECK(absl::EndsWith(name, "_total"));
    }
  }
  return families;
}

TEST_CASE("ToPrometheusText writes valid text exposition format") {
  const CacheStats stats = BusyStats();
  absl::StatusOr<std::string> text = ToPrometheusText(
      stats, {.labels = {{"cache", "cata\"logue\\x\nnew"}, {"region", "eu-west-1"}}});
  REQUIRE(text.ok());
  const std::map<std::string, std::string> families = CheckPrometheusText(*text);
  CHECK(families.at("chunkcache_hits_total") == "counter");
  CHECK(families.at("chunkcache_l1_bytes") == "gauge");
  CHECK(families.at("chunkcache_get_latency_seconds") == "histogram");
  CHECK(families.at("chunkcache_backend_latency_seconds") == "histogram");
  CHECK(absl::StrContains(
      *text, absl::StrCat("chunkcache_hits_total{cache=\"cata\\\"logue\\\\x\\nnew\",region=\"eu-"
                          "west-1\"} ",
                          stats.hits, "\n")));
  CHECK(absl::StrContains(*text, "code=\"UNAVAILABLE\"} 1\n"));
  CHECK(absl::StrContains(*text, "code=\"DEADLINE_EXCEEDED\"} 1\n"));
  CHECK(absl::StrContains(*text, absl::StrCat("chunkcache_corrupt_reads_total{cache=")));

  // Prometheus' own parser, where Debian's python3-prometheus-client is installed.
  if (std::filesystem::exists("/usr/bin/python3") &&
      std::system("/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null") == 0) {
    testing::TempDir dir;
    testing::WriteFile(dir.path() / "metrics.txt", *text);
    const std::string command =
        "/usr/bin/python3 -c 'import sys; "
        "from prometheus_client.parser import text_string_to_metric_families "
        "as p; f = list(p(open(sys.argv[1]).read())); print(len(f), "
        "sum(len(x.samples) for x in f))' " +
        (dir.path() / "metrics.txt").string() + " > " + (dir.path() / "out").string();
    REQUIRE(std::system(command.c_str()) == 0);
    const std::string out = testing::ReadFile(dir.path() / "out");
    CHECK(absl::StartsWith(out, absl::StrCat(families.size(), " ")));
  } else {
    WARN("python3-prometheus-client not installed: checked with the line rules only");
  }
}

// The HELP line of `family` in `text`, without "# HELP <family> ".
std::string HelpOf(const std::string& text, const std::string& family) {
  const std::string start = absl::StrCat("# HELP ", family, " ");
  const std::size_t at = text.find(start);
  if (at == std::string::npos) return "";
  const std::size_t from = at + start.size();
  return text.substr(from, text.find('\n', from) - from);
}

TEST_CASE("the gets help says which calls are counted, and it is what is counted") {
  absl::StatusOr<std::string> text = ToPrometheusText(CacheStats{});
  REQUIRE(text.ok());
  CHECK(HelpOf(*text, "chunkcache_gets_total") ==
        "Near-cache hits and backend reads of Get, GetStream and GetOrLoad (one per GetOrLoad "
        "flight: its coalesced callers are not counted, nor is GetCompressed).");

  ChunkedCache cache(NewMemoryBackend(), {.l1_capacity_bytes = 1 << 20});
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.01});
  REQUIRE(cache.Put("k", json).ok());
  REQUIRE(cache.Get("k").ok());  // a backend read
  REQUIRE(cache.Get("k").ok());  // a near-cache hit
  REQUIRE(cache.GetStream("k", [](std::string_view) { return absl::OkStatus(); }).ok());
  REQUIRE(cache.GetOrLoad("k", [&] { return absl::StatusOr<std::string>(json); }).ok());
  REQUIRE(cache.GetCompressed("k").ok());  // not counted
  CHECK_FALSE(cache.Get("").ok());         // an invalid key: not counted
  CHECK(cache.Stats().gets == 4);
}

TEST_CASE("lease-held refreshes are exported apart from dropped ones") {
  CacheStats stats;
  stats.refreshes_dropped = 3;
  stats.refreshes_lease_held = 7;
  absl::StatusOr<std::string> text = ToPrometheusText(stats);
  REQUIRE(text.ok());
  CHECK(absl::StrContains(*text, "\nchunkcache_refreshes_lease_held_total 7\n"));
  CHECK(absl::StrContains(*text, "\nchunkcache_refreshes_dropped_total 3\n"));
  CHECK(HelpOf(*text, "chunkcache_refreshes_dropped_total") ==
        "Background refreshes not run: the refresh queue was full or no refresh thread could "
        "start.");
  CHECK(HelpOf(*text, "chunkcache_refreshes_lease_held_total") ==
        "Background refreshes left to another process, which held the key's lease.");
  absl::StatusOr<std::string> emf = ToCloudWatchEmf(stats, {});
  REQUIRE(emf.ok());
  CHECK(absl::StrContains(*emf, "\"RefreshesLeaseHeld\":7"));
  CHECK(absl::StrContains(*emf, "\"RefreshesDropped\":3"));
  CacheStats before;
  before.refreshes_lease_held = 2;
  CHECK(StatsDelta(stats, before).refreshes_lease_held == 5);
}

TEST_CASE("ToPrometheusText refuses a bad prefix or label name") {
  const CacheStats stats;
  CHECK(ToPrometheusText(stats, {.prefix = "1bad"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ToPrometheusText(stats, {.prefix = "my app"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  for (const char* label : {"le", "code", "__x", "a-b", ""}) {
    CAPTURE(label);
    CHECK(ToPrometheusText(stats, {.labels = {{label, "v"}}}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(ToPrometheusText(stats, {.labels = {{"a", "1"}, {"a", "2"}}}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ToPrometheusText(stats, {.prefix = "app:cache"}).ok());
}

TEST_CASE("ToCloudWatchEmf writes one valid EMF line within CloudWatch's limits") {
  const CacheStats stats = BusyStats();
  const absl::Time when = absl::FromUnixMillis(1'780'000'000'123);
  absl::StatusOr<std::string> line =
      ToCloudWatchEmf(stats, {.metric_namespace = "Video/Catalogue",
                              .dimensions = {{"Service", "catalogue \"api\""}, {"Stage", "prod"}},
                              .timestamp = when});
  REQUIRE(line.ok());
  CHECK(line->find('\n') == std::string::npos);

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(*line).get(root) == simdjson::SUCCESS);
  simdjson::dom::object aws;
  REQUIRE(root["_aws"].get(aws) == simdjson::SUCCESS);
  std::int64_t timestamp = 0;
  REQUIRE(aws["Timestamp"].get(timestamp) == simdjson::SUCCESS);
  CHECK(timestamp == 1'780'000'000'123);
  simdjson::dom::array directives;
  REQUIRE(aws["CloudWatchMetrics"].get(directives) == simdjson::SUCCESS);
  REQUIRE(directives.size() >= 1);
  std::set<std::string> names;
  for (simdjson::dom::element directive : directives) {
    std::string_view ns;
    REQUIRE(directive["Namespace"].get(ns) == simdjson::SUCCESS);
    CHECK(ns == "Video/Catalogue");
    simdjson::dom::array dimension_sets;
    REQUIRE(directive["Dimensions"].get(dimension_sets) == simdjson::SUCCESS);
    for (simdjson::dom::element set : dimension_sets) {
      simdjson::dom::array dims = set.get_array();
      CHECK(dims.size() <= kEmfMaxDimensions);
      for (simdjson::dom::element dim : dims) {
        std::string_view value;
        REQUIRE(root[std::string_view(dim.get_string())].get(value) == simdjson::SUCCESS);
      }
    }
    simdjson::dom::array metrics;
    REQUIRE(directive["Metrics"].get(metrics) == simdjson::SUCCESS);
    CHECK(metrics.size() <= kEmfMaxMetricsPerDirective);
    for (simdjson::dom::element metric : metrics) {
      std::string_view name, unit;
      REQUIRE(metric["Name"].get(name) == simdjson::SUCCESS);
      REQUIRE(metric["Unit"].get(unit) == simdjson::SUCCESS);
      CHECK((unit == "Count" || unit == "Bytes" || unit == "Milliseconds" || unit == "None"));
      CHECK(names.insert(std::string(name)).second);  // each metric once
      double value = 0;
      INFO(name);
      REQUIRE(root[name].get(value) == simdjson::SUCCESS);  // its value at the top level
    }
  }
  std::string_view service;
  REQUIRE(root["Service"].get(service) == simdjson::SUCCESS);
  CHECK(service == "catalogue \"api\"");
  std::uint64_t hits = 0;
  REQUIRE(root["Hits"].get(hits) == simdjson::SUCCESS);
  CHECK(hits == stats.hits);
  CHECK(names.count("GetLatencyP99") == 1);
  CHECK(names.count("BackendErrorsUnavailable") == 1);
}

TEST_CASE("ToCloudWatchEmf escapes quotes, backslashes and control characters") {
  const std::string value = std::string("a\\b\"c\x01\n", 7);
  absl::StatusOr<std::string> line =
      ToCloudWatchEmf(CacheStats{}, {.metric_namespace = "N\\s", .dimensions = {{"Stage", value}}});
  REQUIRE(line.ok());
  CHECK_THAT(*line, Catch::Contains(R"("Namespace":"N\\s")"));
  CHECK_THAT(*line, Catch::Contains(R"("Stage":"a\\b\"c\u0001\u000a")"));
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(*line).get(root) == simdjson::SUCCESS);
  std::string_view parsed;
  REQUIRE(root["Stage"].get(parsed) == simdjson::SUCCESS);
  CHECK(parsed == value);
}

TEST_CASE("ToCloudWatchEmf refuses what CloudWatch would reject") {
  const CacheStats stats;
  std::vector<std::pair<std::string, std::string>> too_many;
  for (std::size_t i = 0; i <= kEmfMaxDimensions; ++i)
    too_many.push_back({absl::StrCat("d", i), "v"});
  CHECK(ToCloudWatchEmf(stats, {.dimensions = too_many}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  too_many.pop_back();
  CHECK(ToCloudWatchEmf(stats, {.dimensions = too_many}).ok());
  CHECK(ToCloudWatchEmf(stats, {.metric_namespace = ""}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ToCloudWatchEmf(stats, {.dimensions = {{"Hits", "x"}}}).status().code() ==
        absl::StatusCode::kInvalidArgument);  // clashes with a metric
  CHECK(ToCloudWatchEmf(stats, {.dimensions = {{"a", "1"}, {"a", "2"}}}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("StatsDelta subtracts counters and keeps gauges and latencies") {
  CacheStats before, now;
  before.hits = 10;
  now.hits = 25;
  before.bytes_read = 100;
  now.bytes_read = 160;
  now.l1_bytes = 5000;
  before.l1_bytes = 9000;
  now.breaker_open = true;
  now.backend_errors_by_code[14] = 3;
  before.backend_errors_by_code[14] = 1;
  now.get_latency.count = 7;
  const CacheStats delta = StatsDelta(now, before);
  CHECK(delta.hits == 15);
  CHECK(delta.bytes_read == 60);
  CHECK(delta.l1_bytes == 5000);
  CHECK(delta.breaker_open);
  CHECK(delta.backend_errors_by_code[14] == 2);
  CHECK(delta.get_latency.count == 7);
  CHECK(StatsDelta(before, now).hits == 0);  // a counter never goes negative
}

// ---- The logging hook ------------------------------------------------------------------------

struct Captured {
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> lines;
  std::function<void(LogLevel, std::string_view)> Sink() {
    return [this](LogLevel level, std::string_view message) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(level, std::string(message));
    };
  }
};

TEST_CASE("the log hook gets corrupt reads, at most one message per second per kind") {
  Captured captured;
  auto faulty = NewFaultInjectionBackend(NewMemoryBackend()).value();
  ChunkedCache cache(faulty, {.chunk_size = 4096, .log = captured.Sink()});
  REQUIRE(cache.Put("k", testing::GenerateCatalogue({.megabytes = 0.05})).ok());
  faulty->SetOptions({.flip_byte_rate = 1});
  for (int i = 0; i < 5; ++i) CHECK_FALSE(cache.Get("k").ok());
  REQUIRE(captured.lines.size() == 1);
  CHECK(captured.lines[0].first == LogLevel::kWarning);
  CHECK(absl::StrContains(captured.lines[0].second, "corrupt"));
  CHECK(cache.Stats().corrupt_reads == 5);
}

TEST_CASE("the corrupt-entry warning names the key, escaped and cut short") {
  Captured captured;
  auto faulty = NewFaultInjectionBackend(NewMemoryBackend()).value();
  ChunkedCache cache(faulty, {.chunk_size = 4096, .log = captured.Sink()});
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.02});
  const std::string odd_key = std::string("cat\"alogue\n\x01\xff", 13);
  const std::string long_key = std::string(600, 'a') + "TAIL";
  REQUIRE(cache.Put(odd_key, json).ok());
  REQUIRE(cache.Put(long_key, json).ok());
  faulty->SetOptions({.flip_byte_rate = 1});
  CHECK_FALSE(cache.Get(odd_key).ok());
  REQUIRE(captured.lines.size() == 1);
  CAPTURE(captured.lines[0].second);
  CHECK(absl::StrContains(captured.lines[0].second, R"(key "cat\"alogue\n\001\377")"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the log's one-second limit
  CHECK_FALSE(cache.Get(long_key).ok());
  REQUIRE(captured.lines.size() == 2);
  const std::string& line = captured.lines[1].second;
  CAPTURE(line);
  CHECK(absl::StrContains(line, absl::StrCat("key \"", std::string(100, 'a'))));
  CHECK(absl::StrContains(line, "(604 bytes)"));
  CHECK_FALSE(absl::StrContains(line, "TAIL"));
  CHECK(line.size() < 400);
}

TEST_CASE("no log hook means no output, and the hook never sees a password") {
  {
    auto faulty =
        NewFaultInjectionBackend(NewMemoryBackend(), FaultInjectionOptions{.read_error_rate = 1})
            .value();
    ChunkedCache quiet(faulty);  // nothing to assert but that it does not crash or print
    CHECK_FALSE(quiet.Get("k").ok());
  }
  Captured captured;
  testing::RedisServer server({.extra_args = {"--requirepass", "s3cret-pw"}});
  const std::string url = "redis://:s3cret-pw@127.0.0.1:" + std::to_string(server.port());
  absl::StatusOr<std::shared_ptr<Backend>> redis = NewRedisBackend({.url = url});
  REQUIRE(redis.ok());
  ChunkedCache cache(*redis, {.breaker_failure_threshold = 1, .log = captured.Sink()});
  server.Kill();
  absl::StatusOr<Bytes> got =
      cache.GetOrLoad("k", [] { return absl::StatusOr<std::string>("[1]"); });
  REQUIRE(got.ok());                    // through the loader
  REQUIRE(captured.lines.size() >= 2);  // the fallback and the breaker opening
  bool fallback = false, breaker = false;
  for (const auto& [level, line] : captured.lines) {
    CAPTURE(line);
    CHECK_FALSE(absl::StrContains(line, "s3cret"));
    fallback = fallback || absl::StrContains(line, "from the origin");
    breaker = breaker || absl::StrContains(line, "circuit breaker open");
  }
  CHECK(fallback);
  CHECK(breaker);
}

}  // namespace
}  // namespace chunkcache
