// momento_bench: the 10 MB catalogue through ChunkedCache on the loopback Momento HTTP emulator,
// with a Get's chunks fetched concurrently (up to 16 requests in flight) side by side with the
// same Get fetching them one at a time. The emulator adds a fixed delay to every request to stand
// in for the distance to a Momento cell (loopback alone has none). Prints the ratio.
//
//   momento_bench [--latency=5ms] [--catalogue_mb=10] [--chunk_kb=1024] [benchmark flags]
//
// --help lists the flags.
//
// A plain single-key baseline is impossible here: Momento refuses items above 5 MB, and the
// uncompressed catalogue is 10 MB — which is the point of chunking.

#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "bench_flags.h"
#include "chunkcache/chunkcache.h"
#include "fixtures/momento_emulator.h"
#include "ratio_reporter.h"

ABSL_FLAG(absl::Duration, latency, absl::Milliseconds(5),
          "Delay the emulator adds to every request, standing in for the distance to a Momento "
          "cell (whole milliseconds).");
ABSL_FLAG(std::size_t, chunk_kb, 1024, "Chunk size in KiB (CacheOptions::chunk_size).");

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
  absl::StatusOr<std::shared_ptr<chunkcache::MomentoBackend>> backend =
      chunkcache::NewMomentoBackend({.endpoint = TheSetup().endpoint,
                                     .cache_name = "test-cache",
                                     .api_key = "test-api-key",
                                     .deadline = absl::Seconds(30),
                                     .max_concurrent_requests = concurrency});
  if (!backend.ok()) std::abort();
  return *std::move(backend);
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
// Runs a benchmark with one request in flight at a time, and with up to 16.
void OneAndSixteenInFlight(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(16)->ArgName("parallel")->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_Get)->Apply(OneAndSixteenInFlight);

void BM_Put(benchmark::State& state) {
  auto backend = Backend(static_cast<int>(state.range(0)));
  chunkcache::ChunkedCache cache(backend, CacheOptions());
  const chunkcache::MomentoBackendStats before = backend->Stats();
  for (auto _ : state) {
    if (!cache.Put("catalogue", TheSetup().json).ok()) state.SkipWithError("Put failed");
  }
  SetCounters(state, before, backend->Stats());
}
BENCHMARK(BM_Put)->Apply(OneAndSixteenInFlight);

}  // namespace

constexpr char kUsage[] =
    "the catalogue through ChunkedCache on the loopback Momento HTTP emulator, a Get's chunks "
    "fetched 16 at a time against one at a time.\n\n"
    "usage: momento_bench [--flag=value ...] [--benchmark_filter=REGEX ...]";

int main(int argc, char** argv) {
  chunkcache::bench::InitBenchmarkAndFlags(argc, argv, kUsage);
  const absl::Duration latency = absl::GetFlag(FLAGS_latency);
  chunkcache::testing::MomentoEmulator emulator(
      {.latency_ms = static_cast<int>(absl::ToInt64Milliseconds(latency))});
  TheSetup().endpoint = emulator.endpoint();
  TheSetup().chunk_size = absl::GetFlag(FLAGS_chunk_kb) << 10;
  TheSetup().json = chunkcache::bench::FlagSizedCatalogue();
  absl::PrintF("Momento emulator at %s, %s per request, chunks of %d KiB\n", emulator.endpoint(),
               absl::FormatDuration(latency), absl::GetFlag(FLAGS_chunk_kb));

  return chunkcache::bench::RunAndPrintSpeedups(
      "chunks in parallel against one at a time",
      {{"Get, 16 in flight vs 1", "BM_Get/parallel:16/real_time", "BM_Get/parallel:1/real_time"},
       {"Put, 16 in flight vs 1", "BM_Put/parallel:16/real_time", "BM_Put/parallel:1/real_time"}});
}
