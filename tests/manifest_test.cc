#include "format/manifest.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "chunkcache/options.h"
#include "format/codec.h"
#include "zstd.h"

#define XXH_INLINE_ALL  // header-only: the test needs no link dependency on libxxhash
#include "xxhash.h"

namespace chunkcache::internal {
namespace {

constexpr std::size_t kMaxPayload = std::size_t{64} << 20;  // CacheOptions' default
constexpr std::uint32_t kMiB = 1 << 20;
constexpr std::size_t kNoItemLimit = ~std::uint32_t{0};  // no chunk size is refused as too large
// The backend key the manifests here are written under and read from (StoredKeys' layout).
constexpr std::string_view kKey = "cc:{catalogue}";

ManifestLimits Limits(std::size_t max_payload_size = kMaxPayload,
                      std::size_t max_chunk_size = kNoItemLimit) {
  return {.max_payload_size = max_payload_size, .max_chunk_size = max_chunk_size};
}

Manifest InlineManifest(std::string_view payload) {
  Manifest m;
  m.generation = 0x0123456789abcdef;
  m.raw_size = 1000;
  m.stored_size = payload.size();
  m.chunk_size = kMiB;
  m.chunk_count = 0;
  m.checksum = 0xfeedfacecafebeef;
  m.created_unix_ms = 1'700'000'000'000;
  return m;
}

Manifest ChunkedManifest() {
  Manifest m;
  m.generation = 0x1f2e3d4c5b6a7988;
  m.raw_size = 10 * kMiB;
  m.stored_size = 3 * std::uint64_t{kMiB} + 1;
  m.chunk_size = kMiB;
  m.chunk_count = 4;
  m.checksum = 0x8877665544332211;
  m.created_unix_ms = -1;  // signed: before the epoch must survive the round trip
  return m;
}

void CheckSameFields(const Manifest& a, const Manifest& b) {
  CHECK(a.generation == b.generation);
  CHECK(a.raw_size == b.raw_size);
  CHECK(a.stored_size == b.stored_size);
  CHECK(a.chunk_size == b.chunk_size);
  CHECK(a.chunk_count == b.chunk_count);
  CHECK(a.checksum == b.checksum);
  CHECK(a.created_unix_ms == b.created_unix_ms);
}

absl::StatusCode DecodeCode(std::string_view bytes, std::size_t max_payload_size = kMaxPayload,
                            std::size_t max_chunk_size = kNoItemLimit) {
  return DecodeManifest(bytes, kKey, Limits(max_payload_size, max_chunk_size)).status().code();
}

void StoreLE64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

std::uint64_t LoadLE64(std::string_view bytes, std::size_t offset) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

// Rewrites the header checksum after a deliberate edit, so that the check under test is the one
// that has to catch the edit: over bytes 0-55 at 56 (version 1), 0-63 at 64 (version 2).
void Reseal(std::string& bytes, int version = 2) {
  const std::size_t at = version == 1 ? 56 : 64;
  StoreLE64(bytes, at, XXH3_64bits(bytes.data(), at));
}

// Points a version-2 header at `stored_key` (and reseals it), as a writer for that key would have.
void Rebind(std::string& bytes, std::string_view stored_key) {
  StoreLE64(bytes, 56, XXH3_64bits(stored_key.data(), stored_key.size()));
  Reseal(bytes);
}

// A manifest as the previous release wrote it: format version 1, docs/FORMAT.md's 64-byte layout,
// built here field by field rather than by the encoder under test.
std::string EncodeVersion1(const Manifest& m, std::string_view inline_payload) {
  std::string out(64, '\0');
  out.replace(0, 4, "CCMF");
  out[4] = 1;  // format version
  out[5] = 1;  // codec: zstd
  out[6] = m.is_inline() ? 1 : 0;
  StoreLE64(out, 8, m.generation);
  StoreLE64(out, 16, m.raw_size);
  StoreLE64(out, 24, m.stored_size);
  StoreLE64(out, 32, m.chunk_size | (std::uint64_t{m.chunk_count} << 32));
  StoreLE64(out, 40, m.checksum);
  StoreLE64(out, 48, static_cast<std::uint64_t>(m.created_unix_ms));
  Reseal(out, 1);
  return out.append(inline_payload);
}

TEST_CASE("an inline manifest survives an encode/decode round trip") {
  const std::string payload = "\x28\xb5\x2f\xfd compressed bytes \x00 with a NUL";
  const Manifest m = InlineManifest(payload);
  const std::string bytes = EncodeManifest(m, kKey, payload);
  REQUIRE(bytes.size() == kManifestHeaderSize + payload.size());

  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 2);
  CheckSameFields(decoded->manifest, m);
  CHECK(decoded->manifest.is_inline());
  CHECK(decoded->inline_payload == payload);
  // The payload is a view into the decoded bytes, not a copy.
  CHECK(decoded->inline_payload.data() == bytes.data() + kManifestHeaderSize);
}

TEST_CASE("a chunked manifest survives an encode/decode round trip") {
  const Manifest m = ChunkedManifest();
  const std::string bytes = EncodeManifest(m, kKey, {});
  REQUIRE(bytes.size() == kManifestHeaderSize);

  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 2);
  CheckSameFields(decoded->manifest, m);
  CHECK_FALSE(decoded->manifest.is_inline());
  CHECK(decoded->inline_payload.empty());
}

TEST_CASE("extreme field values survive an encode/decode round trip") {
  Manifest m = ChunkedManifest();
  m.generation = ~std::uint64_t{0};
  m.checksum = ~std::uint64_t{0};
  m.created_unix_ms = INT64_MIN;
  m.raw_size = kMaxPayload;  // the limit itself is allowed
  m.stored_size = 1;
  m.chunk_size = ~std::uint32_t{0};
  m.chunk_count = 1;
  const absl::StatusOr<DecodedManifest> decoded =
      DecodeManifest(EncodeManifest(m, kKey, {}), kKey, Limits());
  REQUIRE(decoded.ok());
  CheckSameFields(decoded->manifest, m);
}

TEST_CASE("the encoded header follows the layout of docs/FORMAT.md") {
  const std::string payload = "xyz";
  const Manifest m = InlineManifest(payload);
  const std::string inline_bytes = EncodeManifest(m, kKey, payload);
  REQUIRE(inline_bytes.size() == 72 + payload.size());
  CHECK(inline_bytes.substr(0, 4) == "CCMF");
  CHECK(inline_bytes[4] == 2);  // format version
  CHECK(inline_bytes[5] == 1);  // codec: zstd
  CHECK(inline_bytes[6] == 1);  // flags: inline
  CHECK(inline_bytes[7] == 0);  // reserved
  CHECK(LoadLE64(inline_bytes, 8) == m.generation);
  CHECK(LoadLE64(inline_bytes, 16) == m.raw_size);
  CHECK(LoadLE64(inline_bytes, 24) == m.stored_size);
  CHECK((LoadLE64(inline_bytes, 32) & 0xffffffff) == m.chunk_size);
  CHECK((LoadLE64(inline_bytes, 32) >> 32) == m.chunk_count);
  CHECK(LoadLE64(inline_bytes, 40) == m.checksum);
  CHECK(LoadLE64(inline_bytes, 48) == static_cast<std::uint64_t>(m.created_unix_ms));
  CHECK(LoadLE64(inline_bytes, 56) == XXH3_64bits(kKey.data(), kKey.size()));  // key hash
  CHECK(LoadLE64(inline_bytes, 64) == XXH3_64bits(inline_bytes.data(), 64));
  CHECK(inline_bytes.substr(72) == payload);

  const std::string chunked_bytes = EncodeManifest(ChunkedManifest(), kKey, {});
  CHECK(chunked_bytes[6] == 0);  // flags: not inline
  CHECK((LoadLE64(chunked_bytes, 32) >> 32) == 4);
}

// Every byte of either version's header, the key hash included, is covered by its checksum:
// past the magic and the version byte, a flipped bit is caught as a checksum mismatch (not by a
// later check that a different edit could get past).
TEST_CASE("a flipped header byte is rejected") {
  const std::string payload(40, 'p');
  const Manifest inline_manifest = InlineManifest(payload), chunked = ChunkedManifest();
  const std::string originals[] = {
      EncodeManifest(inline_manifest, kKey, payload), EncodeManifest(chunked, kKey, {}),
      EncodeVersion1(inline_manifest, payload), EncodeVersion1(chunked, {})};
  for (const std::string& original : originals) {
    REQUIRE(DecodeManifest(original, kKey, Limits()).ok());
    const std::size_t header_size = original[4] == 1 ? 64 : 72;
    for (std::size_t offset = 0; offset < header_size; ++offset) {
      for (int mask = 1; mask < 256; ++mask) {
        std::string corrupt = original;
        corrupt[offset] = static_cast<char>(corrupt[offset] ^ mask);
        const absl::Status status = DecodeManifest(corrupt, kKey, Limits()).status();
        const bool by_checksum =
            offset <= 4 || absl::StrContains(status.message(), "header checksum mismatch");
        if (!absl::IsDataLoss(status) || !by_checksum) {
          // One failure per offset keeps the report readable.
          CAPTURE(offset, mask, original.size(), status.ToString());
          FAIL_CHECK("a corrupted manifest header was not rejected by its checksum");
          break;
        }
      }
    }
  }
}

TEST_CASE("a manifest shorter than its header is rejected") {
  const std::string payload(10, 'p');
  const std::string inline_bytes = EncodeManifest(InlineManifest(payload), kKey, payload);
  const std::string chunked_bytes = EncodeManifest(ChunkedManifest(), kKey, {});
  for (std::size_t length = 0; length < kManifestHeaderSize; ++length) {
    CAPTURE(length);
    CHECK(DecodeCode(std::string_view(inline_bytes).substr(0, length)) ==
          absl::StatusCode::kDataLoss);
    CHECK(DecodeCode(std::string_view(chunked_bytes).substr(0, length)) ==
          absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("a manifest claiming a raw size over max_payload_size is rejected") {
  Manifest m = ChunkedManifest();
  m.raw_size = std::uint64_t{1} << 40;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload) == absl::StatusCode::kDataLoss);

  m.raw_size = kMaxPayload + 1;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload) == absl::StatusCode::kDataLoss);
  m.raw_size = kMaxPayload;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload) == absl::StatusCode::kOk);
}

// Regression: with max_payload_size = SIZE_MAX, a raw size past ZSTD_MAX_INPUT_SIZE passed,
// because ZSTD_compressBound returns an error code (a huge number) for it.
TEST_CASE("a raw size no zstd frame can have is rejected even without a payload limit") {
  Manifest m = ChunkedManifest();
  for (const std::uint64_t raw_size : {~std::uint64_t{0}, ~std::uint64_t{0} - 1}) {
    CAPTURE(raw_size);
    m.raw_size = raw_size;
    CHECK(DecodeCode(EncodeManifest(m, kKey, {}), ~std::size_t{0}) == absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("a stored size of zero or beyond the compression bound is rejected") {
  Manifest m = ChunkedManifest();
  m.stored_size = 0;
  m.chunk_count = 0;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);

  m = ChunkedManifest();
  m.raw_size = 100;
  m.stored_size = 10 * kMiB;  // 100 bytes never compress to 10 MiB
  m.chunk_count = 10;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);
}

TEST_CASE("a chunk count inconsistent with stored size and chunk size is rejected") {
  Manifest m = ChunkedManifest();  // 3 MiB + 1 byte in 1 MiB chunks: 4 chunks
  REQUIRE(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
  for (const std::uint32_t count : {1u, 2u, 3u, 5u, 1000u, ~0u}) {
    CAPTURE(count);
    m.chunk_count = count;
    CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);
  }

  m = ChunkedManifest();
  m.stored_size = 3 * std::uint64_t{kMiB};  // exactly 3 full chunks
  m.chunk_count = 3;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
  m.chunk_count = 4;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);

  m = ChunkedManifest();
  m.chunk_size = 0;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);
}

TEST_CASE("an inline payload whose size differs from the stored size is rejected") {
  const std::string payload(100, 'p');
  const Manifest m = InlineManifest(payload);
  REQUIRE(DecodeCode(EncodeManifest(m, kKey, payload)) == absl::StatusCode::kOk);
  CHECK(DecodeCode(EncodeManifest(m, kKey, payload.substr(0, 99))) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, payload + "p")) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);
  // Cut off at every length between the header and the full payload.
  const std::string bytes = EncodeManifest(m, kKey, payload);
  for (std::size_t length = kManifestHeaderSize; length < bytes.size(); ++length) {
    CAPTURE(length);
    CHECK(DecodeCode(std::string_view(bytes).substr(0, length)) == absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("trailing bytes after a chunked manifest's header are rejected") {
  const Manifest m = ChunkedManifest();
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}) + "x") == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, std::string(1, '\0'))) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, std::string(1000, 'x'))) == absl::StatusCode::kDataLoss);
}

TEST_CASE("a well-sealed header with a bad magic, version or codec is rejected") {
  const std::string good = EncodeManifest(ChunkedManifest(), kKey, {});
  REQUIRE(DecodeCode(good) == absl::StatusCode::kOk);

  std::string bad_magic = good;
  bad_magic[3] = 'X';
  Reseal(bad_magic);
  CHECK(DecodeCode(bad_magic) == absl::StatusCode::kDataLoss);

  for (const int version : {0, 3, 255}) {
    std::string bad_version = good;
    bad_version[4] = static_cast<char>(version);
    Reseal(bad_version);
    CHECK(DecodeCode(bad_version) == absl::StatusCode::kDataLoss);
  }

  for (const int codec : {0, 2, 255}) {
    std::string bad_codec = good;
    bad_codec[5] = static_cast<char>(codec);
    Reseal(bad_codec);
    CHECK(DecodeCode(bad_codec) == absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("an inline flag that disagrees with the chunk count is rejected") {
  std::string chunked_marked_inline = EncodeManifest(ChunkedManifest(), kKey, {});
  chunked_marked_inline[6] = 1;
  Reseal(chunked_marked_inline);
  CHECK(DecodeCode(chunked_marked_inline) == absl::StatusCode::kDataLoss);

  const std::string payload(100, 'p');
  std::string inline_marked_chunked = EncodeManifest(InlineManifest(payload), kKey, payload);
  inline_marked_chunked[6] = 0;
  Reseal(inline_marked_chunked);
  CHECK(DecodeCode(inline_marked_chunked) == absl::StatusCode::kDataLoss);
}

// Issue 15 item 5: a chunk size no backend of this reader could have stored is refused before
// a reader asks for (or sizes a reply by) a single chunk.
TEST_CASE("a chunk size larger than the reader's item limit is rejected") {
  Manifest m = ChunkedManifest();  // 1 MiB chunks
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload, kMiB) == absl::StatusCode::kOk);
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload, kMiB - 1) ==
        absl::StatusCode::kDataLoss);

  // A lone chunk smaller than the limit does not help: the chunk size is what the writer used.
  m.chunk_size = 2 * kMiB;
  m.stored_size = 100'000;
  m.chunk_count = 1;
  const absl::StatusOr<DecodedManifest> decoded =
      DecodeManifest(EncodeManifest(m, kKey, {}), kKey, Limits(kMaxPayload, kMiB));
  REQUIRE(absl::IsDataLoss(decoded.status()));
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("chunk size 2097152 exceeds the item limit 1048576"));

  // The smallest item limit a cache accepts still admits the smallest chunks.
  m.chunk_size = kMinChunkSize;
  m.stored_size = 1000;
  m.chunk_count = 8;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload, kMinChunkSize) ==
        absl::StatusCode::kOk);
}

TEST_CASE("an inline manifest longer than the reader's item limit is rejected") {
  const std::string payload(1000, 'p');
  const std::string bytes = EncodeManifest(InlineManifest(payload), kKey, payload);
  CHECK(DecodeCode(bytes, kMaxPayload, bytes.size()) == absl::StatusCode::kOk);
  CHECK(DecodeCode(bytes, kMaxPayload, bytes.size() - 1) == absl::StatusCode::kDataLoss);
}

// FORMAT.md: flag bits other than bit 0 and the reserved byte are 0 in version 1. A reader that
// ignored them would read an entry whose writer meant something else by them.
TEST_CASE("unknown flag bits or a non-zero reserved byte are rejected") {
  const std::string payload(40, 'p');
  for (const std::string& good :
       {EncodeManifest(InlineManifest(payload), kKey, payload),
        EncodeManifest(ChunkedManifest(), kKey, {}),
        EncodeVersion1(InlineManifest(payload), payload), EncodeVersion1(ChunkedManifest(), {})}) {
    REQUIRE(DecodeCode(good) == absl::StatusCode::kOk);
    const int version = good[4];
    for (int bit = 1; bit < 8; ++bit) {
      CAPTURE(bit, version, good.size());
      std::string flagged = good;
      flagged[6] = static_cast<char>(flagged[6] | (1 << bit));
      Reseal(flagged, version);
      CHECK(DecodeCode(flagged) == absl::StatusCode::kDataLoss);
    }
    for (const int reserved : {1, 0x80, 0xff}) {
      CAPTURE(reserved, version, good.size());
      std::string marked = good;
      marked[7] = static_cast<char>(reserved);
      Reseal(marked, version);
      CHECK(DecodeCode(marked) == absl::StatusCode::kDataLoss);
    }
  }
}

// Issue 16 item 1: a Redis connection off by one reply served key "a"'s manifest, inline payload
// and all, for key "b". A version-2 manifest names (by hash) the key it was written under.
TEST_CASE("a manifest written under another key is rejected") {
  const std::string payload(40, 'p');
  for (const std::string& bytes : {EncodeManifest(InlineManifest(payload), kKey, payload),
                                   EncodeManifest(ChunkedManifest(), kKey, {})}) {
    REQUIRE(DecodeCode(bytes) == absl::StatusCode::kOk);
    // Another logical key, a prefix of it, another key_prefix, an extra byte, no key.
    for (const std::string_view other :
         {std::string_view("cc:{catalogue2}"), std::string_view("cc:{catalogu}"),
          std::string_view("cc2:{catalogue}"), std::string_view("cc:{catalogue}\0", 15),
          std::string_view()}) {
      CAPTURE(other, bytes.size());
      const absl::Status status = DecodeManifest(bytes, other, Limits()).status();
      CHECK(absl::IsDataLoss(status));
      CHECK_THAT(std::string(status.message()), Catch::Contains("written under another key"));
    }
    // What decides is the hash the header records: rebound, the same bytes are the other key's.
    std::string rebound = bytes;
    Rebind(rebound, "cc:{catalogue2}");
    CHECK(DecodeManifest(rebound, "cc:{catalogue2}", Limits()).ok());
    CHECK(DecodeCode(rebound) == absl::StatusCode::kDataLoss);
  }
}

// docs/FORMAT.md, "Versioning": every earlier version is still read. Version 1 records no key, so
// it is read under any key (unprotected until such entries expire, within ttl of an upgrade).
TEST_CASE("version-1 manifests written by the previous release are still decoded") {
  const std::string payload = "\x28\xb5\x2f\xfd an inline payload";
  const Manifest inline_manifest = InlineManifest(payload);
  const std::string inline_bytes = EncodeVersion1(inline_manifest, payload);
  REQUIRE(inline_bytes.size() == kManifestHeaderSizeV1 + payload.size());
  for (const std::string_view key : {kKey, std::string_view("cc:{another}")}) {
    CAPTURE(key);
    const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(inline_bytes, key, Limits());
    REQUIRE(decoded.ok());
    CHECK(decoded->version == 1);
    CheckSameFields(decoded->manifest, inline_manifest);
    CHECK(decoded->inline_payload == payload);
    CHECK(decoded->inline_payload.data() == inline_bytes.data() + kManifestHeaderSizeV1);
  }

  const Manifest chunked = ChunkedManifest();
  const std::string chunked_bytes = EncodeVersion1(chunked, {});
  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(chunked_bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 1);
  CheckSameFields(decoded->manifest, chunked);
  CHECK(decoded->inline_payload.empty());

  // Version 1's own lengths: 8 bytes more (a version-2 header's length) is not version 1.
  CHECK(DecodeCode(chunked_bytes + std::string(8, '\0')) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(inline_bytes + std::string(8, 'p')) == absl::StatusCode::kDataLoss);
  // The version byte decides the layout: a header relabelled and resealed as the other version
  // does not decode as either (so a damaged version byte cannot strip a key binding).
  for (const std::string& v1 : {inline_bytes, chunked_bytes}) {
    std::string as_v2 = v1;
    as_v2[4] = 2;
    if (as_v2.size() >= 72) Reseal(as_v2, 2);
    CHECK(DecodeCode(as_v2) == absl::StatusCode::kDataLoss);
  }
  for (const std::string& v2 :
       {EncodeManifest(inline_manifest, kKey, payload), EncodeManifest(chunked, kKey, {})}) {
    std::string as_v1 = v2;
    as_v1[4] = 1;
    Reseal(as_v1, 1);
    CHECK(DecodeCode(as_v1) == absl::StatusCode::kDataLoss);
  }
}

// The reader's bound stored size <= ZSTD_compressBound(raw size) must never refuse what a writer
// stored: writers compress into a buffer of exactly that bound, and incompressible input is
// zstd's worst case.
TEST_CASE("the writer's worst case is within the reader's stored-size bound") {
  std::uint64_t state = 0x9e3779b97f4a7c15;
  std::string random(std::size_t{1} << 20, '\0');
  for (char& c : random) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(state >> 56);
  }
  for (const int workers : {0, 2}) {
    Codec codec(/*compression_level=*/1, workers);
    for (const std::size_t size :
         {std::size_t{0}, std::size_t{1}, std::size_t{127}, std::size_t{128 << 10} - 1,
          std::size_t{128 << 10}, random.size()}) {
      CAPTURE(workers, size);
      absl::StatusOr<CompressedBuffer> stored =
          codec.Compress(std::string_view(random).substr(0, size));
      REQUIRE(stored.ok());
      Manifest m = ChunkedManifest();
      m.raw_size = size;
      m.stored_size = stored->size;
      m.chunk_size = kMinChunkSize;
      m.chunk_count =
          static_cast<std::uint32_t>((stored->size + kMinChunkSize - 1) / kMinChunkSize);
      CHECK(stored->size <= ZSTD_compressBound(size));
      CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
    }
  }
}

TEST_CASE("every chunk but the last has the chunk size and the last holds the rest") {
  Manifest m = ChunkedManifest();  // 3 MiB + 1 in 1 MiB chunks
  CHECK(m.ChunkSize(0) == kMiB);
  CHECK(m.ChunkSize(1) == kMiB);
  CHECK(m.ChunkSize(2) == kMiB);
  CHECK(m.ChunkSize(3) == 1);

  m.stored_size = 3 * std::uint64_t{kMiB};
  m.chunk_count = 3;
  CHECK(m.ChunkSize(0) == kMiB);
  CHECK(m.ChunkSize(2) == kMiB);  // a full last chunk

  m.stored_size = 500;
  m.chunk_size = 1024;
  m.chunk_count = 1;
  CHECK(m.ChunkSize(0) == 500);  // a lone chunk is the whole payload

  // Large sizes do not overflow: 5000 chunks of 4 GiB - 1 bytes, the last one 7 bytes.
  m.chunk_size = ~std::uint32_t{0};
  m.chunk_count = 5000;
  m.stored_size = std::uint64_t{m.chunk_size} * 4999 + 7;
  CHECK(m.ChunkSize(0) == m.chunk_size);
  CHECK(m.ChunkSize(4998) == m.chunk_size);
  CHECK(m.ChunkSize(4999) == 7);
}

TEST_CASE("chunk sizes add up to the stored size") {
  for (const std::uint64_t stored : {1ull, 127ull, 128ull, 129ull, 1000ull, 4096ull, 100'000ull}) {
    for (const std::uint32_t chunk : {128u, 129u, 1000u, 4096u}) {
      Manifest m;
      m.stored_size = stored;
      m.chunk_size = chunk;
      m.chunk_count = static_cast<std::uint32_t>((stored + chunk - 1) / chunk);
      std::uint64_t total = 0;
      for (std::uint32_t i = 0; i < m.chunk_count; ++i) {
        const std::size_t size = m.ChunkSize(i);
        CAPTURE(stored, chunk, i);
        CHECK(size >= 1);
        CHECK(size <= chunk);
        total += size;
      }
      CHECK(total == stored);
    }
  }
}

}  // namespace
}  // namespace chunkcache::internal
