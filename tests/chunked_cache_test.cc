#include "chunkcache/chunked_cache.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <latch>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "allocation_hooks.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::RecordingBackend;

// The largest single allocation (allocation_hooks.h), so tests can show that no read allocates
// what stored bytes merely claim; not under AddressSanitizer, which reports huge ones itself.
using testing::largest_allocation;
constexpr bool kCountsAllocations = testing::kHooked;

constexpr std::size_t kSmallChunk = 4096;

std::string Catalogue(double megabytes, std::uint64_t seed = 1) {
  return testing::GenerateCatalogue({.megabytes = megabytes, .seed = seed});
}

// A JSON string of pseudo-random base64 characters: compresses poorly, so its compressed size
// can be steered to a chosen number of bytes.
std::string RandomJsonString(std::size_t length, std::uint32_t seed) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937 rng(seed);
  std::string s = "\"";
  for (std::size_t i = 0; i < length; ++i) s.push_back(kAlphabet[rng() % 64]);
  s.push_back('"');
  return s;
}

// A JSON document whose zstd-3 compressed size is exactly `target` bytes.
std::string JsonCompressingTo(std::size_t target) {
  internal::Codec codec(3, 0);
  auto compressed_size = [&](std::size_t length, std::uint32_t seed) {
    return codec.Compress(RandomJsonString(length, seed))->size;
  };
  // Random base64 compresses to about 3/4 of its length: home in on the length, then search
  // nearby lengths and seeds (sizes skip some values as the length grows).
  std::size_t length = target * 4 / 3;
  for (int step = 0; step < 20; ++step) {
    const auto error =
        static_cast<long long>(target) - static_cast<long long>(compressed_size(length, 0));
    if (std::llabs(error) < 8) break;
    length = static_cast<std::size_t>(static_cast<long long>(length) + error * 4 / 3);
  }
  for (std::size_t delta = 0; delta < 64; ++delta) {
    for (const std::size_t candidate : {length + delta, length - std::min(delta, length)}) {
      for (std::uint32_t seed = 0; seed < 16; ++seed) {
        if (compressed_size(candidate, seed) == target) return RandomJsonString(candidate, seed);
      }
    }
  }
  FAIL("no payload compresses to " << target << " bytes");
  return {};
}

std::shared_ptr<MemoryBackend> NewMemory(std::size_t max_item_size = std::size_t{1} << 20) {
  return NewMemoryBackend(MemoryBackendOptions{.capacity_bytes = std::size_t{512} << 20,
                                               .max_item_size = max_item_size});
}

// The manifest currently stored for `key`, decoded.
internal::Manifest StoredManifest(Backend& backend, const CacheOptions& options,
                                  std::string_view key) {
  const internal::StoredKeys keys(options.key_prefix, key);
  const std::string_view manifest_key = keys.manifest();
  auto values = backend.MultiGet({&manifest_key, 1});
  REQUIRE(values.ok());
  REQUIRE((*values)[0].has_value());
  auto decoded = internal::DecodeManifest(
      *(*values)[0], keys.manifest(),
      {.max_payload_size = options.max_payload_size, .max_chunk_size = backend.max_item_size()});
  REQUIRE(decoded.ok());
  return decoded->manifest;
}

// Overwrites one stored item.
void Overwrite(Backend& backend, std::string_view key, std::string_view value) {
  const KeyValue item{key, value};
  REQUIRE(backend.MultiSet({&item, 1}, absl::Hours(1)).ok());
}

void RequirePayload(const absl::StatusOr<Bytes>& got, std::string_view expected) {
  REQUIRE(got.ok());
  REQUIRE((*got)->size() == expected.size());
  REQUIRE(**got == expected);
}

TEST_CASE("payloads around the inline and chunk boundaries round-trip") {
  auto backend = NewMemory();
  const CacheOptions options{.chunk_size = kSmallChunk};
  ChunkedCache cache(backend, options);
  // A one-frame payload: the header and one frame table entry.
  const std::size_t inline_limit = kSmallChunk - internal::ManifestSize(1);

  struct Case {
    std::size_t stored_size;
    std::uint32_t chunk_count;
  };
  const Case cases[] = {
      {inline_limit - 1, 0}, {inline_limit, 0},        {inline_limit + 1, 1},
      {kSmallChunk - 1, 1},  {kSmallChunk, 1},         {kSmallChunk + 1, 2},
      {2 * kSmallChunk, 2},  {2 * kSmallChunk + 1, 3}, {40 * kSmallChunk + 17, 41},
  };
  for (const Case& c : cases) {
    CAPTURE(c.stored_size);
    const std::string json = JsonCompressingTo(c.stored_size);
    REQUIRE(cache.Put("k", json).ok());
    const internal::Manifest manifest = StoredManifest(*backend, options, "k");
    CHECK(manifest.stored_size == c.stored_size);
    CHECK(manifest.chunk_count == c.chunk_count);
    RequirePayload(cache.Get("k"), json);
  }
}

TEST_CASE("every corpus document round-trips") {
  const auto files = testing::CorpusFiles();
  if (files.empty()) {
    WARN("no corpus found under " CHUNKCACHE_SHARED_DIR "/corpus; corpus round trip not run");
    return;
  }
  ChunkedCache cache(NewMemory(), {.chunk_size = 64 << 10});
  for (const auto& file : files) {
    CAPTURE(file);
    const std::string json = testing::ReadFile(file);
    REQUIRE(!json.empty());
    REQUIRE(cache.Put(file.filename().string(), json).ok());
    RequirePayload(cache.Get(file.filename().string()), json);
  }
}

TEST_CASE("a 10 MB catalogue round-trips in 1 MiB chunks") {
  const std::string json = Catalogue(10);
  auto backend = NewMemory();
  ChunkedCache cache(backend);
  REQUIRE(cache.Put("catalogue", json).ok());
  const internal::Manifest manifest = StoredManifest(*backend, cache.options(), "catalogue");
  CHECK(manifest.raw_size == json.size());
  CHECK(manifest.chunk_count == (manifest.stored_size + (1 << 20) - 1) / (1 << 20));
  CHECK(manifest.chunk_count >= 2);
  RequirePayload(cache.Get("catalogue"), json);
  const CacheStats stats = cache.Stats();
  CHECK(stats.hits == 1);
  CHECK(stats.chunks_read == manifest.chunk_count);
}

TEST_CASE("stored items never exceed the effective chunk size and decode with the zstd CLI") {
  REQUIRE(std::system("command -v zstd > /dev/null") == 0);
  const std::string json = Catalogue(2);
  constexpr std::size_t kBackendLimit = 64 << 10;  // smaller than chunk_size: it wins
  auto recorder = std::make_shared<RecordingBackend>(NewMemory(kBackendLimit));
  ChunkedCache cache(recorder, {.chunk_size = 1 << 20});
  REQUIRE(cache.Put("doc", json).ok());

  std::string concatenated;
  int chunks = 0;
  for (const auto& item : recorder->TakeSets()) {
    CAPTURE(item.key);
    CHECK(item.value.size() <= kBackendLimit);
    if (item.key.back() != '}') {  // a chunk key; the manifest key ends with the hash tag
      concatenated += item.value;
      ++chunks;
    }
  }
  CHECK(chunks > 1);
  const std::optional<std::string> decoded = testing::ZstdCliDecompress(concatenated);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == json);
}

TEST_CASE("chunks outlive their manifest by the grace period") {
  auto recorder = std::make_shared<RecordingBackend>(NewMemory());
  ChunkedCache cache(
      recorder,
      {.chunk_size = kSmallChunk, .ttl = absl::Minutes(10), .chunk_ttl_grace = absl::Seconds(30)});
  REQUIRE(cache.Put("k", Catalogue(0.1)).ok());
  for (const auto& item : recorder->TakeSets()) {
    const bool is_manifest = item.key.back() == '}';
    CHECK(item.ttl == (is_manifest ? absl::Minutes(10) : absl::Minutes(10) + absl::Seconds(30)));
  }
}

// Two writers alternate versions A and B of one key while four readers read it.
void RunTornWriteRace(bool delete_replaced_chunks) {
  const std::string a = Catalogue(0.05, 1);
  const std::string b = Catalogue(0.12, 2);
  REQUIRE(a.size() != b.size());
  ChunkedCache cache(NewMemory(),
                     {.chunk_size = 256, .delete_replaced_chunks = delete_replaced_chunks});
  REQUIRE(cache.Put("k", a).ok());

  constexpr int kReaders = 4;
  constexpr int kReadsPerReader = 750;
  std::atomic<int> readers_done{0}, wrong{0}, misses{0}, errors{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; readers_done.load() < kReaders; ++i) {
        if (!cache.Put("k", (i + w) % 2 == 0 ? a : b).ok()) ++errors;
      }
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      for (int i = 0; i < kReadsPerReader; ++i) {
        absl::StatusOr<Bytes> got = cache.Get("k");
        if (!got.ok()) {
          absl::IsNotFound(got.status()) ? ++misses : ++errors;
        } else if (**got != a && **got != b) {
          ++wrong;
        }
      }
      ++readers_done;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(errors == 0);
  CHECK(cache.Stats().corrupt_reads == 0);
  if (delete_replaced_chunks) {
    // A reader can lose the race kMaxReadAttempts times in a row; it then misses, never tears.
    CHECK(misses < kReaders * kReadsPerReader / 100);
  } else {
    CHECK(misses == 0);
  }
}

TEST_CASE("a reader never sees a torn write", "[concurrency]") {
  SECTION("replaced chunks deleted at once") { RunTornWriteRace(true); }
  SECTION("replaced chunks left to expire") { RunTornWriteRace(false); }
}

// A stored entry with several chunks, and the keys it is stored under.
struct ChunkedEntry {
  std::shared_ptr<MemoryBackend> backend = NewMemory();
  CacheOptions options{.chunk_size = kSmallChunk};
  ChunkedCache cache{backend, options};
  std::string json = Catalogue(0.2);
  internal::StoredKeys keys{options.key_prefix, "k"};
  internal::Manifest manifest;

  ChunkedEntry() {
    REQUIRE(cache.Put("k", json).ok());
    manifest = StoredManifest(*backend, options, "k");
    REQUIRE(manifest.chunk_count > 2);
  }

  // The entry reads as a counted corrupt miss, then GetOrLoad reloads and repairs it.
  void RequireCorruptMissThenRepair() {
    const std::uint64_t corrupt_before = cache.Stats().corrupt_reads;
    largest_allocation = 0;
    absl::StatusOr<Bytes> got = cache.Get("k");
    if (kCountsAllocations) CHECK(largest_allocation.load() < (1 << 20));
    REQUIRE(absl::IsNotFound(got.status()));
    CHECK(cache.Stats().corrupt_reads == corrupt_before + 1);

    int loads = 0;
    RequirePayload(cache.GetOrLoad("k",
                                   [&]() -> absl::StatusOr<std::string> {
                                     ++loads;
                                     return json;
                                   }),
                   json);
    CHECK(loads == 1);
    RequirePayload(cache.Get("k"), json);
  }
};

TEST_CASE("a deleted chunk reads as a corrupt miss and a load repairs it") {
  ChunkedEntry entry;
  const std::string chunk = entry.keys.Chunk(entry.manifest.generation, 1);
  const std::string_view chunk_key = chunk;
  REQUIRE(entry.backend->Delete({&chunk_key, 1}).ok());
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a flipped chunk byte reads as a corrupt miss and a load repairs it") {
  ChunkedEntry entry;
  const std::string chunk_key = entry.keys.Chunk(entry.manifest.generation, 2);
  const std::string_view key_view = chunk_key;
  std::string chunk = *(*entry.backend->MultiGet({&key_view, 1}))[0];
  chunk[chunk.size() / 2] ^= 0x20;
  Overwrite(*entry.backend, chunk_key, chunk);
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a resized chunk reads as a corrupt miss") {
  ChunkedEntry entry;
  const std::string chunk_key = entry.keys.Chunk(entry.manifest.generation, 0);
  Overwrite(*entry.backend, chunk_key, std::string(kSmallChunk + 100, 'x'));
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a truncated manifest reads as a corrupt miss") {
  ChunkedEntry entry;
  Overwrite(*entry.backend, entry.keys.manifest(), "CCMF\x01");
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a manifest claiming 2^40 bytes reads as a corrupt miss without a large allocation") {
  ChunkedEntry entry;
  internal::Manifest huge = entry.manifest;
  huge.raw_size = std::uint64_t{1} << 40;
  huge.stored_size = std::uint64_t{1} << 39;
  huge.chunk_count = static_cast<std::uint32_t>(huge.stored_size / huge.chunk_size);
  Overwrite(*entry.backend, entry.keys.manifest(),
            internal::EncodeManifest(huge, entry.keys.manifest(), {}));
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a manifest whose chunks decode to other bytes reads as a corrupt miss") {
  // Well-formed chunks whose checksum matches but whose frame is not the declared size.
  ChunkedEntry entry;
  internal::Manifest lying = entry.manifest;
  lying.raw_size = entry.manifest.raw_size + 1;
  Overwrite(*entry.backend, entry.keys.manifest(),
            internal::EncodeManifest(lying, entry.keys.manifest(), {}));
  entry.RequireCorruptMissThenRepair();
}

TEST_CASE("a cold key loads once for 64 concurrent callers", "[concurrency]") {
  ChunkedCache cache(NewMemory(), {.chunk_size = kSmallChunk});
  const std::string json = Catalogue(0.1);
  constexpr int kCallers = 64;
  std::atomic<int> loads{0};
  std::latch start(kCallers);
  std::vector<absl::StatusOr<Bytes>> results(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = cache.GetOrLoad("cold", [&]() -> absl::StatusOr<std::string> {
        ++loads;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let everyone queue up
        return json;
      });
    });
  }
  for (auto& t : threads) t.join();
  CHECK(loads == 1);
  for (const auto& result : results) RequirePayload(result, json);
  const CacheStats stats = cache.Stats();
  CHECK(stats.loads == 1);
  CHECK(stats.coalesced + 1 + stats.hits == kCallers);
  CHECK(stats.coalesced >= kCallers / 2);
  RequirePayload(cache.Get("cold"), json);
}

TEST_CASE("a loader error reaches every waiter, holds loads back for its backoff, is not stored",
          "[concurrency]") {
  std::atomic<std::int64_t> now_ns{absl::ToUnixNanos(absl::FromUnixSeconds(1'000'000))};
  ChunkedCache cache(NewMemory(), {.load_retry_initial = absl::Seconds(1),
                                   .load_retry_max = absl::Seconds(8),
                                   .clock = [&] { return absl::FromUnixNanos(now_ns.load()); }});
  constexpr int kCallers = 16;
  std::atomic<int> loads{0};
  std::latch start(kCallers);
  std::vector<absl::Status> statuses(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      statuses[i] = cache
                        .GetOrLoad("k",
                                   [&]() -> absl::StatusOr<std::string> {
                                     ++loads;
                                     std::this_thread::sleep_for(std::chrono::milliseconds(200));
                                     return absl::UnavailableError("origin down");
                                   })
                        .status();
    });
  }
  for (auto& t : threads) t.join();
  CHECK(loads == 1);
  for (const absl::Status& s : statuses) {
    CHECK(absl::IsUnavailable(s));
    CHECK(s.message() == "origin down");
  }
  auto succeeding = [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return std::string("[1,2,3]");
  };
  // Within the backoff (at least half of load_retry_initial) the failure answers: no load.
  now_ns += absl::ToInt64Nanoseconds(absl::Milliseconds(400));
  absl::StatusOr<Bytes> held = cache.GetOrLoad("k", succeeding);
  CHECK(absl::IsUnavailable(held.status()));
  CHECK(absl::StrContains(held.status().message(), "origin down"));
  CHECK(absl::StrContains(held.status().message(), "a recent load of this key failed"));
  CHECK(loads == 1);
  CHECK(cache.Stats().load_backoffs == 1);
  // Another key is not held back.
  RequirePayload(cache.GetOrLoad("other", succeeding), "[1,2,3]");
  CHECK(loads == 2);
  // After the backoff, the next call loads again and succeeds; nothing failed was stored.
  now_ns += absl::ToInt64Nanoseconds(absl::Milliseconds(600));
  RequirePayload(cache.GetOrLoad("k", succeeding), "[1,2,3]");
  CHECK(loads == 3);
  CHECK(cache.Stats().load_errors == 1);
}

TEST_CASE("the load backoff doubles with each failure in a row, up to load_retry_max") {
  std::atomic<std::int64_t> now_ns{absl::ToUnixNanos(absl::FromUnixSeconds(1'000'000))};
  ChunkedCache cache(NewMemory(), {.load_retry_initial = absl::Seconds(1),
                                   .load_retry_max = absl::Seconds(4),
                                   .clock = [&] { return absl::FromUnixNanos(now_ns.load()); }});
  int loads = 0;
  auto failing = [&]() -> absl::StatusOr<std::string> {
    ++loads;
    return absl::UnavailableError("origin down");
  };
  // Failure n is held for [d/2, d] with d = 1 s, 2 s, 4 s, 4 s: the loader runs again only once
  // the whole of d has passed for sure, and never before d/2.
  for (const absl::Duration d :
       {absl::Seconds(1), absl::Seconds(2), absl::Seconds(4), absl::Seconds(4)}) {
    const int before = loads;
    CHECK(absl::IsUnavailable(cache.GetOrLoad("k", failing).status()));
    CHECK(loads == before + 1);
    now_ns += absl::ToInt64Nanoseconds(d / 2 - absl::Milliseconds(1));
    CHECK(absl::IsUnavailable(cache.GetOrLoad("k", failing).status()));
    CHECK(loads == before + 1);
    now_ns += absl::ToInt64Nanoseconds(d / 2 + absl::Milliseconds(2));
  }
  // A Put by this process ends the backoff at once.
  REQUIRE(cache.Put("k", "[7]").ok());
  RequirePayload(cache.GetOrLoad("k", failing), "[7]");
}

TEST_CASE("a waiter gives up after load_wait_timeout while the leader finishes", "[concurrency]") {
  ChunkedCache cache(NewMemory(), {.load_wait_timeout = absl::Milliseconds(50)});
  std::latch leader_started(1);
  std::latch release_leader(1);
  absl::StatusOr<Bytes> leader_result;
  std::thread leader([&] {
    leader_result = cache.GetOrLoad("k", [&]() -> absl::StatusOr<std::string> {
      leader_started.count_down();
      release_leader.wait();
      return std::string("{\"v\":1}");
    });
  });
  leader_started.wait();
  absl::StatusOr<Bytes> waiter = cache.GetOrLoad("k", [] {
    FAIL("the waiter must not load");
    return absl::StatusOr<std::string>("{}");
  });
  CHECK(absl::IsDeadlineExceeded(waiter.status()));
  release_leader.count_down();
  leader.join();
  RequirePayload(leader_result, "{\"v\":1}");
  CHECK(cache.Stats().wait_timeouts == 1);
  RequirePayload(cache.Get("k"), "{\"v\":1}");
}

TEST_CASE("a throwing loader becomes an Internal status") {
  ChunkedCache cache(NewMemory());
  auto got = cache.GetOrLoad(
      "k", []() -> absl::StatusOr<std::string> { throw std::runtime_error("boom"); });
  REQUIRE(absl::IsInternal(got.status()));
  CHECK(std::string(got.status().message()).find("boom") != std::string::npos);
  CHECK(absl::IsNotFound(cache.Get("k").status()));
}

TEST_CASE("invalid JSON is refused and the previous value stays readable") {
  ChunkedCache cache(NewMemory());
  REQUIRE(cache.Put("k", "{\"ok\":true}").ok());
  for (const std::string_view bad : {"{\"ok\":", "not json", "", "{\"a\":1} trailing", "\xff"}) {
    CAPTURE(bad);
    CHECK(absl::IsInvalidArgument(cache.Put("k", bad)));
  }
  RequirePayload(cache.Get("k"), "{\"ok\":true}");
  CHECK(cache.Stats().put_errors == 5);
}

TEST_CASE("validate_json off stores any bytes") {
  ChunkedCache cache(NewMemory(), {.validate_json = false});
  REQUIRE(cache.Put("k", "not json").ok());
  RequirePayload(cache.Get("k"), "not json");
}

TEST_CASE("a loader returning invalid JSON fails its callers and stores nothing") {
  ChunkedCache cache(NewMemory());
  auto got = cache.GetOrLoad("k", [] { return absl::StatusOr<std::string>("{oops"); });
  CHECK(absl::IsInvalidArgument(got.status()));
  CHECK(absl::IsNotFound(cache.Get("k").status()));
}

TEST_CASE("an oversize payload is ResourceExhausted and the previous value stays") {
  ChunkedCache cache(NewMemory(), {.max_payload_size = 1000});
  REQUIRE(cache.Put("k", "[1]").ok());
  const std::string big = "[" + std::string(2000, '1') + "]";
  CHECK(absl::IsResourceExhausted(cache.Put("k", big)));
  CHECK(absl::IsResourceExhausted(
      cache.GetOrLoad("other", [&] { return absl::StatusOr<std::string>(big); }).status()));
  RequirePayload(cache.Get("k"), "[1]");
}

TEST_CASE("bad keys are InvalidArgument for every operation") {
  ChunkedCache cache(NewMemory());
  const std::string too_long(kMaxKeySize + 1, 'k');
  for (const std::string_view key : {std::string_view(), std::string_view(too_long)}) {
    CHECK(absl::IsInvalidArgument(cache.Put(key, "{}")));
    CHECK(absl::IsInvalidArgument(cache.Get(key).status()));
    CHECK(absl::IsInvalidArgument(cache.Invalidate(key)));
    CHECK(absl::IsInvalidArgument(
        cache.GetOrLoad(key, [] { return absl::StatusOr<std::string>("{}"); }).status()));
  }
  const std::string longest(kMaxKeySize, 'k');
  CHECK(cache.Put(longest, "{}").ok());
}

TEST_CASE("keys with braces, percent signs and binary bytes stay distinct") {
  ChunkedCache cache(NewMemory(), {.chunk_size = 256});
  const std::string keys[] = {"a{b", "a%7Bb", "a}b", std::string("a\0b", 3), "a b", "ab"};
  for (std::size_t i = 0; i < std::size(keys); ++i) {
    const std::string json = "[" + std::to_string(i) + "," + RandomJsonString(600, i) + "]";
    REQUIRE(cache.Put(keys[i], json).ok());
  }
  for (std::size_t i = 0; i < std::size(keys); ++i) {
    auto got = cache.Get(keys[i]);
    REQUIRE(got.ok());
    CHECK((*got)->rfind("[" + std::to_string(i) + ",", 0) == 0);
  }
}

TEST_CASE("invalid options make every operation InvalidArgument") {
  const CacheOptions bad[] = {
      {.chunk_size = 10},          {.compression_level = 0},      {.compression_level = 99},
      {.compression_workers = -1}, {.ttl = absl::ZeroDuration()}, {.max_payload_size = 0},
  };
  for (const CacheOptions& options : bad) {
    ChunkedCache cache(NewMemory(), options);
    CHECK(absl::IsInvalidArgument(cache.Put("k", "{}")));
    CHECK(absl::IsInvalidArgument(cache.Get("k").status()));
  }
  ChunkedCache null_backend(nullptr);
  CHECK(absl::IsInvalidArgument(null_backend.Put("k", "{}")));
}

TEST_CASE("ValidateCacheOptions accepts the defaults and names each option out of range") {
  CHECK(ValidateCacheOptions(CacheOptions{}).ok());
  const absl::Duration zero = absl::ZeroDuration();
  const absl::Duration minus = -absl::Milliseconds(1);
  struct Bad {
    CacheOptions options;
    std::string named;  // the option the message must name
  };
  const Bad bad[] = {
      {{.chunk_size = kMinChunkSize - 1}, "chunk_size"},
      {{.compression_level = 0}, "compression_level"},
      {{.compression_level = 99}, "compression_level"},
      {{.compression_workers = -1}, "compression_workers"},
      {{.ttl = zero}, "ttl"},
      {{.chunk_ttl_grace = minus}, "chunk_ttl_grace"},
      {{.max_payload_size = 0}, "max_payload_size"},
      {{.load_wait_timeout = zero}, "load_wait_timeout"},
      {{.load_retry_initial = zero}, "load_retry_initial"},
      {{.load_retry_initial = absl::Seconds(2), .load_retry_max = absl::Seconds(1)},
       "load_retry_max"},
      {{.unstored_hold = minus}, "unstored_hold"},
      {{.l1_fresh_for = minus}, "l1_fresh_for"},
      {{.l1_capacity_bytes = 1 << 20, .l1_fresh_for = absl::Hours(1)}, "l1_fresh_for"},
      {{.soft_ttl = minus}, "soft_ttl"},
      {{.soft_ttl = absl::Hours(1)}, "soft_ttl"},
      {{.refresh_threads = 0}, "refresh_threads"},
      {{.lease_ttl = minus}, "lease_ttl"},
      {{.lease_ttl = absl::Seconds(1), .lease_poll_initial = zero}, "lease_poll_initial"},
      {{.lease_ttl = absl::Seconds(1),
        .lease_poll_initial = absl::Milliseconds(50),
        .lease_poll_max = absl::Milliseconds(10)},
       "lease_poll_max"},
      {{.breaker_failure_threshold = -1}, "breaker_failure_threshold"},
      {{.breaker_failure_threshold = 3, .breaker_cooldown = zero}, "breaker_cooldown"},
  };
  for (const Bad& b : bad) {
    INFO(b.named);
    const absl::Status status = ValidateCacheOptions(b.options);
    CHECK(absl::IsInvalidArgument(status));
    CHECK(absl::StrContains(status.message(), b.named));
    // A cache built with them answers with the same check.
    ChunkedCache cache(NewMemory(), b.options);
    CHECK(cache.Get("k").status() == status);
  }
  // Options that are fine on their own still need a backend that can hold a manifest.
  ChunkedCache tiny_items(NewMemory(kMinChunkSize - 1));
  const absl::Status tiny = tiny_items.Put("k", "{}");
  CHECK(absl::IsInvalidArgument(tiny));
  CHECK(absl::StrContains(tiny.message(), "max_item_size"));
}

TEST_CASE("a backend outage is served through the loader") {
  auto backend = std::make_shared<testing::FailingBackend>(absl::UnavailableError("down"));
  ChunkedCache cache(backend);
  CHECK(absl::IsUnavailable(cache.Get("k").status()));
  CHECK(absl::IsUnavailable(cache.Put("k", "{}")));
  int loads = 0;
  auto got = cache.GetOrLoad("k", [&] {
    ++loads;
    return absl::StatusOr<std::string>("{\"from\":\"origin\"}");
  });
  RequirePayload(got, "{\"from\":\"origin\"}");
  CHECK(loads == 1);
  CHECK(cache.Stats().fallbacks == 1);
}

TEST_CASE("a value loaded during an outage is still checked before it is served") {
  auto backend = std::make_shared<testing::FailingBackend>(absl::UnavailableError("down"));
  ChunkedCache cache(backend);
  auto got = cache.GetOrLoad("k", [] { return absl::StatusOr<std::string>("{not json"); });
  CHECK(absl::IsInvalidArgument(got.status()));
}

TEST_CASE("Invalidate removes the manifest and the chunks") {
  auto backend = NewMemory();
  ChunkedCache cache(backend, {.chunk_size = kSmallChunk});
  REQUIRE(cache.Put("k", Catalogue(0.1)).ok());
  CHECK(backend->Stats().items > 2);
  REQUIRE(cache.Invalidate("k").ok());
  CHECK(absl::IsNotFound(cache.Get("k").status()));
  CHECK(backend->Stats().items == 0);
  CHECK(cache.Invalidate("never-stored").ok());
}

TEST_CASE("a Put deletes the chunks of the entry it replaces") {
  auto backend = NewMemory();
  ChunkedCache cache(backend, {.chunk_size = kSmallChunk});
  REQUIRE(cache.Put("k", Catalogue(0.1, 1)).ok());
  const std::string second = Catalogue(0.1, 2);
  REQUIRE(cache.Put("k", second).ok());
  const internal::Manifest manifest = StoredManifest(*backend, cache.options(), "k");
  CHECK(backend->Stats().items == manifest.chunk_count + 1);
  RequirePayload(cache.Get("k"), second);
}

TEST_CASE("a small payload is one inline item and one round trip") {
  auto recorder = std::make_shared<RecordingBackend>(NewMemory());
  ChunkedCache cache(recorder);
  REQUIRE(cache.Put("k", "{\"small\":true}").ok());
  CHECK(recorder->TakeSets().size() == 1);
  const int gets_before = recorder->multi_gets;
  RequirePayload(cache.Get("k"), "{\"small\":true}");
  CHECK(recorder->multi_gets - gets_before == 1);
}

TEST_CASE("stats count hits, misses, loads and bytes") {
  ChunkedCache cache(NewMemory());
  CHECK(absl::IsNotFound(cache.Get("k").status()));
  REQUIRE(cache.GetOrLoad("k", [] { return absl::StatusOr<std::string>("[1,2]"); }).ok());
  REQUIRE(cache.Get("k").ok());
  const CacheStats stats = cache.Stats();
  CHECK(stats.gets == 3);
  CHECK(stats.misses == 2);
  CHECK(stats.hits == 1);
  CHECK(stats.loads == 1);
  CHECK(stats.puts == 1);
  CHECK(stats.bytes_put_raw == 5);
  CHECK(stats.bytes_returned == 5);
  CHECK(stats.get_latency.count == 3);
  CHECK(stats.get_latency.max >= stats.get_latency.p50);
  CHECK(stats.load_latency.count == 1);
}

TEST_CASE("multithreaded compression round-trips") {
  ChunkedCache cache(NewMemory(), {.compression_workers = 2});
  const std::string json = Catalogue(3);
  REQUIRE(cache.Put("k", json).ok());
  RequirePayload(cache.Get("k"), json);
}

TEST_CASE("Inspect describes the stored entry and finds missing or damaged chunks") {
  auto backend = NewMemoryBackend();
  ChunkedCache cache(backend, {.chunk_size = 16 << 10});
  const std::string json = Catalogue(0.2);
  REQUIRE(cache.Put("k", json).ok());
  absl::StatusOr<EntryInfo> info = cache.Inspect("k");
  REQUIRE(info.ok());
  CHECK(info->manifest_key == "cc:{k}");
  CHECK(info->format_version == 3);
  CHECK(info->raw_size == json.size());
  CHECK_FALSE(info->is_inline);
  CHECK(info->chunk_size == (16 << 10));
  REQUIRE(info->chunks.size() == (info->stored_size + (16 << 10) - 1) / (16 << 10));
  std::uint64_t total = 0;
  for (const ChunkInfo& chunk : info->chunks) {
    CHECK(chunk.actual_size == chunk.expected_size);
    CHECK(absl::StartsWith(chunk.key, "cc:{k}:"));
    total += chunk.expected_size;
  }
  CHECK(total == info->stored_size);
  CHECK(info->complete);
  CHECK(info->checksum_ok);

  // Damage one chunk, lose another.
  const std::string damaged_key = info->chunks[1].key;
  std::string damaged = *(*backend->MultiGet({damaged_key}))[0];
  damaged[10] ^= 0x40;
  REQUIRE(backend->MultiSet({{damaged_key, damaged}}, absl::Hours(1)).ok());
  absl::StatusOr<EntryInfo> flipped = cache.Inspect("k");
  REQUIRE(flipped.ok());
  CHECK(flipped->complete);
  CHECK_FALSE(flipped->checksum_ok);
  const std::string_view lost = info->chunks[0].key;
  REQUIRE(backend->Delete({&lost, 1}).ok());
  absl::StatusOr<EntryInfo> missing = cache.Inspect("k");
  REQUIRE(missing.ok());
  CHECK_FALSE(missing->chunks[0].actual_size.has_value());
  CHECK_FALSE(missing->complete);
  CHECK_FALSE(missing->checksum_ok);

  REQUIRE(cache.Put("small", "[1,2,3]").ok());
  absl::StatusOr<EntryInfo> small = cache.Inspect("small");
  REQUIRE(small.ok());
  CHECK(small->is_inline);
  CHECK(small->chunks.empty());
  CHECK(small->checksum_ok);
  CHECK(cache.Inspect("absent").status().code() == absl::StatusCode::kNotFound);
  REQUIRE(backend->MultiSet({{"cc:{bad}", "not a manifest"}}, absl::Hours(1)).ok());
  CHECK(cache.Inspect("bad").status().code() == absl::StatusCode::kDataLoss);
}

// Stores what it is given, then reports `outcome` for the manifest write (the item whose key has
// no ':' after its hash tag): a server that applied the SET but whose reply was lost or late.
class ManifestOutcomeBackend : public testing::RecordingBackend {
 public:
  ManifestOutcomeBackend(std::shared_ptr<Backend> inner, absl::Status outcome, bool apply)
      : RecordingBackend(std::move(inner)), outcome_(std::move(outcome)), apply_(apply) {}

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    const bool manifest = items.size() == 1 && items[0].key.back() == '}';
    if (!manifest || !armed) return RecordingBackend::MultiSet(items, ttl);
    if (apply_) RecordingBackend::MultiSet(items, ttl).IgnoreError();
    return outcome_;
  }

  std::atomic<bool> armed{false};

 private:
  const absl::Status outcome_;
  const bool apply_;
};

TEST_CASE("a Put whose manifest write may have been applied never deletes the chunks it names") {
  // Before: any error from the manifest write deleted the new chunks. With the write applied but
  // its reply timed out, v1 was gone and v2 broken: every Get a corrupt miss until ttl.
  const CacheOptions options{.chunk_size = kSmallChunk};
  const std::string v1 = Catalogue(0.05, 1), v2 = Catalogue(0.05, 2);
  for (const absl::Status& ambiguous :
       {absl::DeadlineExceededError("timed out"), absl::UnavailableError("connection lost"),
        absl::InternalError("protocol error")}) {
    INFO(ambiguous.ToString());
    auto backend = std::make_shared<ManifestOutcomeBackend>(NewMemory(), ambiguous, /*apply=*/true);
    ChunkedCache cache(backend, options);
    REQUIRE(cache.Put("k", v1).ok());
    backend->armed = true;
    const absl::Status put = cache.Put("k", v2);
    CHECK(put.code() == ambiguous.code());
    backend->armed = false;
    // The write was applied: the new value is complete, whoever reads it.
    RequirePayload(cache.Get("k"), v2);
    RequirePayload(ChunkedCache(backend, options).Get("k"), v2);
    CHECK(cache.Stats().corrupt_reads == 0);
  }
}

TEST_CASE("a Put whose manifest write was refused deletes its new chunks and keeps the old value") {
  const CacheOptions options{.chunk_size = kSmallChunk};
  const std::string v1 = Catalogue(0.05, 1), v2 = Catalogue(0.05, 2);
  auto memory = NewMemory();
  auto backend = std::make_shared<ManifestOutcomeBackend>(
      memory, absl::ResourceExhaustedError("OOM command not allowed"), /*apply=*/false);
  ChunkedCache cache(backend, options);
  REQUIRE(cache.Put("k", v1).ok());
  backend->TakeSets();
  backend->armed = true;
  CHECK(absl::IsResourceExhausted(cache.Put("k", v2)));
  backend->armed = false;
  RequirePayload(cache.Get("k"), v1);
  // Every chunk the refused Put wrote is gone again (nothing could refer to it).
  for (const auto& item : backend->TakeSets()) {
    if (item.key.back() == '}') continue;
    const std::string_view key = item.key;
    auto values = memory->MultiGet({&key, 1});
    REQUIRE(values.ok());
    CHECK_FALSE((*values)[0].has_value());
  }
}

// The stored item under `key`, which must be present.
std::string StoredItem(Backend& backend, std::string_view key) {
  auto values = backend.MultiGet({&key, 1});
  REQUIRE(values.ok());
  REQUIRE((*values)[0].has_value());
  return *(*values)[0];
}

// Issue 16 item 1: a Redis connection one reply behind answered Get("b") with key "a"'s manifest,
// and its inline payload was served as "b". Copying "a"'s manifest item to "b"'s manifest key
// gives a reader the same bytes: since format version 2 the manifest names (by hash) the key it
// was written under, and a reader refuses another key's entry.
TEST_CASE("an entry read under another key is a corrupt miss, never its bytes") {
  const CacheOptions options{.chunk_size = kSmallChunk};
  const std::string a_json = Catalogue(0.05, 1), b_json = Catalogue(0.05, 2);
  // The inline case is what the issue saw; a chunked manifest names chunk keys of its generation
  // under the key being read, which "b" does not have.
  for (const std::string& document : {std::string(R"({"doc":"a"})"), a_json}) {
    const bool is_inline = document.size() < 100;
    CAPTURE(is_inline);
    auto backend = NewMemory();
    ChunkedCache cache(backend, options);
    REQUIRE(cache.Put("a", document).ok());
    const internal::StoredKeys a(options.key_prefix, "a"), b(options.key_prefix, "b");
    REQUIRE(StoredManifest(*backend, options, "a").is_inline() == is_inline);
    Overwrite(*backend, b.manifest(), StoredItem(*backend, a.manifest()));

    const absl::StatusOr<Bytes> got = cache.Get("b");
    CHECK(absl::IsNotFound(got.status()));
    if (got.ok()) CHECK(**got != document);  // before: "a"'s document, as a hit for "b"
    CHECK(cache.Stats().corrupt_reads == 1);
    CHECK(absl::IsNotFound(cache.GetCompressed("b").status()));
    const absl::StatusOr<EntryInfo> info = cache.Inspect("b");
    CHECK(absl::IsDataLoss(info.status()));
    CHECK_THAT(std::string(info.status().message()), Catch::Contains("written under another key"));

    // The caller loads "b" and the load replaces the foreign manifest; "a" is untouched.
    int loads = 0;
    RequirePayload(cache.GetOrLoad("b",
                                   [&]() -> absl::StatusOr<std::string> {
                                     ++loads;
                                     return b_json;
                                   }),
                   b_json);
    CHECK(loads == 1);
    RequirePayload(cache.Get("b"), b_json);
    RequirePayload(cache.Get("a"), document);
  }
}

// A version-1 manifest as the previous release wrote it (docs/FORMAT.md, 64-byte header, no key
// hash), field by field.
std::string ManifestVersion1(const internal::Manifest& m, std::string_view inline_payload) {
  std::string out("CCMF\x01\x01", 6);
  out.push_back(m.is_inline() ? 1 : 0);
  out.push_back(0);
  auto append = [&out](std::uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
  };
  append(m.generation, 8);
  append(m.raw_size, 8);
  append(m.stored_size, 8);
  append(m.chunk_size, 4);
  append(m.chunk_count, 4);
  append(m.checksum, 8);
  append(static_cast<std::uint64_t>(m.created_unix_ms), 8);
  const std::string_view covered = out;
  append(internal::Checksum({&covered, 1}), 8);
  return out.append(inline_payload);
}

// Writes `json` under `key` as the previous release did: a version-1 manifest, inline or after
// its chunks of `chunk_size` bytes. Returns the manifest.
internal::Manifest PutVersion1(Backend& backend, const CacheOptions& options, std::string_view key,
                               std::string_view json, std::size_t chunk_size) {
  internal::Codec codec(3, 0);
  absl::StatusOr<internal::CompressedBuffer> compressed = codec.Compress(json);
  REQUIRE(compressed.ok());
  const std::string_view stored = compressed->view();
  internal::Manifest m;
  m.generation = 0x0ddba11cafe0001;
  m.raw_size = json.size();
  m.stored_size = stored.size();
  m.chunk_size = static_cast<std::uint32_t>(chunk_size);
  m.chunk_count = stored.size() + 64 <= chunk_size
                      ? 0
                      : static_cast<std::uint32_t>((stored.size() + chunk_size - 1) / chunk_size);
  m.checksum = internal::Checksum({&stored, 1});
  m.created_unix_ms = absl::ToUnixMillis(absl::Now());
  const internal::StoredKeys keys(options.key_prefix, key);
  for (std::uint32_t i = 0; i < m.chunk_count; ++i) {
    Overwrite(backend, keys.Chunk(m.generation, i), stored.substr(i * chunk_size, chunk_size));
  }
  Overwrite(backend, keys.manifest(), ManifestVersion1(m, m.is_inline() ? stored : ""));
  return m;
}

TEST_CASE("version 1 entries written by the previous release are still read") {
  const CacheOptions options{.chunk_size = kSmallChunk};
  auto backend = NewMemory();
  ChunkedCache cache(backend, options);
  const std::string chunked_json = Catalogue(0.1), inline_json = R"({"version":1})";
  const internal::Manifest chunked =
      PutVersion1(*backend, options, "chunked", chunked_json, kSmallChunk);
  REQUIRE(chunked.chunk_count > 2);
  REQUIRE(PutVersion1(*backend, options, "inline", inline_json, kSmallChunk).is_inline());

  RequirePayload(cache.Get("chunked"), chunked_json);
  RequirePayload(cache.Get("inline"), inline_json);
  for (const auto& [key, json] :
       {std::pair<std::string, std::string>{"chunked", chunked_json}, {"inline", inline_json}}) {
    CAPTURE(key);
    const absl::StatusOr<CompressedPayload> compressed = cache.GetCompressed(key);
    REQUIRE(compressed.ok());
    CHECK(compressed->raw_size == json.size());
    const absl::StatusOr<EntryInfo> info = cache.Inspect(key);
    REQUIRE(info.ok());
    CHECK(info->format_version == 1);
    CHECK(info->complete);
    CHECK(info->checksum_ok);
  }
  CHECK(cache.Inspect("chunked")->manifest_size == 64);
  CHECK(cache.Stats().corrupt_reads == 0);

  // The version-1 rules still hold: a lost chunk is a corrupt miss.
  const std::string lost =
      internal::StoredKeys(options.key_prefix, "chunked").Chunk(chunked.generation, 1);
  const std::string_view lost_key = lost;
  REQUIRE(backend->Delete({&lost_key, 1}).ok());
  CHECK(absl::IsNotFound(cache.Get("chunked").status()));
  CHECK(cache.Stats().corrupt_reads == 1);

  // A Put replaces it with a version-3 entry (and deletes the version-1 chunks it replaced).
  REQUIRE(cache.Put("inline", inline_json).ok());
  CHECK(cache.Inspect("inline")->format_version == 3);
  REQUIRE(cache.Put("chunked", chunked_json).ok());
  CHECK(cache.Inspect("chunked")->format_version == 3);
  RequirePayload(cache.Get("chunked"), chunked_json);
  CHECK(backend->Stats().items == 2 + StoredManifest(*backend, options, "chunked").chunk_count);
}

}  // namespace
}  // namespace chunkcache
