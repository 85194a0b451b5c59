// redis_bench: the 10 MB catalogue through ChunkedCache on Redis (loopback), side by side with a
// raw hiredis GET/SET of the same JSON stored uncompressed as one value — what a user would write
// without the library. Prints the ratio library/raw and the round trips per Get.
//
//   redis_bench [--redis_url=redis://127.0.0.1:PORT] [--catalogue_mb=10] [benchmark flags]
//
// Without --redis_url it starts its own redis-server on a free loopback port. --help lists the
// flags.

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "backends/redis/url.h"
#include "bench_flags.h"
#include "bench_redis.h"
#include "chunkcache/chunkcache.h"
#include "ratio_reporter.h"

ABSL_FLAG(std::string, redis_url, "",
          "The Redis server to measure (redis://HOST:PORT); empty: a private redis-server on a "
          "free loopback port.");

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
  absl::StatusOr<std::shared_ptr<chunkcache::RedisBackend>> backend =
      chunkcache::NewRedisBackend({.url = TheSetup().url, .command_timeout = absl::Seconds(5)});
  if (!backend.ok()) std::abort();
  return *std::move(backend);
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

constexpr char kUsage[] =
    "the catalogue through ChunkedCache on Redis, against a raw hiredis GET/SET of the same JSON "
    "stored uncompressed as one value.\n\n"
    "usage: redis_bench [--flag=value ...] [--benchmark_filter=REGEX ...]";

int main(int argc, char** argv) {
  chunkcache::bench::InitBenchmarkAndFlags(argc, argv, kUsage);
  const chunkcache::bench::BenchRedis redis(absl::GetFlag(FLAGS_redis_url));
  TheSetup().url = redis.url();
  // The raw baseline speaks host:port.
  const absl::StatusOr<chunkcache::redis::ServerUrl> server =
      chunkcache::redis::ParseServerUrl(redis.url());
  if (!server.ok() || server->seed.host.empty()) {
    std::fprintf(stderr, "redis_bench: --redis_url: %s\n",
                 server.ok() ? "not a TCP address" : server.status().ToString().c_str());
    return 2;
  }
  TheSetup().host = server->seed.host;
  TheSetup().port = server->seed.port;
  TheSetup().json = chunkcache::bench::FlagSizedCatalogue();

  return chunkcache::bench::RunAndPrintSpeedups(
      "speed against plain uncompressed Redis storage of the same JSON",
      {{"Get vs raw GET of the uncompressed JSON", "BM_Get/real_time", "BM_RawGet/real_time"},
       {"Put vs raw SET (1 core)", "BM_Put/workers:0/real_time", "BM_RawSet/real_time"},
       {"Put, 2 workers vs raw SET", "BM_Put/workers:2/real_time", "BM_RawSet/real_time"}});
}
