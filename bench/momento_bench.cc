// momento_bench: the 10 MB catalogue through ChunkedCache on the loopback Momento HTTP emulator,
// with a Get's chunks fetched concurrently (up to 16 requests in flight) side by side with the
// same Get fetching them one at a time. The emulator adds a fixed delay to every request to stand
// in for the distance to a Momento cell (loopback alone has none). Prints the ratio.
//
//   momento_bench [--latency_ms=5] [--catalogue_mb=10] [--chunk_kb=1024] [benchmark flags]
//
// A plain single-key baseline is impossible here: Momento refuses items above 5 MB, and the
// uncompressed catalogue is 10 MB — which is the point of chunking.

#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "catalogue.h"
#include "chunkcache/chunkcache.h"
#include "fixtures/momento_emulator.h"
#include "ratio_reporter.h"

namespace {

struct Setup {
  std::string json;
  std::string endpoint;
  std::size_t chunk_size = std::size_t{1} << 20;
};

Setup& TheSetup() {
  static Setup* setup = new Setup();
  return *setup;
}

std::shared_ptr<chunkcache::MomentoBackend> Backend(int concurrency) {
  auto backend = std::make_shared<chunkcache::MomentoBackend>(
      chunkcache::MomentoBackendOptions{.endpoint = TheSetup().endpoint,
                                        .cache_name = "test-cache",
                                        .api_key = "test-api-key",
                                        .deadline = absl::Seconds(30),
                                        .max_concurrent_requests = concurrency});
  if (!backend->Init().ok()) std::abort();
  return backend;
}

chunkcache::CacheOptions CacheOptions() { return {.chunk_size = TheSetup().chunk_size}; }

void SetCounters(benchmark::State& state, const chunkcache::MomentoBackendStats& before,
                 const chunkcache::MomentoBackendStats& after) {
  const auto per_op = [&](std::uint64_t a, std::uint64_t b) {
    return static_cast<double>(a - b) / static_cast<double>(state.iterations());
  };
  state.counters["requests"] = per_op(after.requests, before.requests);
  state.counters["bytes_moved"] =
      per_op(after.bytes_sent + after.bytes_received, before.bytes_sent + before.bytes_received);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(TheSetup().json.size()));
}

void BM_Get(benchmark::State& state) {
  auto backend = Backend(static_cast<int>(state.range(0)));
  chunkcache::ChunkedCache cache(backend, CacheOptions());
  if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  const chunkcache::MomentoBackendStats before = backend->Stats();
  for (auto _ : state) {
    absl::StatusOr<chunkcache::Bytes> got = cache.Get("catalogue");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  SetCounters(state, before, backend->Stats());
}
BENCHMARK(BM_Get)
    ->Arg(1)
    ->Arg(16)
    ->ArgName("parallel")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Put(benchmark::State& state) {
  auto backend = Backend(static_cast<int>(state.range(0)));
  chunkcache::ChunkedCache cache(backend, CacheOptions());
  const chunkcache::MomentoBackendStats before = backend->Stats();
  for (auto _ : state) {
    if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  }
  SetCounters(state, before, backend->Stats());
}
BENCHMARK(BM_Put)
    ->Arg(1)
    ->Arg(16)
    ->ArgName("parallel")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  std::string megabytes = "10", latency_ms = "5", chunk_kb = "1024";
  std::vector<char*> args = chunkcache::bench::TakeFlag(argc, argv, "--catalogue_mb=", &megabytes);
  args = chunkcache::bench::TakeFlag(static_cast<int>(args.size()), args.data(),
                                     "--latency_ms=", &latency_ms);
  args = chunkcache::bench::TakeFlag(static_cast<int>(args.size()), args.data(),
                                     "--chunk_kb=", &chunk_kb);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  chunkcache::testing::MomentoEmulator emulator({.latency_ms = std::stoi(latency_ms)});
  TheSetup().endpoint = emulator.endpoint();
  TheSetup().chunk_size = std::stoul(chunk_kb) << 10;
  TheSetup().json = chunkcache::catalogue::GenerateCatalogue({.megabytes = std::stod(megabytes)});
  std::printf("Momento emulator at %s, %s ms per request, chunks of %s KiB\n",
              emulator.endpoint().c_str(), latency_ms.c_str(), chunk_kb.c_str());

  chunkcache::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSpeedups(
      "chunks in parallel against one at a time",
      {{"Get, 16 in flight vs 1", "BM_Get/parallel:16/real_time", "BM_Get/parallel:1/real_time"},
       {"Put, 16 in flight vs 1", "BM_Put/parallel:16/real_time", "BM_Put/parallel:1/real_time"}});
  benchmark::Shutdown();
  return 0;
}
