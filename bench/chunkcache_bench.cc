// chunkcache_bench: the library's micro-benchmarks, each beside its physical limit in one run.
//
//   chunkcache_bench [--catalogue_mb=10] [FILE.json ...] [google benchmark flags]   (--help)
//
// For the generated catalogue and every JSON file given (e.g. ../shared/corpus/*.json), at zstd
// levels 1, 3 and 9:
//   Encode (validate + compress + chunk, into a backend that discards)  vs one-shot ZSTD_compress
//   Decode (fetch + verify + decompress + reassemble, memory backend)   vs one-shot ZSTD_decompress
// and the zstd command line's own benchmark (`zstd -bL`) of the same bytes, then the ratios
// library/zstd. Level 3 also encodes with compression_workers = 2 (frames compressed in parallel,
// beside zstd's own multithreaded mode on 2 workers), decodes with decode_workers = 1 (frames
// decoded on two threads) and streams (GetStream). Then the parts
// alone (simdjson validation, xxh3, chunking), memory-backend Get/Put by payload size, a
// near-cache hit, and single-flight on a cold key with 1 to 64 threads (the loader must run once
// per wave: the run fails loudly otherwise). Throughput is bytes of JSON per second throughout,
// so ratios compare like with like. Last, the stored-size cost of independent frames against one.

#include <benchmark/benchmark.h>
#include <zstd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench_flags.h"
#include "cache/entry_writer.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "ratio_reporter.h"

namespace {

using chunkcache::Bytes;
using chunkcache::ChunkedCache;

constexpr int kLevels[] = {1, 3, 9};

struct Input {
  std::string name;  // "catalogue" or the file's name
  std::string json;
};

std::vector<Input>& Inputs() {
  static auto* inputs = new std::vector<Input>();
  return *inputs;
}

std::atomic<bool> failed{false};

void SetBytes(benchmark::State& state, std::size_t bytes) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}

// Takes what it is given and stores nothing: Put through it is the encode path alone.
class DiscardingBackend : public chunkcache::Backend {
 public:
  std::size_t max_item_size() const override { return std::size_t{1} << 20; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    return std::vector<std::optional<std::string>>(keys.size());
  }
  absl::Status MultiSet(absl::Span<const chunkcache::KeyValue>, absl::Duration) override {
    return absl::OkStatus();
  }
  absl::Status Delete(absl::Span<const std::string_view>) override { return absl::OkStatus(); }
};

std::string Compress(const std::string& json, int level) {
  std::string out(ZSTD_compressBound(json.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), json.data(), json.size(), level));
  return out;
}

// ---- Library vs zstd, per input and level ------------------------------------------------------

void ZstdCompress(benchmark::State& state, const Input* input, int level, int workers) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, workers);
  std::size_t size = 0;
  const std::size_t bound = ZSTD_compressBound(input->json.size());
  for (auto _ : state) {
    std::unique_ptr<char[]> out(new char[bound]);  // a caller keeping the result allocates it
    size = ZSTD_compress2(cctx, out.get(), bound, input->json.data(), input->json.size());
    benchmark::DoNotOptimize(out.get());
  }
  ZSTD_freeCCtx(cctx);
  state.counters["ratio"] = static_cast<double>(input->json.size()) / static_cast<double>(size);
  SetBytes(state, input->json.size());
}

void Encode(benchmark::State& state, const Input* input, int level, int workers) {
  ChunkedCache cache(std::make_shared<DiscardingBackend>(), {.compression_level = level,
                                                             .compression_workers = workers,
                                                             .delete_replaced_chunks = false});
  for (auto _ : state) {
    if (!cache.Put("k", input->json).ok()) state.SkipWithError("Put failed");
  }
  const chunkcache::CacheStats stats = cache.Stats();
  const double puts = static_cast<double>(std::max<std::uint64_t>(stats.puts, 1));
  state.counters["ratio"] =
      static_cast<double>(stats.bytes_put_raw) / static_cast<double>(stats.bytes_written);
  state.counters["chunks"] = static_cast<double>(stats.chunks_written) / puts;
  SetBytes(state, input->json.size());
}

void ZstdDecompress(benchmark::State& state, const Input* input, int level) {
  const std::string compressed = Compress(input->json, level);
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  for (auto _ : state) {
    std::string out(input->json.size(), '\0');  // the type Get returns
    ZSTD_decompressDCtx(dctx, out.data(), out.size(), compressed.data(), compressed.size());
    benchmark::DoNotOptimize(out.data());
  }
  ZSTD_freeDCtx(dctx);
  SetBytes(state, input->json.size());
}

void Decode(benchmark::State& state, const Input* input, int level, int decode_workers = 0) {
  ChunkedCache cache(chunkcache::NewMemoryBackend(),
                     {.compression_level = level, .decode_workers = decode_workers});
  if (!cache.Put("k", input->json).ok()) state.SkipWithError("Put failed");
  const chunkcache::CacheStats before = cache.Stats();
  for (auto _ : state) {
    absl::StatusOr<Bytes> got = cache.Get("k");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  const chunkcache::CacheStats after = cache.Stats();
  const double gets = static_cast<double>(after.gets - before.gets);
  state.counters["round_trips"] =
      static_cast<double>(after.backend_calls - before.backend_calls) / gets;
  state.counters["bytes_moved"] = static_cast<double>(after.bytes_read - before.bytes_read) / gets;
  SetBytes(state, input->json.size());
}

// The machine's own ceiling for decoding on `threads` threads: the payload cut into the frames a
// Put makes, each compressed by ZSTD_compress, decoded by bare zstd on `threads` std::threads
// (frame i on thread i % threads) into one output. No fetch, no checksum, no pool.
void ZstdDecompressFrames(benchmark::State& state, const Input* input, int threads) {
  const chunkcache::internal::FramePlan plan = chunkcache::internal::PlanFrames(
      input->json.size(), chunkcache::CacheOptions().frame_size, std::size_t{1} << 20);
  std::vector<std::string> frames;
  for (std::size_t i = 0; i < plan.count; ++i) {
    frames.push_back(Compress(input->json.substr(i * plan.frame_size, plan.frame_size), 3));
  }
  std::vector<ZSTD_DCtx*> contexts;
  for (int t = 0; t < threads; ++t) contexts.push_back(ZSTD_createDCtx());
  for (auto _ : state) {
    std::string out(input->json.size(), '\0');  // the type Get returns
    const auto decode = [&](int t) {
      for (std::size_t i = t; i < frames.size(); i += threads) {
        const std::size_t at = i * plan.frame_size;
        ZSTD_decompressDCtx(contexts[t], out.data() + at,
                            std::min<std::size_t>(plan.frame_size, out.size() - at),
                            frames[i].data(), frames[i].size());
      }
    };
    std::vector<std::thread> others;
    for (int t = 1; t < threads; ++t) others.emplace_back(decode, t);
    decode(0);
    for (std::thread& other : others) other.join();
    benchmark::DoNotOptimize(out.data());
  }
  for (ZSTD_DCtx* context : contexts) ZSTD_freeDCtx(context);
  SetBytes(state, input->json.size());
}

// GetStream into a sink that only looks at each piece: the streamed read, frame by frame.
void Stream(benchmark::State& state, const Input* input) {
  ChunkedCache cache(chunkcache::NewMemoryBackend());
  if (!cache.Put("k", input->json).ok()) state.SkipWithError("Put failed");
  for (auto _ : state) {
    std::size_t bytes = 0;
    const absl::Status s = cache.GetStream("k", [&](std::string_view piece) {
      bytes += piece.size();
      benchmark::DoNotOptimize(piece.data());
      return absl::OkStatus();
    });
    if (!s.ok() || bytes != input->json.size()) state.SkipWithError("GetStream failed");
  }
  SetBytes(state, input->json.size());
}

// Stored bytes of `json` at level 3 with frames of `frame_size` (kMaxFrameSize: one frame).
std::size_t StoredSize(const std::string& json, std::size_t frame_size) {
  ChunkedCache cache(chunkcache::NewMemoryBackend(), {.frame_size = frame_size});
  if (!cache.Put("k", json).ok()) return 0;
  absl::StatusOr<chunkcache::EntryInfo> info = cache.Inspect("k");
  return info.ok() ? info->stored_size : 0;
}

// ---- The parts alone
// -----------------------------------------------------------------------------

void ValidateJson(benchmark::State& state, const Input* input) {
  chunkcache::internal::Codec codec(3, 0);
  for (auto _ : state) {
    if (!codec.ValidateJson(input->json).ok()) state.SkipWithError("invalid JSON");
  }
  SetBytes(state, input->json.size());
}

void Xxh3(benchmark::State& state, const Input* input) {
  const std::string compressed = Compress(input->json, 3);
  const std::string_view view = compressed;
  for (auto _ : state) {
    benchmark::DoNotOptimize(chunkcache::internal::Checksum({&view, 1}));
  }
  SetBytes(state, compressed.size());  // xxh3 runs over the stored (compressed) bytes
}

// What Store adds to compression: the chunk keys, the items, the manifest.
void Chunking(benchmark::State& state, const Input* input) {
  const std::string compressed = Compress(input->json, 3);
  const std::size_t chunk = std::size_t{1} << 20;
  for (auto _ : state) {
    const chunkcache::internal::StoredKeys keys("cc:", "catalogue");
    chunkcache::internal::Manifest manifest;
    manifest.generation = 0x1234;
    manifest.stored_size = compressed.size();
    manifest.chunk_size = chunk;
    manifest.chunk_count = static_cast<std::uint32_t>((compressed.size() + chunk - 1) / chunk);
    const std::vector<std::string> chunk_keys =
        keys.Chunks(manifest.generation, manifest.chunk_count);
    std::vector<chunkcache::KeyValue> items;
    for (std::uint32_t i = 0; i < manifest.chunk_count; ++i) {
      items.push_back({chunk_keys[i], std::string_view(compressed).substr(i * chunk, chunk)});
    }
    benchmark::DoNotOptimize(items.data());
    benchmark::DoNotOptimize(chunkcache::internal::EncodeManifest(manifest, keys.manifest(), {}));
  }
  state.SetItemsProcessed(state.iterations());  // entries: the cost is per entry, not per byte
}

// ---- Memory backend by payload size, near cache, single-flight ----------------------------------

std::string JsonOfSize(std::size_t bytes) {
  if (bytes < 4096) {
    std::string json = "{\"pad\":\"";
    json.append(bytes > 12 ? bytes - 12 : 0, 'x');
    return json + "\"}";
  }
  return chunkcache::testing::GenerateCatalogue(
      {.megabytes = static_cast<double>(bytes) / (1 << 20)});
}

void BM_MemoryPut(benchmark::State& state) {
  const std::string json = JsonOfSize(static_cast<std::size_t>(state.range(0)));
  ChunkedCache cache(chunkcache::NewMemoryBackend());
  for (auto _ : state) {
    if (!cache.Put("k", json).ok()) state.SkipWithError("Put failed");
  }
  SetBytes(state, json.size());
}
BENCHMARK(BM_MemoryPut)->RangeMultiplier(10)->Range(1000, 10'000'000)->UseRealTime();

void BM_MemoryGet(benchmark::State& state) {
  const std::string json = JsonOfSize(static_cast<std::size_t>(state.range(0)));
  ChunkedCache cache(chunkcache::NewMemoryBackend());
  if (!cache.Put("k", json).ok()) state.SkipWithError("Put failed");
  for (auto _ : state) {
    absl::StatusOr<Bytes> got = cache.Get("k");
    if (!got.ok()) state.SkipWithError("Get failed");
    benchmark::DoNotOptimize(got);
  }
  const chunkcache::CacheStats stats = cache.Stats();
  state.counters["round_trips"] =
      static_cast<double>(stats.backend_calls - 1) / static_cast<double>(stats.gets);
  SetBytes(state, json.size());
}
BENCHMARK(BM_MemoryGet)->RangeMultiplier(10)->Range(1000, 10'000'000)->UseRealTime();

void BM_L1Hit(benchmark::State& state) {
  ChunkedCache cache(chunkcache::NewMemoryBackend(), {.l1_capacity_bytes = std::size_t{64} << 20,
                                                      .l1_fresh_for = absl::Minutes(30)});
  if (!cache.Put("k", Inputs()[0].json).ok() || !cache.Get("k").ok()) {
    state.SkipWithError("warm-up failed");
  }
  for (auto _ : state) {
    absl::StatusOr<Bytes> got = cache.Get("k");
    benchmark::DoNotOptimize(got);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_L1Hit);

// One wave per iteration: N threads ask for a cold key at once; the loader must run once.
void BM_SingleFlightColdKey(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ChunkedCache cache(chunkcache::NewMemoryBackend());
  const std::string json = JsonOfSize(100'000);
  std::int64_t wave = 0;
  for (auto _ : state) {
    const std::string key = absl::StrCat("cold-", wave++);
    std::atomic<int> loads{0};
    std::latch start(threads);
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&] {
        start.arrive_and_wait();
        absl::StatusOr<Bytes> got = cache.GetOrLoad(key, [&]() -> absl::StatusOr<std::string> {
          ++loads;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));  // an origin takes time
          return json;
        });
        if (!got.ok()) failed = true;
      });
    }
    for (std::thread& caller : callers) caller.join();
    if (loads != 1) {
      failed = true;
      state.SkipWithError(
          absl::StrFormat("the loader ran %d times for one cold key", loads.load()).c_str());
      break;
    }
  }
  state.counters["loads_per_wave"] = 1;
  state.counters["coalesced_per_wave"] =
      static_cast<double>(cache.Stats().coalesced) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_SingleFlightColdKey)
    ->RangeMultiplier(2)
    ->Range(1, 64)
    ->ArgName("threads")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// ---- zstd's own command-line benchmark, for the same bytes
// ---------------------------------------

struct CliFigures {
  double compress_mbs = 0, decompress_mbs = 0;
};

std::optional<CliFigures> ZstdCli(const std::string& json, int level) {
  const std::filesystem::path file = std::filesystem::temp_directory_path() /
                                     absl::StrFormat("chunkcache_bench_%d.json", getpid());
  std::ofstream(file, std::ios::binary) << json;
  const std::string command = absl::StrFormat("zstd -b%d -i2 '%s' 2>&1", level, file.string());
  std::FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  if (pipe != nullptr) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
    pclose(pipe);
  }
  std::filesystem::remove(file);
  static const std::regex figures(R"(([0-9.]+) MB/s,\s*([0-9.]+) MB/s)");
  std::smatch m;
  std::optional<CliFigures> result;
  for (auto it = std::sregex_iterator(out.begin(), out.end(), figures);
       it != std::sregex_iterator(); ++it) {
    result = CliFigures{std::stod((*it)[1]), std::stod((*it)[2])};  // the last line is final
  }
  return result;
}

}  // namespace

constexpr char kUsage[] =
    "the library's micro-benchmarks, each beside its physical limit (one-shot zstd, the zstd "
    "command line's own benchmark) in one run, on the generated catalogue and on every JSON FILE "
    "given.\n\n"
    "usage: chunkcache_bench [--flag=value ...] [FILE.json ...] [--benchmark_filter=REGEX ...]";

int main(int argc, char** argv) {
  const std::vector<char*> files = chunkcache::bench::InitBenchmarkAndFlags(argc, argv, kUsage);
  Inputs().push_back({"catalogue", chunkcache::bench::FlagSizedCatalogue()});
  for (std::size_t i = 1; i < files.size(); ++i) {
    std::ifstream in(files[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "chunkcache_bench: cannot read %s\n", files[i]);
      return 2;
    }
    std::ostringstream text;
    text << in.rdbuf();
    Inputs().push_back({std::filesystem::path(files[i]).filename().string(), text.str()});
  }

  // Names of the pairs compared at the end; the strings outlive the comparisons.
  std::deque<std::string> names;
  std::vector<chunkcache::bench::RatioReporter::Comparison> comparisons;
  const auto compare = [&](std::string what, std::string library, std::string baseline) {
    names.push_back(std::move(what));
    const char* w = names.back().c_str();
    names.push_back(library + "/real_time");
    const char* l = names.back().c_str();
    names.push_back(baseline + "/real_time");
    comparisons.push_back({w, l, names.back().c_str()});
  };
  for (const Input& input : Inputs()) {
    const Input* in = &input;
    for (const int level : kLevels) {
      const std::string suffix = absl::StrFormat("%s/level:%d", input.name, level);
      for (const auto& [name, fn] :
           std::vector<std::pair<std::string, std::function<void(benchmark::State&)>>>{
               {"BM_ZstdCompress/" + suffix, [=](auto& s) { ZstdCompress(s, in, level, 0); }},
               {"BM_Encode/" + suffix, [=](auto& s) { Encode(s, in, level, 0); }},
               {"BM_ZstdDecompress/" + suffix, [=](auto& s) { ZstdDecompress(s, in, level); }},
               {"BM_Decode/" + suffix, [=](auto& s) { Decode(s, in, level); }}}) {
        benchmark::RegisterBenchmark(name.c_str(), fn)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      compare("Encode vs ZSTD_compress, " + suffix, "BM_Encode/" + suffix,
              "BM_ZstdCompress/" + suffix);
      compare("Decode vs ZSTD_decompress, " + suffix, "BM_Decode/" + suffix,
              "BM_ZstdDecompress/" + suffix);
    }
    const std::string mt = absl::StrFormat("%s/level:3/workers:2", input.name);
    benchmark::RegisterBenchmark(("BM_ZstdCompress/" + mt).c_str(),
                                 [=](auto& s) { ZstdCompress(s, in, 3, 2); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_Encode/" + mt).c_str(), [=](auto& s) { Encode(s, in, 3, 2); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    const std::string one_worker = absl::StrFormat("%s/level:3/workers:1", input.name);
    benchmark::RegisterBenchmark(("BM_Encode/" + one_worker).c_str(),
                                 [=](auto& s) { Encode(s, in, 3, 1); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    compare("Encode, 1 worker vs ZSTD_compress 1 core, " + input.name, "BM_Encode/" + one_worker,
            absl::StrFormat("BM_ZstdCompress/%s/level:3", input.name));
    compare("Encode, 2 workers vs ZSTD_compress 1 core, " + input.name, "BM_Encode/" + mt,
            absl::StrFormat("BM_ZstdCompress/%s/level:3", input.name));
    compare("Encode, 2 workers vs ZSTD_compress 2 workers, " + input.name, "BM_Encode/" + mt,
            "BM_ZstdCompress/" + mt);
    const std::string dw = absl::StrFormat("%s/level:3/decode_workers:1", input.name);
    benchmark::RegisterBenchmark(("BM_Decode/" + dw).c_str(), [=](auto& s) { Decode(s, in, 3, 1); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    compare("Decode, 1 decode worker vs ZSTD_decompress 1 core, " + input.name, "BM_Decode/" + dw,
            absl::StrFormat("BM_ZstdDecompress/%s/level:3", input.name));
    for (const int threads : {1, 2}) {
      benchmark::RegisterBenchmark(
          absl::StrFormat("BM_ZstdDecompressFrames/%s/threads:%d", input.name, threads).c_str(),
          [=](auto& s) { ZstdDecompressFrames(s, in, threads); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    compare("the machine: bare zstd, frames on 2 threads vs ZSTD_decompress 1 core, " + input.name,
            absl::StrFormat("BM_ZstdDecompressFrames/%s/threads:2", input.name),
            absl::StrFormat("BM_ZstdDecompress/%s/level:3", input.name));
    compare("Decode, 1 decode worker vs bare zstd frames on 2 threads, " + input.name,
            "BM_Decode/" + dw, absl::StrFormat("BM_ZstdDecompressFrames/%s/threads:2", input.name));
    benchmark::RegisterBenchmark(("BM_Stream/" + input.name + "/level:3").c_str(),
                                 [=](auto& s) { Stream(s, in); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    compare("GetStream vs ZSTD_decompress, " + input.name, "BM_Stream/" + input.name + "/level:3",
            absl::StrFormat("BM_ZstdDecompress/%s/level:3", input.name));
    benchmark::RegisterBenchmark(("BM_ValidateJson/" + input.name).c_str(),
                                 [=](auto& s) { ValidateJson(s, in); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_Xxh3/" + input.name).c_str(), [=](auto& s) { Xxh3(s, in); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_Chunking/" + input.name).c_str(),
                                 [=](auto& s) { Chunking(s, in); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  chunkcache::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSpeedups("the library against one-shot zstd on the same bytes", comparisons);

  absl::PrintF(
      "\nthe library against the zstd command line's own benchmark (zstd -bL -i2) of the same "
      "bytes, MB/s of JSON (ratio = library / zstd CLI):\n");
  absl::PrintF("  %-24s %5s | %10s %10s %6s | %10s %10s %6s\n", "input", "level", "Encode",
               "zstd -b", "ratio", "Decode", "zstd -b", "ratio");
  for (const Input& input : Inputs()) {
    const double megabytes = static_cast<double>(input.json.size()) / 1e6;
    for (const int level : kLevels) {
      const std::string suffix = absl::StrFormat("%s/level:%d/real_time", input.name, level);
      const double encode_s = reporter.Seconds("BM_Encode/" + suffix);
      const double decode_s = reporter.Seconds("BM_Decode/" + suffix);
      const std::optional<CliFigures> cli = ZstdCli(input.json, level);
      if (encode_s == 0 || decode_s == 0 || !cli.has_value()) continue;
      const double encode = megabytes / encode_s, decode = megabytes / decode_s;
      absl::PrintF("  %-24s %5d | %10.1f %10.1f %5.2fx | %10.1f %10.1f %5.2fx\n", input.name, level,
                   encode, cli->compress_mbs, encode / cli->compress_mbs, decode,
                   cli->decompress_mbs, decode / cli->decompress_mbs);
    }
  }
  absl::PrintF(
      "\nstored size of independent frames (frame_size, the default %d bytes) against one frame, "
      "level 3:\n",
      chunkcache::CacheOptions().frame_size);
  absl::PrintF("  %-24s %12s %12s %12s %8s\n", "input", "JSON", "one frame", "frames", "cost");
  for (const Input& input : Inputs()) {
    const std::size_t one = StoredSize(input.json, chunkcache::kMaxFrameSize);
    const std::size_t framed = StoredSize(input.json, chunkcache::CacheOptions().frame_size);
    if (one == 0 || framed == 0) continue;
    absl::PrintF("  %-24s %12d %12d %12d %7.2f%%\n", input.name, input.json.size(), one, framed,
                 100.0 * (static_cast<double>(framed) / static_cast<double>(one) - 1));
  }
  benchmark::Shutdown();
  if (failed) {
    std::fprintf(stderr,
                 "chunkcache_bench: FAILED: single-flight let the loader run more than once\n");
    return 1;
  }
  return 0;
}
