// redis_bench: the 10 MB catalogue through ChunkedCache on Redis (loopback), side by side with a
// raw hiredis GET/SET of the same JSON stored uncompressed as one value — what a user would write
// without the library. Prints the ratio library/raw and the round trips per Get.
//
//   redis_bench [--redis_url=redis://127.0.0.1:PORT] [--catalogue_mb=10] [benchmark flags]
//
// Without --redis_url it starts its own redis-server on a free loopback port.

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "catalogue.h"
#include "chunkcache/chunkcache.h"
#include "fixtures/redis_server.h"
#include "ratio_reporter.h"

namespace {

struct Setup {
  std::string json;
  std::string url;
  std::string host = "127.0.0.1";
  int port = 0;
};

Setup& TheSetup() {
  static Setup* setup = new Setup();
  return *setup;
}

redisContext* RawConnection() {
  redisContext* c = redisConnect(TheSetup().host.c_str(), TheSetup().port);
  if (c == nullptr || c->err) std::abort();
  return c;
}

void SetBytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(TheSetup().json.size()));
}

// Baseline: one SET of the uncompressed JSON as a single value.
void BM_RawSet(benchmark::State& state) {
  redisContext* c = RawConnection();
  const std::string& json = TheSetup().json;
  for (auto _ : state) {
    auto* reply = static_cast<redisReply*>(
        redisCommand(c, "SET raw:catalogue %b PX 3600000", json.data(), json.size()));
    if (reply == nullptr || reply->type != REDIS_REPLY_STATUS) state.SkipWithError("SET failed");
    freeReplyObject(reply);
  }
  redisFree(c);
  SetBytes(state);
}
BENCHMARK(BM_RawSet)->UseRealTime()->Unit(benchmark::kMillisecond);

// Baseline: one GET of the uncompressed JSON, copied into a std::string as Get returns it.
void BM_RawGet(benchmark::State& state) {
  redisContext* c = RawConnection();
  const std::string& json = TheSetup().json;
  freeReplyObject(redisCommand(c, "SET raw:catalogue %b", json.data(), json.size()));
  for (auto _ : state) {
    auto* reply = static_cast<redisReply*>(redisCommand(c, "GET raw:catalogue"));
    if (reply == nullptr || reply->type != REDIS_REPLY_STRING) state.SkipWithError("GET failed");
    auto value = std::make_shared<const std::string>(reply->str, reply->len);
    benchmark::DoNotOptimize(value);
    freeReplyObject(reply);
  }
  redisFree(c);
  SetBytes(state);
}
BENCHMARK(BM_RawGet)->UseRealTime()->Unit(benchmark::kMillisecond);

std::shared_ptr<chunkcache::RedisBackend> Backend() {
  auto backend = std::make_shared<chunkcache::RedisBackend>(
      chunkcache::RedisBackendOptions{.url = TheSetup().url, .command_timeout = absl::Seconds(5)});
  if (!backend->Init().ok()) std::abort();
  return backend;
}

void BM_Put(benchmark::State& state) {
  chunkcache::ChunkedCache cache(Backend(),
                                 {.compression_workers = static_cast<int>(state.range(0))});
  for (auto _ : state) {
    if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  }
  SetBytes(state);
}
BENCHMARK(BM_Put)->Arg(0)->Arg(2)->ArgName("workers")->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Get(benchmark::State& state) {
  auto backend = Backend();
  chunkcache::ChunkedCache cache(backend);
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  const chunkcache::RedisBackendStats before = backend->Stats();
  for (auto _ : state) {
    absl::StatusOr<chunkcache::Bytes> got = cache.Get("catalogue");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  const chunkcache::RedisBackendStats after = backend->Stats();
  state.counters["round_trips"] = static_cast<double>(after.round_trips - before.round_trips) /
                                  static_cast<double>(state.iterations());
  SetBytes(state);
}
BENCHMARK(BM_Get)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  std::string megabytes = "10";
  std::vector<char*> args = chunkcache::bench::TakeFlag(argc, argv, "--catalogue_mb=", &megabytes);
  args = chunkcache::bench::TakeFlag(static_cast<int>(args.size()), args.data(),
                                     "--redis_url=", &TheSetup().url);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  std::optional<chunkcache::testing::RedisServer> server;
  if (TheSetup().url.empty()) {
    server.emplace();
    TheSetup().url = server->url();
  }
  // The raw baseline speaks host:port; take them from the URL.
  const std::string& url = TheSetup().url;
  const std::size_t colon = url.rfind(':');
  TheSetup().host = url.substr(8, colon - 8);
  TheSetup().port = std::atoi(url.c_str() + colon + 1);
  TheSetup().json = chunkcache::catalogue::GenerateCatalogue({.megabytes = std::stod(megabytes)});

  chunkcache::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSpeedups(
      "speed against plain uncompressed Redis storage of the same JSON",
      {{"Get vs raw GET of the uncompressed JSON", "BM_Get/real_time", "BM_RawGet/real_time"},
       {"Put vs raw SET (1 core)", "BM_Put/workers:0/real_time", "BM_RawSet/real_time"},
       {"Put, 2 workers vs raw SET", "BM_Put/workers:2/real_time", "BM_RawSet/real_time"}});
  benchmark::Shutdown();
  return 0;
}
