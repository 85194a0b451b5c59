// serving_bench: what the near cache (L1) buys on the hot path.
//
//   - L1 hit latency and hits/s with 1 and 2 threads (items_per_second is the total over the
//     threads), next to a bare baseline: a hash-map lookup and a copy of a shared pointer that
//     counts on the calling thread's own cache line (what a hit cannot be cheaper than). A second
//     baseline copies one shared pointer from every thread: what a shared reference count costs
//     (two threads make fewer copies in total than one).
//   - A Get that revalidates its L1 copy (manifest only) against a Get that downloads and decodes
//     the whole entry, on the memory backend and on Redis (a loopback redis-server it starts).
//
//   serving_bench [--catalogue_mb=10] [--redis_url=redis://127.0.0.1:PORT] [benchmark flags]
//
// Without --redis_url it starts its own redis-server on a free loopback port. --help lists the
// flags.

#include <benchmark/benchmark.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "bench_flags.h"
#include "bench_redis.h"
#include "cache/near_cache.h"
#include "chunkcache/chunkcache.h"
#include "ratio_reporter.h"

ABSL_FLAG(std::string, redis_url, "",
          "The Redis server of the Redis benchmarks (redis://HOST:PORT); empty: a private "
          "redis-server on a free loopback port.");

namespace {

using chunkcache::Bytes;
using chunkcache::ChunkedCache;

struct Setup {
  std::string json;
  std::string redis_url;
  std::unique_ptr<ChunkedCache> hot;  // the cache the hit benchmarks share between threads
};

Setup& TheSetup() {
  static Setup* setup = new Setup();
  return *setup;
}

// Baseline: the cheapest possible hit, a map lookup and a shared-pointer copy, no lock. Each
// thread copies a pointer of its own, an aliasing one whose owner (and so its reference count) is
// on a cache line of its own: nothing the threads write is shared.
void BM_MapLookupBaseline(benchmark::State& state) {
  constexpr int kMaxThreads = 8;
  struct alignas(64) Owner {
    Bytes payload;
  };
  using PerThread = std::array<Bytes, kMaxThreads>;
  static const auto* map = [] {
    auto* m = new absl::flat_hash_map<std::string, PerThread>();
    const Bytes payload = std::make_shared<const std::string>("payload");
    PerThread& copies = (*m)["catalogue"];
    for (Bytes& copy : copies) copy = Bytes(std::make_shared<Owner>(Owner{payload}), payload.get());
    return m;
  }();
  const std::string key = "catalogue";
  const int thread = state.thread_index() % kMaxThreads;
  for (auto _ : state) {
    Bytes copy = map->find(key)->second[thread];
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MapLookupBaseline)->Threads(1)->Threads(2)->UseRealTime();

// The same with one shared pointer copied by every thread, as a hit used to: each copy writes the
// one reference count, whose cache line then moves between the cores at every copy.
void BM_MapLookupSharedCount(benchmark::State& state) {
  static const auto* map = [] {
    auto* m = new absl::flat_hash_map<std::string, Bytes>();
    (*m)["catalogue"] = std::make_shared<const std::string>("payload");
    return m;
  }();
  const std::string key = "catalogue";
  for (auto _ : state) {
    Bytes copy = map->find(key)->second;
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MapLookupSharedCount)->Threads(1)->Threads(2)->UseRealTime();

void BM_L1Hit(benchmark::State& state) {
  ChunkedCache& cache = *TheSetup().hot;
  for (auto _ : state) {
    absl::StatusOr<Bytes> got = cache.Get("catalogue");
    benchmark::DoNotOptimize(got);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    state.counters["l1_hit_share"] =
        static_cast<double>(cache.Stats().l1_hits) / static_cast<double>(cache.Stats().gets);
  }
}
BENCHMARK(BM_L1Hit)->Threads(1)->Threads(2)->UseRealTime();

// The near cache's lookup alone: an L1 hit minus the cache around it (key check, clock, freshness
// check, the two striped hit counters), so the difference is what staying observable costs.
void BM_NearCacheLookupOnly(benchmark::State& state) {
  static auto* near = [] {
    auto* cache = new chunkcache::internal::NearCache(1 << 20);
    cache->Insert("catalogue",
                  {std::make_shared<const std::string>("payload"), 1, absl::Now(), absl::Now()});
    return cache;
  }();
  for (auto _ : state) {
    std::optional<chunkcache::internal::NearCache::Entry> entry = near->Lookup("catalogue");
    benchmark::DoNotOptimize(entry);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NearCacheLookupOnly)->Threads(1)->Threads(2)->UseRealTime();

// What a scrape costs: a Stats() snapshot rendered for Prometheus.
void BM_StatsToPrometheus(benchmark::State& state) {
  for (auto _ : state) {
    absl::StatusOr<std::string> text = chunkcache::ToPrometheusText(TheSetup().hot->Stats());
    benchmark::DoNotOptimize(text);
  }
}
BENCHMARK(BM_StatsToPrometheus)->Unit(benchmark::kMicrosecond);

std::shared_ptr<chunkcache::Backend> MakeBackend(int which) {
  if (which == 0) return chunkcache::NewMemoryBackend();
  auto redis = chunkcache::NewRedisBackend(
      {.url = TheSetup().redis_url, .command_timeout = absl::Seconds(5)});
  if (!redis.ok()) std::abort();
  return *redis;
}

// The timed loop of the Get benchmarks: Get("catalogue"), then the backend bytes read per Get.
void TimeGets(benchmark::State& state, ChunkedCache& cache) {
  for (auto _ : state) {
    absl::StatusOr<Bytes> got = cache.Get("catalogue");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  const chunkcache::CacheStats stats = cache.Stats();
  state.counters["bytes_read"] =
      static_cast<double>(stats.bytes_read) / static_cast<double>(stats.gets);
}

// A Get whose L1 copy is always due for revalidation (l1_fresh_for = 0): one manifest read.
void BM_GetRevalidate(benchmark::State& state) {
  ChunkedCache cache(
      MakeBackend(static_cast<int>(state.range(0))),
      {.l1_capacity_bytes = std::size_t{256} << 20, .l1_fresh_for = absl::ZeroDuration()});
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  if (!cache.Get("catalogue").ok()) state.SkipWithError("Get failed");
  TimeGets(state, cache);
  state.counters["revalidated"] =
      static_cast<double>(cache.Stats().l1_revalidations) / static_cast<double>(state.iterations());
}
// Runs a benchmark on the memory backend (redis:0) and on Redis (redis:1).
void OnMemoryAndRedis(benchmark::internal::Benchmark* b) {
  b->Arg(0)->Arg(1)->ArgName("redis")->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_GetRevalidate)->Apply(OnMemoryAndRedis);

// The same Get without a near cache: manifest, every chunk, checksum, decode.
void BM_GetFull(benchmark::State& state) {
  ChunkedCache cache(MakeBackend(static_cast<int>(state.range(0))));
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  TimeGets(state, cache);
}
BENCHMARK(BM_GetFull)->Apply(OnMemoryAndRedis);

}  // namespace

constexpr char kUsage[] =
    "what the near cache (L1) buys on the hot path: L1 hits against a bare map lookup, and a Get "
    "revalidating its L1 copy against a full download, on the memory backend and on Redis.\n\n"
    "usage: serving_bench [--flag=value ...] [--benchmark_filter=REGEX ...]";

int main(int argc, char** argv) {
  chunkcache::bench::InitBenchmarkAndFlags(argc, argv, kUsage);
  const chunkcache::bench::BenchRedis redis(absl::GetFlag(FLAGS_redis_url));
  TheSetup().redis_url = redis.url();
  TheSetup().json = chunkcache::bench::FlagSizedCatalogue();
  TheSetup().hot = std::make_unique<ChunkedCache>(
      chunkcache::NewMemoryBackend(),
      chunkcache::CacheOptions{.l1_capacity_bytes = std::size_t{256} << 20,
                               .l1_fresh_for = absl::Hours(1) - absl::Seconds(1)});
  if (!TheSetup().hot->Put("catalogue", TheSetup().json).ok() ||
      !TheSetup().hot->Get("catalogue").ok()) {
    return 1;
  }

  // With threads, a benchmark's time per iteration is its wall time over the iterations of all
  // its threads: "2 threads vs 1 thread" is the ratio of total hits per second.
  return chunkcache::bench::RunAndPrintSpeedups(
      "the near cache against its baselines",
      {{"L1 hit vs bare map lookup + shared_ptr copy (1 thread)", "BM_L1Hit/real_time/threads:1",
        "BM_MapLookupBaseline/real_time/threads:1"},
       {"L1 hit vs bare map lookup + shared_ptr copy (2 threads)", "BM_L1Hit/real_time/threads:2",
        "BM_MapLookupBaseline/real_time/threads:2"},
       {"L1 hit, 2 threads vs 1 thread (total hits)", "BM_L1Hit/real_time/threads:2",
        "BM_L1Hit/real_time/threads:1"},
       {"near-cache lookup, 2 threads vs 1 thread (total)",
        "BM_NearCacheLookupOnly/real_time/threads:2", "BM_NearCacheLookupOnly/real_time/threads:1"},
       {"bare map + own-line copy, 2 threads vs 1 thread",
        "BM_MapLookupBaseline/real_time/threads:2", "BM_MapLookupBaseline/real_time/threads:1"},
       {"bare map + shared-count copy, 2 threads vs 1",
        "BM_MapLookupSharedCount/real_time/threads:2",
        "BM_MapLookupSharedCount/real_time/threads:1"},
       {"L1 hit vs the near-cache lookup alone (cost of counting, 1 thread)",
        "BM_L1Hit/real_time/threads:1", "BM_NearCacheLookupOnly/real_time/threads:1"},
       {"Get revalidating L1 vs full download, memory", "BM_GetRevalidate/redis:0/real_time",
        "BM_GetFull/redis:0/real_time"},
       {"Get revalidating L1 vs full download, Redis", "BM_GetRevalidate/redis:1/real_time",
        "BM_GetFull/redis:1/real_time"}});
}
