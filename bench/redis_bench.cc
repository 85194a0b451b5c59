// redis_bench: the 10 MB catalogue through ChunkedCache on Redis (loopback), side by side with a
// raw hiredis GET/SET of the same JSON stored uncompressed as one value — what a user would write
// without the library. Prints the ratio library/raw and the round trips per Get.
//
//   redis_bench [--redis_url=redis://127.0.0.1:PORT] [--catalogue_mb=10] [benchmark flags]
//
// Without --redis_url it starts its own redis-server on a free loopback port. --help lists the
// flags. It also starts a TLS-only redis-server (a test CA made with openssl) and measures the same
// Get and Put over rediss://, and a connection's set-up (connect + PING) over plain TCP, over TLS
// with a full handshake and over TLS resuming a session. And the time to the first byte of a
// GetStream against the whole Get, and Get with a decode worker.

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "backends/redis/resp_over_tls.h"
#include "backends/redis/tls.h"
#include "backends/redis/url.h"
#include "bench_flags.h"
#include "bench_redis.h"
#include "chunkcache/chunkcache.h"
#include "fixtures/tls_certs.h"
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
  std::string tls_url;  // rediss://127.0.0.1:PORT of the private TLS-only server
  int tls_port = 0;
  std::string ca_file;  // the test CA that signed its certificate
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

// The backend of the plain server, or with `tls` of the TLS-only one.
std::shared_ptr<chunkcache::RedisBackend> Backend(bool tls = false) {
  absl::StatusOr<std::shared_ptr<chunkcache::RedisBackend>> backend =
      chunkcache::NewRedisBackend({.url = tls ? TheSetup().tls_url : TheSetup().url,
                                   .command_timeout = absl::Seconds(5),
                                   .tls_ca_bundle_path = TheSetup().ca_file});
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

// Stores the catalogue through `cache`, then Gets it on every iteration.
void GetCatalogue(benchmark::State& state, chunkcache::ChunkedCache& cache) {
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  for (auto _ : state) {
    absl::StatusOr<chunkcache::Bytes> got = cache.Get("catalogue");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  SetBytes(state);
}

// Get with decode_workers = 1: frames decoded on two threads as the chunks arrive.
void BM_GetDecodeWorker(benchmark::State& state) {
  chunkcache::ChunkedCache cache(Backend(), {.decode_workers = 1});
  GetCatalogue(state, cache);
}
BENCHMARK(BM_GetDecodeWorker)->UseRealTime()->Unit(benchmark::kMillisecond);

// GetStream: the time to its first piece (manual time) and, as a counter, to its end.
void BM_StreamFirstByte(benchmark::State& state) {
  chunkcache::ChunkedCache cache(Backend());
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  double whole = 0;
  for (auto _ : state) {
    const absl::Time start = absl::Now();
    absl::Time first = absl::InfinitePast();
    std::size_t bytes = 0;
    const absl::Status s = cache.GetStream("catalogue", [&](std::string_view piece) {
      if (bytes == 0) first = absl::Now();
      bytes += piece.size();
      return absl::OkStatus();
    });
    if (!s.ok() || bytes != TheSetup().json.size()) state.SkipWithError("GetStream failed");
    state.SetIterationTime(absl::ToDoubleSeconds(first - start));
    whole += absl::ToDoubleSeconds(absl::Now() - start);
  }
  state.counters["whole_ms"] = 1000 * whole / static_cast<double>(state.iterations());
}
BENCHMARK(BM_StreamFirstByte)->UseManualTime()->Unit(benchmark::kMillisecond);

// The same Put and Get over rediss:// (TLS on loopback: what encryption costs, not the network).
void BM_TlsPut(benchmark::State& state) {
  chunkcache::ChunkedCache cache(Backend(/*tls=*/true));
  for (auto _ : state) {
    if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  }
  SetBytes(state);
}
BENCHMARK(BM_TlsPut)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_TlsGet(benchmark::State& state) {
  chunkcache::ChunkedCache cache(Backend(/*tls=*/true));
  GetCatalogue(state, cache);
}
BENCHMARK(BM_TlsGet)->UseRealTime()->Unit(benchmark::kMillisecond);

// A new connection and one PING: plain TCP (hiredis).
void BM_ConnectPlain(benchmark::State& state) {
  for (auto _ : state) {
    redisContext* c = RawConnection();
    freeReplyObject(redisCommand(c, "PING"));
    redisFree(c);
  }
}
BENCHMARK(BM_ConnectPlain)->UseRealTime()->Unit(benchmark::kMicrosecond);

// A new TLS connection and one PING. With a fresh context per connection every handshake is a
// full one; with one shared context (as one backend has) each resumes the session of the last.
void ConnectTls(benchmark::State& state, bool resume) {
  namespace redis = chunkcache::redis;
  const redis::TlsOptions options{.ca_bundle_path = TheSetup().ca_file};
  absl::StatusOr<std::shared_ptr<const redis::TlsContext>> shared =
      redis::TlsContext::Create(options);
  if (!shared.ok()) return state.SkipWithError("TLS context");
  std::int64_t resumed = 0;
  for (auto _ : state) {
    std::shared_ptr<const redis::TlsContext> context = *shared;
    if (!resume) {
      state.PauseTiming();  // loading the CA file is not the handshake
      context = *redis::TlsContext::Create(options);
      state.ResumeTiming();
    }
    absl::StatusOr<std::unique_ptr<redis::TlsStream>> stream = redis::TlsStream::Connect(
        context, "127.0.0.1", TheSetup().tls_port, "", absl::Now() + absl::Seconds(5));
    if (!stream.ok()) return state.SkipWithError(std::string(stream.status().message()).c_str());
    redis::RespReader reader = redis::NewRespReader();
    const std::vector<std::string_view> ping = {"PING"};
    if (!redis::RoundTrip(**stream, *reader, ping, absl::Now() + absl::Seconds(5)).ok()) {
      return state.SkipWithError("PING failed");
    }
    resumed += (*stream)->resumed() ? 1 : 0;
  }
  state.counters["resumed"] = static_cast<double>(resumed) /
                              static_cast<double>(std::max<std::int64_t>(1, state.iterations()));
}
void BM_ConnectTlsFull(benchmark::State& state) { ConnectTls(state, /*resume=*/false); }
void BM_ConnectTlsResumed(benchmark::State& state) { ConnectTls(state, /*resume=*/true); }
BENCHMARK(BM_ConnectTlsFull)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ConnectTlsResumed)->UseRealTime()->Unit(benchmark::kMicrosecond);

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
  // The TLS-only server, always private: its certificate comes from a test CA made here.
  const chunkcache::testing::TestCertificates& certs = chunkcache::testing::TestCertificates::Get();
  chunkcache::testing::RedisServer tls_server(
      {.tls = chunkcache::testing::RedisTls{
           .cert_file = certs.server_cert, .key_file = certs.server_key, .ca_file = certs.ca}});
  TheSetup().tls_url = tls_server.url();
  TheSetup().tls_port = tls_server.port();
  TheSetup().ca_file = certs.ca;

  return chunkcache::bench::RunAndPrintSpeedups(
      "speed against plain uncompressed Redis storage of the same JSON",
      {{"Get vs raw GET of the uncompressed JSON", "BM_Get/real_time", "BM_RawGet/real_time"},
       {"Get, 1 decode worker vs Get on the calling thread", "BM_GetDecodeWorker/real_time",
        "BM_Get/real_time"},
       {"GetStream time to first byte vs the whole Get (goal >= 3.3x: TTFB <= 0.3 Get)",
        "BM_StreamFirstByte/manual_time", "BM_Get/real_time"},
       {"Put vs raw SET (1 core)", "BM_Put/workers:0/real_time", "BM_RawSet/real_time"},
       {"Put, 2 workers vs raw SET", "BM_Put/workers:2/real_time", "BM_RawSet/real_time"},
       {"Get over TLS vs over plain TCP", "BM_TlsGet/real_time", "BM_Get/real_time"},
       {"Put over TLS vs over plain TCP (1 core)", "BM_TlsPut/real_time",
        "BM_Put/workers:0/real_time"},
       {"connect+PING: TLS full handshake vs TCP", "BM_ConnectTlsFull/real_time",
        "BM_ConnectPlain/real_time"},
       {"connect+PING: TLS resumed vs full handshake", "BM_ConnectTlsResumed/real_time",
        "BM_ConnectTlsFull/real_time"}});
}
