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
#include "../fuzz/fuzz_http_head.cc"
#include "../fuzz/fuzz_keys.cc"
#include "../fuzz/fuzz_manifest.cc"
#include "../fuzz/fuzz_read_path.cc"
#include "../fuzz/fuzz_redis_replies.cc"
#include "../fuzz/fuzz_seeds.cc"

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

// A 64-byte manifest header with the given fields (format 1, zstd), header checksum sealed.
std::string Header(std::uint64_t raw, std::uint64_t stored, std::uint32_t chunk_size,
                   std::uint32_t count) {
  internal::Manifest m;
  m.generation = 0x1234;
  m.raw_size = raw;
  m.stored_size = stored;
  m.chunk_size = chunk_size;
  m.chunk_count = count;
  return internal::EncodeManifest(m, count == 0 ? std::string(stored, 'x') : "");
}

TEST_CASE("fuzz_manifest replays every seed shape") {
  SetUp();
  ReplaySeeds("manifest", FuzzManifest);
}

TEST_CASE("fuzz_manifest: a decoder ignores reserved bits, and re-encoding clears them") {
  SetUp();
  std::string bytes = Header(100, 20, 1 << 20, 0);
  bytes[6] = static_cast<char>(bytes[6] | 0x80);
  bytes[7] = 0x5a;
  CHECK_NOTHROW(Run(FuzzManifest, bytes));  // resealed inside: decodes, round trip modulo bits
  CHECK_NOTHROW(Run(FuzzManifest, Header(0, 1, 1, 1)));
  CHECK_NOTHROW(Run(FuzzManifest, Header(~std::uint64_t{0}, 1, 1, 1)));
  CHECK_NOTHROW(Run(FuzzManifest, std::string(64, '\0')));
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

TEST_CASE("fuzz_http_head replays every seed shape") {
  SetUp();
  ReplaySeeds("http_head", FuzzHttpHead);
  for (const char* head : {"", " ", "\r\n", "GET  HTTP/1.1", "GET / HTTP/1.1\r\n\r\n",
                           "GET / HTTP/1.1\r\nA:\r\nB", "G / HTTP/\r\nx:y"}) {
    CHECK_NOTHROW(Run(FuzzHttpHead, head));
  }
}

}  // namespace
}  // namespace chunkcache::fuzz
