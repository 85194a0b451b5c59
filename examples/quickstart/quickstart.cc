// quickstart: the seed's launch-night fix in one program, on the in-process memory backend.
//
//   quickstart [CATALOGUE.json]
//
// Generates a ~10 MB programme catalogue (or reads the given file), stores it compressed in 1 MiB
// chunks, reads it back, then lets 32 threads ask for a cold key at once: the origin is called
// once, not 32 times.

#include <atomic>
#include <cstdio>
#include <fstream>
#include <latch>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"

namespace {

constexpr int kStormThreads = 32;
constexpr absl::Duration kOriginLatency = absl::Milliseconds(150);

std::string Milliseconds(absl::Duration d) {
  return absl::StrFormat("%.2f ms", absl::ToDoubleMilliseconds(d));
}

void PrintLatency(const char* name, const chunkcache::LatencyStats& l) {
  absl::PrintF("  %-13s n=%-4d p50=%s p99=%s max=%s\n", name, l.count, Milliseconds(l.p50),
               Milliseconds(l.p99), Milliseconds(l.max));
}

int Fail(const absl::Status& status) {
  absl::FPrintF(stderr, "quickstart: %s\n", status.ToString());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  if (argc > 1) {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat("cannot open ", argv[1])));
    std::ostringstream contents;
    contents << in.rdbuf();
    json = contents.str();
  } else {
    json = chunkcache::testing::GenerateCatalogue({.megabytes = 10});
  }

  chunkcache::ChunkedCache cache(chunkcache::NewMemoryBackend(), {.chunk_size = 1 << 20});

  absl::Time start = absl::Now();
  if (absl::Status s = cache.Put("catalogue", json); !s.ok()) return Fail(s);
  const absl::Duration put_time = absl::Now() - start;
  const chunkcache::CacheStats after_put = cache.Stats();

  start = absl::Now();
  absl::StatusOr<chunkcache::Bytes> got = cache.Get("catalogue");
  const absl::Duration get_time = absl::Now() - start;
  if (!got.ok()) return Fail(got.status());
  if (**got != json) return Fail(absl::DataLossError("read back different bytes"));

  absl::PrintF("catalogue      %d bytes of JSON\n", json.size());
  absl::PrintF("stored         %d bytes in %d chunks + 1 manifest (ratio %.2fx)\n",
               after_put.bytes_written, after_put.chunks_written,
               static_cast<double>(json.size()) / static_cast<double>(after_put.bytes_written));
  absl::PrintF("put            %s (validate + compress + store)\n", Milliseconds(put_time));
  absl::PrintF("get            %s (fetch + verify + decompress)\n", Milliseconds(get_time));

  // The launch-night storm: the entry is gone, 32 requests arrive at once.
  if (absl::Status s = cache.Invalidate("catalogue"); !s.ok()) return Fail(s);
  std::atomic<int> origin_calls{0};
  std::atomic<int> served{0};
  std::latch ready(kStormThreads);
  start = absl::Now();
  std::vector<std::thread> storm;
  for (int i = 0; i < kStormThreads; ++i) {
    storm.emplace_back([&] {
      ready.arrive_and_wait();
      absl::StatusOr<chunkcache::Bytes> doc =
          cache.GetOrLoad("catalogue", [&]() -> absl::StatusOr<std::string> {
            ++origin_calls;
            absl::SleepFor(kOriginLatency);  // the database and GraphQL layer
            return json;
          });
      if (doc.ok() && (*doc)->size() == json.size()) ++served;
    });
  }
  for (std::thread& t : storm) t.join();
  absl::PrintF("cold-key storm  %d callers served, %d origin call(s), %s\n", served.load(),
               origin_calls.load(), Milliseconds(absl::Now() - start));

  const chunkcache::CacheStats s = cache.Stats();
  absl::PrintF(
      "stats          gets=%d hits=%d misses=%d loads=%d coalesced=%d corrupt_reads=%d "
      "backend_calls=%d\n",
      s.gets, s.hits, s.misses, s.loads, s.coalesced, s.corrupt_reads, s.backend_calls);
  PrintLatency("get latency", s.get_latency);
  PrintLatency("put latency", s.put_latency);
  PrintLatency("load latency", s.load_latency);
  return served == kStormThreads && origin_calls == 1 ? 0 : 1;
}
