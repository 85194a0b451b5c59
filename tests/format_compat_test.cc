// Entries written by earlier releases still read (docs/FORMAT.md, "Versioning"). The entries of
// tests/testdata/format_v2/ were written in format version 2 by the `chunkcache` tool of the
// release before format version 3, over Redis, and dumped byte for byte (capture.py there says
// how): an inline document, a key with bytes that need escaping under another prefix, small and
// large chunked payloads (chunk sizes 256, 4096 and 16384) and the corpus documents. Each is
// loaded into a memory backend as it was stored and read with this release's ChunkedCache: Get,
// GetStream, GetCompressed, Inspect and the `chunkcache verify` rules. (Version 1 was written by
// a release no build is left of: tests/manifest_test.cc hand-encodes its manifests.)

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "simdjson.h"
#include "test_util.h"
#include "zstd.h"

#define XXH_INLINE_ALL  // header-only: no link dependency on libxxhash
#include "xxhash.h"

namespace chunkcache {
namespace {

const std::filesystem::path kDataDir = std::filesystem::path(CHUNKCACHE_TESTDATA_DIR) / "format_v2";

// Every entry capture.py wrote.
constexpr const char* kEntries[] = {"inline_doc",   "odd_key", "small_chunked",
                                    "citm_catalog", "twitter", "catalogue_300k"};

std::uint64_t Xxh3(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// One stored entry, as NAME.entry.json describes it.
struct StoredEntry {
  std::string name;
  std::string key_prefix;
  std::string key;  // the logical key
  std::uint64_t chunk_size = 0;
  std::uint64_t expected_size = 0;
  std::uint64_t expected_xxh3 = 0;
  std::string expected_source;  // "committed", "corpus:FILE" or "catalogue:MEGABYTES"
  std::string manifest_key;
  std::vector<std::pair<std::string, std::string>> items;  // backend key, value: as stored
  std::vector<std::string> chunk_keys;                     // in chunk order
};

std::string Base64(std::string_view text) {
  std::string out;
  REQUIRE(absl::Base64Unescape(absl::string_view(text.data(), text.size()), &out));
  return out;
}

StoredEntry LoadEntry(const std::string& name) {
  const std::filesystem::path path = kDataDir / (name + ".entry.json");
  INFO(path);
  REQUIRE(std::filesystem::exists(path));
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.load(path.string()).get(doc) == simdjson::SUCCESS);
  StoredEntry e;
  e.name = name;
  std::string_view text;
  REQUIRE(doc["key_prefix"].get(text) == simdjson::SUCCESS);
  e.key_prefix = std::string(text);
  REQUIRE(doc["key_base64"].get(text) == simdjson::SUCCESS);
  e.key = Base64(text);
  REQUIRE(doc["chunk_size"].get(e.chunk_size) == simdjson::SUCCESS);
  REQUIRE(doc["expected_size"].get(e.expected_size) == simdjson::SUCCESS);
  REQUIRE(doc["expected_xxh3"].get(text) == simdjson::SUCCESS);
  e.expected_xxh3 = std::stoull(std::string(text), nullptr, 16);
  REQUIRE(doc["expected_source"].get(text) == simdjson::SUCCESS);
  e.expected_source = std::string(text);
  simdjson::dom::array items;
  REQUIRE(doc["items"].get(items) == simdjson::SUCCESS);
  for (simdjson::dom::element item : items) {
    std::string_view key, value;
    REQUIRE(item["key"].get(key) == simdjson::SUCCESS);
    REQUIRE(item["value"].get(value) == simdjson::SUCCESS);
    e.items.emplace_back(std::string(key), Base64(value));
  }
  // The manifest key ends with the hash tag's "}"; chunk keys with ":i".
  std::vector<std::pair<std::uint32_t, std::string>> chunks;
  for (const auto& [key, value] : e.items) {
    if (key.back() == '}') {
      REQUIRE(e.manifest_key.empty());
      e.manifest_key = key;
    } else {
      chunks.emplace_back(std::stoul(key.substr(key.rfind(':') + 1)), key);
    }
  }
  REQUIRE_FALSE(e.manifest_key.empty());
  std::sort(chunks.begin(), chunks.end());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    REQUIRE(chunks[i].first == i);
    e.chunk_keys.push_back(chunks[i].second);
  }
  return e;
}

std::string& MutableValueOf(StoredEntry& e, std::string_view key) {
  for (auto& [k, v] : e.items) {
    if (k == key) return v;
  }
  FAIL("no stored item " << key);
  static std::string none;
  return none;
}

const std::string& ValueOf(const StoredEntry& e, std::string_view key) {
  return MutableValueOf(const_cast<StoredEntry&>(e), key);
}

// The stored payload as a version-2 reader takes it: the inline bytes after the 72-byte header,
// or the chunks in order.
std::string StoredPayload(const StoredEntry& e) {
  if (e.chunk_keys.empty()) return ValueOf(e, e.manifest_key).substr(72);
  std::string payload;
  for (const std::string& key : e.chunk_keys) payload += ValueOf(e, key);
  return payload;
}

// The JSON the entry was written from, if this machine has it: the committed file, the corpus
// file of ../shared/corpus, or the catalogue regenerated; always checked against the size and
// XXH3-64 recorded when the entry was written.
std::optional<std::string> ExpectedJson(const StoredEntry& e) {
  std::string json;
  if (e.expected_source == "committed") {
    json = testing::ReadFile(kDataDir / (e.name + ".expected.json"));
  } else if (e.expected_source.rfind("corpus:", 0) == 0) {
    const std::filesystem::path path =
        std::filesystem::path(CHUNKCACHE_SHARED_DIR) / "corpus" / e.expected_source.substr(7);
    if (!std::filesystem::exists(path)) return std::nullopt;
    json = testing::ReadFile(path);
  } else if (e.expected_source.rfind("catalogue:", 0) == 0) {
    json = testing::GenerateCatalogue({.megabytes = std::stod(e.expected_source.substr(10))});
  } else {
    FAIL("unknown expected_source " << e.expected_source);
  }
  REQUIRE(json.size() == e.expected_size);
  REQUIRE(Xxh3(json) == e.expected_xxh3);
  return json;
}

// What was read is the JSON the entry was written from: its size and XXH3-64 always, its bytes
// when this machine has them.
void CheckIsExpected(const StoredEntry& e, std::string_view got,
                     const std::optional<std::string>& expected) {
  CHECK(got.size() == e.expected_size);
  CHECK(Xxh3(got) == e.expected_xxh3);
  if (expected.has_value()) CHECK(got == *expected);
}

std::shared_ptr<MemoryBackend> BackendWith(const StoredEntry& e) {
  auto backend = NewMemoryBackend();
  std::vector<KeyValue> items;
  for (const auto& [key, value] : e.items) items.push_back({key, value});
  REQUIRE(backend->MultiSet(items, absl::Hours(1)).ok());
  return backend;
}

// `chunkcache verify KEY` (tools/chunkcache_cli.cc): Inspect, every chunk present with its size,
// checksum_ok, then Get. "ok", "corrupt" or "missing".
std::string Verify(ChunkedCache& cache, std::string_view key) {
  const absl::StatusOr<EntryInfo> info = cache.Inspect(key);
  if (absl::IsNotFound(info.status())) return "missing";
  if (absl::IsDataLoss(info.status())) return "corrupt";
  if (!info.ok()) return "error: " + info.status().ToString();
  for (const ChunkInfo& chunk : info->chunks) {
    if (chunk.actual_size != chunk.expected_size) return "corrupt";
  }
  if (!info->checksum_ok) return "corrupt";
  const CacheStats before = cache.Stats();
  const absl::StatusOr<Bytes> json = cache.Get(key);
  if (json.ok()) return "ok";
  if (!absl::IsNotFound(json.status())) return "error: " + json.status().ToString();
  return cache.Stats().corrupt_reads > before.corrupt_reads ? "corrupt" : "missing";
}

// GetStream's pieces, concatenated, and its status.
struct Streamed {
  absl::Status status;
  std::string bytes;
  std::size_t pieces = 0;
};

Streamed Stream(ChunkedCache& cache, std::string_view key) {
  Streamed out;
  out.status = cache.GetStream(key, [&](std::string_view piece) {
    out.bytes.append(piece);
    ++out.pieces;
    return absl::OkStatus();
  });
  return out;
}

TEST_CASE("entries the previous release wrote (format version 2) read as the JSON it stored") {
  const std::string name = GENERATE(from_range(std::begin(kEntries), std::end(kEntries)));
  const int decode_workers = GENERATE(0, 2);
  CAPTURE(name, decode_workers);
  const StoredEntry e = LoadEntry(name);
  const std::optional<std::string> expected = ExpectedJson(e);
  if (!expected.has_value()) WARN(e.expected_source << " is absent: checked by size and XXH3");
  const std::string& manifest = ValueOf(e, e.manifest_key);
  REQUIRE(manifest.size() >= 72);
  REQUIRE(manifest.substr(0, 5) == std::string_view("CCMF\x02", 5));  // as written: version 2

  // The reader's own options differ from the writer's (chunk size, frame size): reading does not
  // depend on them.
  ChunkedCache cache(BackendWith(e), {.key_prefix = e.key_prefix,
                                      .chunk_size = 128 << 10,
                                      .decode_workers = decode_workers,
                                      .frame_size = 64 << 10});

  const absl::StatusOr<Bytes> got = cache.Get(e.key);
  REQUIRE(got.ok());
  CheckIsExpected(e, **got, expected);

  const Streamed streamed = Stream(cache, e.key);
  REQUIRE(streamed.status.ok());
  CheckIsExpected(e, streamed.bytes, expected);
  CHECK(streamed.pieces == 1);  // one frame before version 3

  const absl::StatusOr<CompressedPayload> compressed = cache.GetCompressed(e.key);
  REQUIRE(compressed.ok());
  CHECK(compressed->raw_size == e.expected_size);
  CHECK(*compressed->zstd == StoredPayload(e));
  std::string decoded(e.expected_size, '\0');
  CHECK(ZSTD_decompress(decoded.data(), decoded.size(), compressed->zstd->data(),
                        compressed->zstd->size()) == e.expected_size);
  CheckIsExpected(e, decoded, expected);

  const absl::StatusOr<EntryInfo> info = cache.Inspect(e.key);
  REQUIRE(info.ok());
  CHECK(info->format_version == 2);
  CHECK(info->manifest_key == e.manifest_key);
  CHECK(info->manifest_size == manifest.size());
  CHECK(info->raw_size == e.expected_size);
  CHECK(info->stored_size == StoredPayload(e).size());
  CHECK(info->checksum == Xxh3(StoredPayload(e)));  // version 2: the payload's checksum
  CHECK(info->frame_count == 1);
  CHECK(info->frame_size == e.expected_size);
  CHECK(info->is_inline == e.chunk_keys.empty());
  CHECK(info->chunk_count == e.chunk_keys.size());
  if (!e.chunk_keys.empty()) CHECK(info->chunk_size == e.chunk_size);
  REQUIRE(info->chunks.size() == e.chunk_keys.size());
  for (std::size_t i = 0; i < info->chunks.size(); ++i) {
    CAPTURE(i);
    CHECK(info->chunks[i].key == e.chunk_keys[i]);
    CHECK(info->chunks[i].actual_size == ValueOf(e, e.chunk_keys[i]).size());
    CHECK(info->chunks[i].expected_size == ValueOf(e, e.chunk_keys[i]).size());
  }
  CHECK(info->complete);
  CHECK(info->checksum_ok);

  CHECK(Verify(cache, e.key) == "ok");
  CHECK(cache.Stats().corrupt_reads == 0);
}

TEST_CASE("this release's rewrite of a previous-release entry reads the same") {
  const std::string name = GENERATE(from_range(std::begin(kEntries), std::end(kEntries)));
  CAPTURE(name);
  const StoredEntry e = LoadEntry(name);
  auto backend = BackendWith(e);
  ChunkedCache cache(backend, {.key_prefix = e.key_prefix, .chunk_size = 4096});
  const absl::StatusOr<Bytes> old = cache.Get(e.key);
  REQUIRE(old.ok());
  REQUIRE(cache.Put(e.key, **old).ok());
  const absl::StatusOr<EntryInfo> info = cache.Inspect(e.key);
  REQUIRE(info.ok());
  CHECK(info->format_version == 3);
  CHECK(info->manifest_key == e.manifest_key);  // the same key layout
  const absl::StatusOr<Bytes> again = cache.Get(e.key);
  REQUIRE(again.ok());
  CHECK(**again == **old);
  CHECK(Verify(cache, e.key) == "ok");
}

// Version 2 binds an entry to its key: the same bytes under another key are refused.
TEST_CASE("a previous-release manifest copied under another key is a corrupt miss") {
  const StoredEntry e = LoadEntry("inline_doc");
  auto backend = BackendWith(e);
  ChunkedCache cache(backend, {.key_prefix = e.key_prefix});
  const std::string other_key = "cc:{doc2}";
  const KeyValue copy{other_key, ValueOf(e, e.manifest_key)};
  REQUIRE(backend->MultiSet({&copy, 1}, absl::Hours(1)).ok());
  CHECK(absl::IsNotFound(cache.Get("doc2").status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(absl::IsDataLoss(cache.Inspect("doc2").status()));
  CHECK(Verify(cache, "doc2") == "corrupt");
  CHECK(cache.Get("doc").ok());
}

// A reader never returns bytes that failed a check (FORMAT.md "Reading"): a damaged
// previous-release entry is a miss, counted as corrupt, by every read.
TEST_CASE("a byte flipped in a previous-release entry's stored payload is a corrupt miss") {
  const std::string name = GENERATE(from_range(std::begin(kEntries), std::end(kEntries)));
  CAPTURE(name);
  StoredEntry e = LoadEntry(name);
  // The middle chunk (or the middle of the inline payload), one bit of one byte.
  std::string& damaged = MutableValueOf(
      e, e.chunk_keys.empty() ? e.manifest_key : e.chunk_keys[e.chunk_keys.size() / 2]);
  const std::size_t at = e.chunk_keys.empty() ? 72 + (damaged.size() - 72) / 2 : damaged.size() / 2;
  damaged[at] = static_cast<char>(damaged[at] ^ 0x04);
  ChunkedCache cache(BackendWith(e), {.key_prefix = e.key_prefix});

  const absl::StatusOr<Bytes> got = cache.Get(e.key);
  CHECK(absl::IsNotFound(got.status()));
  CHECK(cache.Stats().corrupt_reads == 1);

  const Streamed streamed = Stream(cache, e.key);
  CHECK(absl::IsNotFound(streamed.status));
  CHECK(streamed.pieces == 0);  // one frame: verified before any byte goes out
  CHECK(cache.Stats().corrupt_reads == 2);

  CHECK(absl::IsNotFound(cache.GetCompressed(e.key).status()));
  CHECK(cache.Stats().corrupt_reads == 3);

  const absl::StatusOr<EntryInfo> info = cache.Inspect(e.key);
  REQUIRE(info.ok());
  CHECK(info->format_version == 2);
  CHECK(info->complete);           // every chunk there, of its size...
  CHECK_FALSE(info->checksum_ok);  // ...but not the bytes written
  CHECK(Verify(cache, e.key) == "corrupt");
}

TEST_CASE("a previous-release entry with a chunk missing or cut short is a corrupt miss") {
  const std::string name = GENERATE("small_chunked", "twitter", "catalogue_300k");
  const bool missing = GENERATE(true, false);
  CAPTURE(name, missing);
  StoredEntry e = LoadEntry(name);
  REQUIRE(e.chunk_keys.size() > 1);
  const std::string victim = e.chunk_keys[1];
  for (auto it = e.items.begin(); it != e.items.end(); ++it) {
    if (it->first != victim) continue;
    if (missing) {
      e.items.erase(it);
    } else {
      it->second.pop_back();
    }
    break;
  }
  ChunkedCache cache(BackendWith(e), {.key_prefix = e.key_prefix});
  CHECK(absl::IsNotFound(cache.Get(e.key).status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(absl::IsNotFound(Stream(cache, e.key).status));
  CHECK(absl::IsNotFound(cache.GetCompressed(e.key).status()));
  const absl::StatusOr<EntryInfo> info = cache.Inspect(e.key);
  REQUIRE(info.ok());
  CHECK_FALSE(info->complete);
  CHECK(info->chunks[1].actual_size.has_value() == !missing);
  CHECK(Verify(cache, e.key) == "corrupt");
}

TEST_CASE("a byte flipped in a previous-release manifest's header is a corrupt miss") {
  const std::string name = GENERATE("inline_doc", "twitter");
  CAPTURE(name);
  StoredEntry e = LoadEntry(name);
  std::string& manifest = MutableValueOf(e, e.manifest_key);
  manifest[20] = static_cast<char>(manifest[20] ^ 0x01);  // the raw size
  ChunkedCache cache(BackendWith(e), {.key_prefix = e.key_prefix});
  CHECK(absl::IsNotFound(cache.Get(e.key).status()));
  CHECK(cache.Stats().corrupt_reads == 1);
  CHECK(absl::IsNotFound(Stream(cache, e.key).status));
  const absl::StatusOr<EntryInfo> info = cache.Inspect(e.key);
  CHECK(absl::IsDataLoss(info.status()));
  CHECK_THAT(std::string(info.status().message()), Catch::Contains("header checksum"));
  CHECK(Verify(cache, e.key) == "corrupt");
}

}  // namespace
}  // namespace chunkcache
