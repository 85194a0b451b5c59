// Replays the fuzz targets' inputs without libFuzzer: every seed shape fuzz_seeds generates (real
// entries intact, truncated, flipped, missing a chunk, replaced while read, ...) and the
// reproducers of what fuzzing found, through exactly the code of fuzz/fuzz_*.cc (included here,
// with their libFuzzer entry points left out and a broken property thrown instead of aborting).
//
// The cases named "(fixed)" hold the reproducers of bugs fuzzing found; they fail if one returns.

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#define CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
#define CHUNKCACHE_FUZZ_FAIL(message)                                                      \
  throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                           std::string(message))

#include "../fuzz/fuzz_backend_url.cc"
#include "../fuzz/fuzz_exporters.cc"
#include "../fuzz/fuzz_keys.cc"
#include "../fuzz/fuzz_manifest.cc"
#include "../fuzz/fuzz_read_path.cc"
#include "../fuzz/fuzz_redis_replies.cc"
#include "../fuzz/fuzz_seeds.cc"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/memory_backend.h"

// Without a sanitizer runtime (whose malloc hooks the allocation meter uses), count the C++
// allocations here, so that the allocation bounds below are checked in every build. Replacing
// new(size) and delete(ptr) suffices: libstdc++'s array, nothrow and sized forms call them, and its
// aligned forms use neither (so they are consistently left out).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHUNKCACHE_SANITIZER_RUNTIME 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define CHUNKCACHE_SANITIZER_RUNTIME 1
#endif
#endif

#ifndef CHUNKCACHE_SANITIZER_RUNTIME
#include <malloc.h>

#include <new>

namespace {
const bool counting_allocator = (chunkcache::fuzz::AllocationMeter::UseCountingAllocator(), true);
}  // namespace

void* operator new(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  chunkcache::fuzz::AllocationMeter::CountAllocation(malloc_usable_size(p));
  return p;
}

void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  chunkcache::fuzz::AllocationMeter::CountRelease(malloc_usable_size(p));
  std::free(p);
}
#endif

namespace chunkcache::fuzz {
namespace {

using Target = int (*)(const std::uint8_t*, std::size_t);

// What LLVMFuzzerInitialize and scripts/fuzz would set up, for every property to be checked. Each
// case calls it first (ctest runs each case in a process of its own).
void SetUp() {
  unsetenv("CHUNKCACHE_FUZZ_TOLERATE");
  InitBackendUrl();  // MOMENTO_API_KEY
}

const Seeds& AllSeeds() {
  static const Seeds seeds = GenerateSeeds();
  return seeds;
}

void Run(Target target, std::string_view input) {
  target(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
}

void ReplaySeeds(const std::string& name, Target target) {
  const std::vector<std::string>& inputs = AllSeeds().at(name);
  REQUIRE_FALSE(inputs.empty());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(name, i);
    CHECK_NOTHROW(Run(target, inputs[i]));
  }
}

// A fuzz_read_path input: options byte, then the pieces.
std::string ReadPathBytes(std::uint8_t flags, const std::vector<std::string>& pieces) {
  return seeds::ReadPathInput(flags, pieces);
}

using seeds::AsVersion1;  // the same one-frame manifest as earlier releases wrote it (version 1)
using seeds::AsVersion2;  // (version 2)
using seeds::Header;  // a sealed one-frame manifest with the given sizes (and an inline payload),
                      // of "cc:{doc}"
using seeds::MakeEntry;  // an entry of frames and chunks of any size

TEST_CASE("fuzz_manifest replays every seed shape") {
  SetUp();
  ReplaySeeds("manifest", FuzzManifest);
}

TEST_CASE("fuzz_manifest: unknown flag bits and a non-zero reserved byte are refused") {
  SetUp();
  std::string bytes = Header(100, 20, 1 << 20, 0);
  bytes[6] = static_cast<char>(bytes[6] | 0x80);
  bytes[7] = 0x5a;
  CHECK_NOTHROW(Run(FuzzManifest, bytes));  // resealed inside: refused, or the property breaks
  manifest_target::Reseal(bytes);
  CHECK(absl::IsDataLoss(
      internal::DecodeManifest(bytes, manifest_target::kStoredKey, manifest_target::kCacheLimits)
          .status()));
  CHECK_NOTHROW(Run(FuzzManifest, Header(0, 1, 1, 1)));
  CHECK_NOTHROW(Run(FuzzManifest, Header(~std::uint64_t{0}, 1, 1, 1)));
  CHECK_NOTHROW(Run(FuzzManifest, std::string(64, '\0')));
  CHECK_NOTHROW(Run(FuzzManifest, std::string(72, '\0')));
  CHECK_NOTHROW(Run(FuzzManifest, std::string(80, '\0')));
  CHECK_NOTHROW(Run(FuzzManifest, std::string(92, '\0')));
  // Found by fuzz_manifest (a property of the target, not of the decoder): versions 1 and 2 read a
  // raw size of 0, which version 3 refuses; such an entry is not re-encoded.
  CHECK_NOTHROW(Run(FuzzManifest, AsVersion2(Header(0, 9, 1 << 20, 0))));
  CHECK_NOTHROW(Run(FuzzManifest, AsVersion1(Header(0, 9, 1 << 20, 0))));
  CHECK_NOTHROW(Run(FuzzManifest, ""));
}

TEST_CASE("fuzz_read_path replays every seed shape") {
  SetUp();
  ReplaySeeds("read_path", FuzzReadPath);
}

TEST_CASE("fuzz_read_path: scripted races and odd chunk sets end in a hit or a miss") {
  SetUp();
  // A manifest whose chunks are answered by the manifest's own bytes, and one read past the end.
  const std::string chunked = Header(1000, 300, 128, 3);
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(0, {chunked, chunked, chunked, chunked})));
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(3, {chunked, "", chunked, chunked, ""})));
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(7, {chunked, std::string(128, 'a'),
                                                    std::string(128, 'b'), std::string(44, 'c')})));
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(7, {Header(10, 20, 0, 0)})));
}

// A backend that answers only the manifest and counts the keys of the largest MultiGet.
class CountingBackend : public Backend {
 public:
  explicit CountingBackend(std::string manifest) : manifest_(std::move(manifest)) {}
  std::size_t max_item_size() const override { return std::size_t{1} << 20; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    largest = std::max(largest, keys.size());
    std::vector<std::optional<std::string>> values(keys.size());
    if (keys.size() == 1 && keys[0] == "cc:{doc}") values[0] = manifest_;
    return values;
  }
  absl::Status MultiSet(absl::Span<const KeyValue>, absl::Duration) override {
    return absl::UnimplementedError("read only");
  }
  absl::Status Delete(absl::Span<const std::string_view>) override {
    return absl::UnimplementedError("read only");
  }
  std::size_t largest = 0;

 private:
  std::string manifest_;
};

// Found by reading the read path for fuzz_read_path's allocation bound, confirmed by it: a 64-byte
// manifest claiming 512 Ki one-byte chunks (raw and stored size 512 KiB, under max_payload_size)
// passes DecodeManifest; the reader then builds 512 Ki chunk keys and asks the backend for all of
// them before it looks at one, ~120 bytes a chunk (4 Mi chunks: 510 MB held at once for a 4 MiB
// max_payload_size; with the default 64 MiB, ~8 GB). A reader should refuse a chunk size below
// kMinChunkSize (or a count the payload limit cannot need).
TEST_CASE(
    "fuzz_read_path: a manifest of tiny chunks does not make a read allocate per chunk (fixed)") {
  SetUp();
  const std::uint32_t count = 512 * 1024;
  const std::string manifest = Header(count, count, 1, count);
  // The same bytes through the same path: the allocation meter catches it in sanitizer builds.
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, {manifest})));
  // In every build: how many chunk keys one read asks for.
  auto backend = std::make_shared<CountingBackend>(manifest);
  ChunkedCache cache(backend, {.max_payload_size = read_path_target::kMaxPayload});
  CHECK(absl::IsNotFound(cache.Get("doc").status()));
  CHECK(backend->largest <= read_path_target::kMaxPayload / kMinChunkSize + 1);
}

// Forwards to `inner` and records what each MultiGet asked for.
class KeyCountingBackend : public Backend {
 public:
  explicit KeyCountingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::size_t max_item_size() const override { return inner_->max_item_size(); }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    std::size_t bytes = 0;
    for (const std::string_view key : keys) bytes += key.size();
    largest_request_key_bytes = std::max(largest_request_key_bytes, bytes);
    total_key_bytes += bytes;
    keys_asked += keys.size();
    return inner_->MultiGet(keys);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return inner_->MultiSet(items, ttl);
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    return inner_->Delete(keys);
  }

  std::size_t largest_request_key_bytes = 0;  // key bytes of the largest MultiGet
  std::size_t total_key_bytes = 0;            // over every MultiGet
  std::size_t keys_asked = 0;

 private:
  std::shared_ptr<Backend> inner_;
};

// How many bytes of keys one MultiGet of a read may carry: this test's reading of "the bytes of
// chunk keys one read requests are bounded" (issue 15 item 5). It should stay at or above the
// batch bound of src/chunked_cache.cc.
constexpr std::size_t kMaxKeyBytesPerRequest = std::size_t{1} << 20;

// Issue 15 item 5, as reported: "A 64-byte hostile manifest makes one Get allocate gigabytes."
// DecodeManifest asks for a chunk size of at least 128 and at most the backend's item size, so
// with the default max_payload_size of 64 MiB a manifest may claim 526,336 chunks of 128 bytes; a
// reader that builds every chunk key before it asks for one holds 526 K keys of ~3 KB under a
// 1,024-byte binary key: 1.6 GB (3.1 GB RSS and 7 s were measured). Want: a miss (corrupt: chunk 0
// is missing and the manifest did not change), in at most about max_payload_size of memory,
// asking for a bounded batch of keys at a time and stopping at the first batch with a missing
// chunk (so quickly, too). The meter sees C++ allocations in every build (the counting operator
// new above) and every malloc in sanitizer builds.
TEST_CASE(
    "fuzz_read_path: a 64-byte manifest claiming ~500 K chunks under a 1024-byte key is a miss "
    "in bounded memory") {
  SetUp();
  REQUIRE(AllocationMeter::Supported());
  const CacheOptions options;  // max_payload_size 64 MiB, chunk_size 1 MiB: as reported
  const std::string key = read_path_target::KeyFor(read_path_target::kLongKey);
  const internal::StoredKeys keys(options.key_prefix, key);
  const std::uint64_t stored = ZSTD_COMPRESSBOUND(options.max_payload_size);
  const std::uint32_t count = static_cast<std::uint32_t>((stored + 127) / 128);
  REQUIRE(count == 526'336);
  // Version 1 as reported (read under any key); versions 2 and 3 written for this key, as a reader
  // accepts them.
  const std::string bound = Header(options.max_payload_size, stored, 128, count, keys.manifest());
  REQUIRE(bound.size() == internal::ManifestSize(1));
  const std::string manifest = GENERATE_COPY(AsVersion1(bound), AsVersion2(bound), bound);
  CAPTURE(manifest.size());
  REQUIRE(keys.Chunk(0x1234, count - 1).size() > 3000);

  auto backend = std::make_shared<KeyCountingBackend>(NewMemoryBackend());
  const KeyValue item{keys.manifest(), manifest};
  REQUIRE(backend->MultiSet({&item, 1}, absl::Hours(1)).ok());
  ChunkedCache cache(backend, options);

  absl::StatusOr<Bytes> got;
  std::size_t peak = 0;
  const absl::Time start = absl::Now();
  {
    AllocationMeter meter;
    got = cache.Get(key);
    peak = meter.peak();
  }
  const absl::Duration took = absl::Now() - start;
  INFO("Get took " << absl::FormatDuration(took) << ", held " << peak << " bytes at once, asked "
                   << backend->keys_asked << " keys (" << backend->total_key_bytes
                   << " bytes; the largest request " << backend->largest_request_key_bytes << ")");
  CHECK(absl::IsNotFound(got.status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(backend->keys_asked > 2);  // past the manifest checks: chunk keys were asked for
  CHECK(peak <= options.max_payload_size + read_path_target::kFixedAllowance);
  CHECK(backend->largest_request_key_bytes <= kMaxKeyBytesPerRequest);
  // One batch of chunk keys (and the manifest, twice): the read stops at the first missing chunk.
  CHECK(backend->total_key_bytes <= kMaxKeyBytesPerRequest + 2 * keys.manifest().size());

  // The fuzz target's own bound, on the same shape at its 4 MiB max_payload_size: Get,
  // GetCompressed and Inspect (which may hold its result as well).
  const std::uint64_t small_stored = ZSTD_COMPRESSBOUND(read_path_target::kMaxPayload);
  std::string small =
      Header(read_path_target::kMaxPayload, small_stored, 128,
             static_cast<std::uint32_t>((small_stored + 127) / 128), keys.manifest());
  if (manifest.size() == internal::kManifestHeaderSizeV1) small = AsVersion1(small);
  if (manifest.size() == internal::kManifestHeaderSizeV2) small = AsVersion2(small);
  CHECK_NOTHROW(Run(FuzzReadPath,
                    ReadPathBytes(read_path_target::kKeyed | read_path_target::kLongKey, {small})));
}

// Issue 15 item 5, the manifest's part: "a stored entry's chunk size may not exceed what the
// reader's backend could have stored (max_item_size)". A 2 MiB chunk size under MemoryBackend's
// 1 MiB items is refused by DecodeManifest itself: a corrupt miss before any chunk is asked for.
TEST_CASE(
    "fuzz_read_path: a chunk size above the backend's max_item_size is a corrupt miss without "
    "a chunk read") {
  SetUp();
  const CacheOptions options;
  const internal::StoredKeys keys(options.key_prefix, "doc");
  auto backend = std::make_shared<KeyCountingBackend>(NewMemoryBackend());
  REQUIRE(backend->max_item_size() == std::size_t{1} << 20);
  const std::string manifest = Header(10 << 20, 3 << 20, 2 << 20, 2);
  REQUIRE(internal::DecodeManifest(manifest, keys.manifest(),
                                   {.max_payload_size = options.max_payload_size,
                                    .max_chunk_size = std::size_t{2} << 20})
              .ok());
  const absl::StatusOr<internal::DecodedManifest> refused = internal::DecodeManifest(
      manifest, keys.manifest(),
      {.max_payload_size = options.max_payload_size, .max_chunk_size = backend->max_item_size()});
  CHECK(absl::IsDataLoss(refused.status()));

  const KeyValue item{keys.manifest(), manifest};
  REQUIRE(backend->MultiSet({&item, 1}, absl::Hours(1)).ok());
  ChunkedCache cache(backend, options);
  CHECK(absl::IsNotFound(cache.Get("doc").status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(backend->keys_asked == 1);  // the manifest only
  const absl::StatusOr<EntryInfo> info = cache.Inspect("doc");
  CHECK(absl::IsDataLoss(info.status()));
  CHECK_THAT(std::string(info.status().message()), Catch::Contains("item limit"));

  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, {manifest})));
}

// FORMAT.md "Reading" step 5: each frame is exactly one zstd frame, "not a skippable frame". An
// 8-byte skippable frame (magic 50 2A 4D 18, no content) under a version-2 manifest of raw size 0
// got past the frame checks of src/codec.cc (ZSTD_getFrameContentSize reports 0 for it, and zstd
// decodes it to nothing): Get returned an empty payload as a hit. Found writing FORMAT.md's reader
// rules. Version 3 refuses a raw size of 0; a skippable frame as a frame of 1 raw byte is refused
// by the frame checks.
TEST_CASE("fuzz_read_path: a skippable frame is not a payload") {
  SetUp();
  const std::string skippable("\x50\x2a\x4d\x18\x00\x00\x00\x00", 8);
  const std::string_view payload = skippable;
  const internal::StoredKeys keys(CacheOptions().key_prefix, "doc");
  internal::Manifest m;
  m.generation = 0x1234;
  m.raw_size = GENERATE(0, 1);
  m.stored_size = skippable.size();
  m.chunk_size = 1 << 20;
  m.frame_size = 1;
  m.frames = {{skippable.size(), internal::Checksum({&payload, 1})}};
  m.checksum = internal::FrameTableChecksum(m.frames);
  const std::string v3 = internal::EncodeManifest(m, keys.manifest(), skippable);
  // Raw size 0: as version 2 wrote it (one frame of raw size 0 is version 2's to have).
  const std::string manifest = m.raw_size == 0 ? AsVersion2(v3) : v3;
  CAPTURE(m.raw_size, manifest.size());
  REQUIRE(internal::DecodeManifest(manifest, keys.manifest(),
                                   {.max_payload_size = 1 << 20, .max_chunk_size = 1 << 20})
              .ok());
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, {manifest})));

  auto backend = std::make_shared<KeyCountingBackend>(NewMemoryBackend());
  const KeyValue item{keys.manifest(), manifest};
  REQUIRE(backend->MultiSet({&item, 1}, absl::Hours(1)).ok());
  ChunkedCache cache(backend, {});
  const absl::StatusOr<Bytes> got = cache.Get("doc");
  CHECK(absl::IsNotFound(got.status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  std::size_t pieces = 0;
  const absl::Status streamed = cache.GetStream("doc", [&](std::string_view) {
    ++pieces;
    return absl::OkStatus();
  });
  CHECK(absl::IsNotFound(streamed));
  CHECK(pieces == 0);
  CHECK(absl::IsNotFound(cache.GetCompressed("doc").status()));
}

// Pieces of one stream, and its status.
struct StreamResult {
  absl::Status status;
  std::vector<std::string> pieces;
  std::string Joined() const {
    std::string out;
    for (const std::string& piece : pieces) out += piece;
    return out;
  }
};

StreamResult StreamOf(ChunkedCache& cache, std::string_view key) {
  StreamResult result;
  result.status = cache.GetStream(key, [&](std::string_view piece) {
    result.pieces.emplace_back(piece);
    return absl::OkStatus();
  });
  return result;
}

std::shared_ptr<Backend> StoreOf(const seeds::Entry& e) {
  auto backend = NewMemoryBackend();
  const internal::StoredKeys keys(CacheOptions().key_prefix, "doc");
  const std::uint64_t generation = seeds::LE64(e.manifest, 8);
  std::vector<std::string> chunk_keys;
  std::vector<KeyValue> items = {{keys.manifest(), e.manifest}};
  for (std::uint32_t i = 0; i < e.chunks.size(); ++i)
    chunk_keys.push_back(keys.Chunk(generation, i));
  for (std::uint32_t i = 0; i < e.chunks.size(); ++i) items.push_back({chunk_keys[i], e.chunks[i]});
  REQUIRE(backend->MultiSet(items, absl::Hours(1)).ok());
  return backend;
}

// GetStream (FORMAT.md "Reading frame by frame"): one piece per frame, each verified and decoded,
// in order; together, Get's payload. Frames of 300 raw bytes straddle chunks of 128 and 200.
TEST_CASE("fuzz_read_path: a stream of small frames straddling chunks is Get's payload") {
  SetUp();
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.002});
  const std::uint32_t chunk_size = GENERATE(0u, 128u, 200u);
  const seeds::Entry e = MakeEntry(json, 300, chunk_size);
  CAPTURE(chunk_size, e.chunks.size());
  REQUIRE(!e.manifest.empty());
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, seeds::PiecesOf(e))));
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(0, seeds::PiecesOf(e))));

  ChunkedCache cache(StoreOf(e), {});
  const absl::StatusOr<Bytes> got = cache.Get("doc");
  REQUIRE(got.ok());
  CHECK(**got == json);
  const StreamResult streamed = StreamOf(cache, "doc");
  REQUIRE(streamed.status.ok());
  CHECK(streamed.Joined() == json);
  REQUIRE(streamed.pieces.size() == (json.size() + 299) / 300);
  for (std::size_t j = 0; j + 1 < streamed.pieces.size(); ++j) {
    CHECK(streamed.pieces[j].size() == 300);
  }
  const absl::StatusOr<EntryInfo> info = cache.Inspect("doc");
  REQUIRE(info.ok());
  CHECK(info->format_version == 3);
  CHECK(info->frame_count == streamed.pieces.size());
  CHECK(info->checksum_ok);
}

// After some frames went out, a damaged later frame ends the stream with DataLoss (the caller
// drops what it got), counted as corrupt; Get of the same entry is a corrupt miss.
TEST_CASE("fuzz_read_path: a damaged last frame ends a stream with DataLoss after its pieces") {
  SetUp();
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.002});
  seeds::Entry e = MakeEntry(json, 300, 128);
  REQUIRE(e.chunks.size() > 3);
  e.chunks.back()[0] = static_cast<char>(e.chunks.back()[0] ^ 0x10);  // inside the last frame
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, seeds::PiecesOf(e))));
  CHECK_NOTHROW(Run(
      FuzzReadPath,
      ReadPathBytes(read_path_target::kKeyed | read_path_target::kRechecksum, seeds::PiecesOf(e))));

  ChunkedCache cache(StoreOf(e), {});
  const StreamResult streamed = StreamOf(cache, "doc");
  CHECK(absl::IsDataLoss(streamed.status));
  CHECK_FALSE(streamed.pieces.empty());
  CHECK(json.compare(0, streamed.Joined().size(), streamed.Joined()) == 0);  // verified frames
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(absl::IsNotFound(cache.Get("doc").status()));
  CHECK(cache.Stats().corrupt_reads == 2);
}

// FORMAT.md: "A reader does not check ... how the writer chose F", so one frame whose frame size
// field says 2^32 - 1 over a 2 KB payload reads. A stream holds one frame: the frame's raw size
// (here the payload's), never the frame size field's 4 GiB. Open (stream-frame-size-alloc, found
// by fuzz_read_path's GetStream bound): StreamingConsumer::Begin (src/cache/entry_reader.cc)
// allocates `new char[manifest.frame_size]`, 4 GiB for this 104-byte manifest (with
// max_payload_size 64 MiB, any manifest can ask for it); it should allocate
// manifest.FrameRawSize(0), the largest frame.
TEST_CASE("fuzz_read_path: a stream holds the frame's raw size, not the frame size field's") {
  SetUp();
  REQUIRE(AllocationMeter::Supported());
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.002});
  const std::uint32_t chunk_size = GENERATE(0u, 128u);
  const seeds::Entry e = MakeEntry(json, ~std::uint32_t{0}, chunk_size);
  CAPTURE(chunk_size);
  ChunkedCache cache(StoreOf(e), {});
  REQUIRE(cache.Get("doc").ok());
  std::size_t largest = 0;
  absl::Status status;
  std::size_t bytes = 0;
  {
    AllocationMeter meter;
    status = cache.GetStream("doc", [&](std::string_view piece) {
      bytes += piece.size();
      return absl::OkStatus();
    });
    largest = meter.largest();
  }
  CHECK(status.ok());
  CHECK(bytes == json.size());
  CHECK(largest <= std::size_t{1} << 20);
  CHECK_NOTHROW(Run(FuzzReadPath, ReadPathBytes(read_path_target::kKeyed, seeds::PiecesOf(e))));
}

TEST_CASE("fuzz_keys replays every seed shape") {
  SetUp();
  ReplaySeeds("keys", FuzzKeys);
  for (const char* key : {"%", "%25", "{", "%7B", " ", "%20", "\x7f", "\x80"}) {
    CHECK_NOTHROW(Run(FuzzKeys, seeds::KeysInput(key, "%", key, "%25", 1, 1)));
  }
}

TEST_CASE("fuzz_exporters replays every seed shape") {
  SetUp();
  ReplaySeeds("exporters", FuzzExporters);
}

// ToCloudWatchEmf copies dimension values (and names, and the namespace) into its JSON line byte
// for byte: a value that is not UTF-8 gives a line that is not JSON (simdjson: "The input is not
// valid UTF-8"), returned as OK. CloudWatch would drop or mangle the line. It should refuse such
// text (InvalidArgument) or escape it.
TEST_CASE(
    "fuzz_exporters: a non-UTF-8 EMF dimension value is refused, never a broken line (fixed)") {
  SetUp();
  CHECK_NOTHROW(
      Run(FuzzExporters, seeds::ExportersInput(0, "c", "ns", {}, {{"Service", "\xff"}}, 0, 1)));
  absl::StatusOr<std::string> line = ToCloudWatchEmf({}, {.dimensions = {{"Service", "\xc3("}}});
  CHECK(absl::IsInvalidArgument(line.status()));
}

TEST_CASE("fuzz_backend_url replays every seed shape") {
  SetUp();
  const std::vector<std::string>& inputs = AllSeeds().at("backend_url");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(inputs[i]);
    CHECK_NOTHROW(Run(FuzzBackendUrl, inputs[i]));
  }
}

// include/chunkcache/backend_url.h: "Errors name the scheme, never the rest of the URL (it may
// hold a password)". A momento+ URL whose host libcurl's URL parser refuses is quoted back in full
// — user info included — by NewMomentoBackend's endpoint message, which NewBackendFromUrl passes
// on: "... not "https://user:s3cr3t-PW-94e7a1@bad host"".
TEST_CASE("fuzz_backend_url: a momento+ URL's user info never appears in its error (fixed)") {
  SetUp();
  CHECK_NOTHROW(Run(FuzzBackendUrl, "momento+https://ho st%S/c"));
  absl::StatusOr<std::shared_ptr<Backend>> backend =
      NewBackendFromUrl("momento+https://user:hunter2@bad host/cache");
  CHECK(absl::IsInvalidArgument(backend.status()));
  CHECK(std::string(backend.status().message()).find("hunter2") == std::string::npos);
}

TEST_CASE("fuzz_redis_replies replays every seed shape") {
  SetUp();
  ReplaySeeds("redis_replies", FuzzRedisReplies);
}

// Found by fuzz_redis_replies (crash file oom-8e33167f68f347e309b624fa94ddc80aea76c9e2: a
// CLUSTER SLOTS reply after a MOVED, holding "*666666663"): hiredis 0.14 allocates an array
// reply's element pointers as soon as it has read its header, 8 bytes per claimed element, before
// any element arrives and before RedisBackend's reply budget sees the bytes: "*666666663\r\n"
// (12 bytes) answering an MGET made a 5.3 GB calloc. Fixed: RedisBackend's reader checks each
// array header against the command (an MGET of N keys: N elements) before hiredis allocates. The
// meter sees allocations only in sanitizer builds; redis_backend_test checks the status in all.
TEST_CASE(
    "fuzz_redis_replies: an array header claiming more than was asked allocates nothing "
    "(fixed)") {
  SetUp();
  if (!AllocationMeter::Supported()) WARN("no sanitizer runtime: the allocation is not measured");
  for (const char* reply : {"*666666663\r\n", "*100000\r\n", "*4\r\n*100000\r\n"}) {
    CAPTURE(reply);
    CHECK_NOTHROW(Run(FuzzRedisReplies, seeds::RedisInput(0x01, {"+PONG\r\n", reply})));
  }
  // In a slot map, after a MOVED turned the backend into a cluster client.
  CHECK_NOTHROW(Run(FuzzRedisReplies,
                    seeds::RedisInput(0x01, {"+PONG\r\n", "-MOVED 1 @S\r\n", "*666666663\r\n"})));
}

}  // namespace
}  // namespace chunkcache::fuzz
