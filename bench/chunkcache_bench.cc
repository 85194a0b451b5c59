// chunkcache_bench: Put and Get of the reference catalogue on the memory backend, side by side
// with one-shot zstd on the same bytes, and the ratio library/zstd printed at the end of the run.
//
//   chunkcache_bench [--catalogue_mb=10] [google benchmark flags]
//
// Throughput is in bytes of JSON per second for every benchmark, so the ratios compare like with
// like. A ratio of 1.00 means the library is as fast as the bare codec on the same input.

#include <benchmark/benchmark.h>
#include <zstd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "catalogue.h"
#include "chunkcache/chunkcache.h"
#include "ratio_reporter.h"

namespace {

constexpr int kLevel = 3;

std::string& CatalogueJson() {
  static std::string* json = new std::string();
  return *json;
}

void SetBytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(CatalogueJson().size()));
}

// Baseline: one-shot ZSTD_compress into a buffer allocated per call, as a caller storing the
// result would.
void BM_ZstdCompress(benchmark::State& state) {
  const std::string& json = CatalogueJson();
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, kLevel);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, static_cast<int>(state.range(0)));
  std::size_t size = 0;
  for (auto _ : state) {
    std::unique_ptr<char[]> out(new char[ZSTD_compressBound(json.size())]);
    size =
        ZSTD_compress2(cctx, out.get(), ZSTD_compressBound(json.size()), json.data(), json.size());
    benchmark::DoNotOptimize(out.get());
  }
  ZSTD_freeCCtx(cctx);
  state.counters["ratio"] = static_cast<double>(json.size()) / static_cast<double>(size);
  SetBytes(state);
}
BENCHMARK(BM_ZstdCompress)
    ->Arg(0)
    ->Arg(2)
    ->ArgName("workers")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Baseline: one-shot ZSTD_decompress into a fresh std::string, the type Get returns.
void BM_ZstdDecompress(benchmark::State& state) {
  const std::string& json = CatalogueJson();
  std::string compressed(ZSTD_compressBound(json.size()), '\0');
  compressed.resize(
      ZSTD_compress(compressed.data(), compressed.size(), json.data(), json.size(), kLevel));
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  for (auto _ : state) {
    std::string out(json.size(), '\0');
    ZSTD_decompressDCtx(dctx, out.data(), out.size(), compressed.data(), compressed.size());
    benchmark::DoNotOptimize(out.data());
  }
  ZSTD_freeDCtx(dctx);
  SetBytes(state);
}
BENCHMARK(BM_ZstdDecompress)->UseRealTime()->Unit(benchmark::kMillisecond);

// ChunkedCache::Put: validate + compress + chunk + store in the memory backend.
void BM_Put(benchmark::State& state) {
  chunkcache::ChunkedCache cache(
      chunkcache::NewMemoryBackend(),
      {.compression_level = kLevel, .compression_workers = static_cast<int>(state.range(0))});
  for (auto _ : state) {
    if (!cache.Put("catalogue", CatalogueJson()).ok()) state.SkipWithError("Put failed");
  }
  const chunkcache::CacheStats stats = cache.Stats();
  state.counters["chunks"] = static_cast<double>(stats.chunks_written) /
                             static_cast<double>(std::max<std::uint64_t>(stats.puts, 1));
  SetBytes(state);
}
BENCHMARK(BM_Put)->Arg(0)->Arg(2)->ArgName("workers")->UseRealTime()->Unit(benchmark::kMillisecond);

// ChunkedCache::Get: fetch manifest + chunks, verify, decompress into one buffer.
void BM_Get(benchmark::State& state) {
  chunkcache::ChunkedCache cache(chunkcache::NewMemoryBackend(), {.compression_level = kLevel});
  if (!cache.Put("catalogue", CatalogueJson()).ok()) state.SkipWithError("Put failed");
  for (auto _ : state) {
    absl::StatusOr<chunkcache::Bytes> got = cache.Get("catalogue");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  SetBytes(state);
}
BENCHMARK(BM_Get)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  std::string megabytes = "10";
  std::vector<char*> args = chunkcache::bench::TakeFlag(argc, argv, "--catalogue_mb=", &megabytes);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  CatalogueJson() = chunkcache::catalogue::GenerateCatalogue({.megabytes = std::stod(megabytes)});
  chunkcache::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSpeedups(
      absl::StrFormat("speed against plain zstd on the same %d bytes", CatalogueJson().size())
          .c_str(),
      {{"Put vs ZSTD_compress (1 core)", "BM_Put/workers:0/real_time",
        "BM_ZstdCompress/workers:0/real_time"},
       {"Put, 2 workers vs ZSTD_compress (1 core)", "BM_Put/workers:2/real_time",
        "BM_ZstdCompress/workers:0/real_time"},
       {"Get vs ZSTD_decompress", "BM_Get/real_time", "BM_ZstdDecompress/real_time"}});
  benchmark::Shutdown();
  return 0;
}
