#include "format/manifest.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

// docs/FORMAT.md's header sizes and offsets, written out here rather than taken from the code
// under test.
constexpr std::size_t kHeaderV1 = 64, kHeaderV2 = 72, kHeaderV3 = 80;
constexpr std::size_t kFrameEntry = 12;

ManifestLimits Limits(std::size_t max_payload_size = kMaxPayload,
                      std::size_t max_chunk_size = kNoItemLimit) {
  return {.max_payload_size = max_payload_size, .max_chunk_size = max_chunk_size};
}

std::uint64_t Xxh3(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// `m` cut into frames of `frame_size` raw bytes whose compressed sizes share m.stored_size evenly
// (the first ones take the remainder), with made-up frame checksums and the table checksum that
// goes with them: a version-3 manifest a writer could have written.
Manifest WithFrames(Manifest m, std::uint64_t frame_size) {
  m.frame_size = frame_size;
  const std::uint64_t count = (m.raw_size + frame_size - 1) / frame_size;
  m.frames.clear();
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t size = m.stored_size / count + (i < m.stored_size % count ? 1 : 0);
    m.frames.push_back({size, 0x5eed0000 + i * 0x9e3779b97f4a7c15});
  }
  m.checksum = FrameTableChecksum(m.frames);
  return m;
}

// One frame holding `payload` (its checksum the real one), inline.
Manifest InlineManifest(std::string_view payload) {
  Manifest m;
  m.generation = 0x0123456789abcdef;
  m.raw_size = 1000;
  m.stored_size = payload.size();
  m.chunk_size = kMiB;
  m.chunk_count = 0;
  m.created_unix_ms = 1'700'000'000'000;
  m.frame_size = m.raw_size;
  m.frames = {{payload.size(), Xxh3(payload)}};
  m.checksum = FrameTableChecksum(m.frames);
  return m;
}

// 10 MiB of JSON in frames of 2 MiB (5 frames), 3 MiB + 1 stored in 4 chunks of 1 MiB.
Manifest ChunkedManifest() {
  Manifest m;
  m.generation = 0x1f2e3d4c5b6a7988;
  m.raw_size = 10 * kMiB;
  m.stored_size = 3 * std::uint64_t{kMiB} + 1;
  m.chunk_size = kMiB;
  m.chunk_count = 4;
  m.created_unix_ms = -1;  // signed: before the epoch must survive the round trip
  return WithFrames(m, 2 * kMiB);
}

// The fields a version-1 or version-2 manifest records (one frame: `checksum` is the payload's).
Manifest OneFrame(Manifest m, std::uint64_t payload_checksum) {
  m.checksum = payload_checksum;
  m.frame_size = m.raw_size;
  m.frames = {{m.stored_size, payload_checksum}};
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
  CHECK(a.frame_size == b.frame_size);
  REQUIRE(a.frames.size() == b.frames.size());
  for (std::size_t i = 0; i < a.frames.size(); ++i) {
    CAPTURE(i);
    CHECK(a.frames[i].stored_size == b.frames[i].stored_size);
    CHECK(a.frames[i].checksum == b.frames[i].checksum);
  }
}

absl::Status DecodeStatus(std::string_view bytes, std::size_t max_payload_size = kMaxPayload,
                          std::size_t max_chunk_size = kNoItemLimit) {
  return DecodeManifest(bytes, kKey, Limits(max_payload_size, max_chunk_size)).status();
}

absl::StatusCode DecodeCode(std::string_view bytes, std::size_t max_payload_size = kMaxPayload,
                            std::size_t max_chunk_size = kNoItemLimit) {
  return DecodeStatus(bytes, max_payload_size, max_chunk_size).code();
}

// DataLoss whose message says `what`: the rule under test is the one that refused the bytes.
void CheckRefused(std::string_view bytes, std::string_view what,
                  std::size_t max_payload_size = kMaxPayload,
                  std::size_t max_chunk_size = kNoItemLimit) {
  const absl::Status status = DecodeStatus(bytes, max_payload_size, max_chunk_size);
  CAPTURE(status.ToString(), what);
  CHECK(absl::IsDataLoss(status));
  CHECK(absl::StrContains(status.message(), absl::string_view(what.data(), what.size())));
}

void StoreLE32(std::string& bytes, std::size_t offset, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

void StoreLE64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

std::uint32_t LoadLE32(std::string_view bytes, std::size_t offset) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value |= std::uint32_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

std::uint64_t LoadLE64(std::string_view bytes, std::size_t offset) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

std::size_t HeaderSizeOf(int version) {
  return version == 1 ? kHeaderV1 : version == 2 ? kHeaderV2 : kHeaderV3;
}

// Rewrites the header checksum after a deliberate edit, so that the check under test is the one
// that has to catch the edit: over bytes 0-55 at 56 (version 1), 0-63 at 64 (version 2), 0-71 at
// 72 (version 3).
void Reseal(std::string& bytes, int version = 3) {
  const std::size_t at = HeaderSizeOf(version) - 8;
  StoreLE64(bytes, at, XXH3_64bits(bytes.data(), at));
}

// Rewrites a version-3 manifest's table checksum (offset 40) for the table it holds (its frame
// count, offset 68, says how long), then reseals the header.
void RechecksumTable(std::string& bytes) {
  const std::size_t table = kFrameEntry * LoadLE32(bytes, 68);
  StoreLE64(bytes, 40, XXH3_64bits(bytes.data() + kHeaderV3, table));
  Reseal(bytes);
}

// Points a version-2 or 3 header at `stored_key` (and reseals it), as a writer for that key would
// have.
void Rebind(std::string& bytes, std::string_view stored_key, int version = 3) {
  StoreLE64(bytes, 56, Xxh3(stored_key));
  Reseal(bytes, version);
}

// Bytes 0-55 of every version: docs/FORMAT.md's table, field by field.
std::string CommonHeader(const Manifest& m, int version, std::size_t header_size) {
  std::string out(header_size, '\0');
  out.replace(0, 4, "CCMF");
  out[4] = static_cast<char>(version);
  out[5] = 1;  // codec: zstd
  out[6] = m.is_inline() ? 1 : 0;
  StoreLE64(out, 8, m.generation);
  StoreLE64(out, 16, m.raw_size);
  StoreLE64(out, 24, m.stored_size);
  StoreLE64(out, 32, m.chunk_size | (std::uint64_t{m.chunk_count} << 32));
  StoreLE64(out, 40, m.checksum);
  StoreLE64(out, 48, static_cast<std::uint64_t>(m.created_unix_ms));
  return out;
}

// A manifest as the release before last wrote it: format version 1, docs/FORMAT.md's 64-byte
// layout, built here field by field rather than by the encoder under test. `m.checksum` is the
// payload checksum.
std::string EncodeVersion1(const Manifest& m, std::string_view inline_payload) {
  std::string out = CommonHeader(m, 1, kHeaderV1);
  Reseal(out, 1);
  return out.append(inline_payload);
}

// A manifest as the previous release wrote it: format version 2, docs/FORMAT.md's 72-byte
// layout (version 1's fields, the key hash at 56, the header checksum at 64), built field by field.
std::string EncodeVersion2(const Manifest& m, std::string_view stored_key,
                           std::string_view inline_payload) {
  std::string out = CommonHeader(m, 2, kHeaderV2);
  Rebind(out, stored_key, 2);
  return out.append(inline_payload);
}

// Version-1 and version-2 fixtures: one frame, the payload checksum in the checksum field.
const std::string kV1Payload = "\x28\xb5\x2f\xfd an inline payload";
Manifest OldInline() { return OneFrame(InlineManifest(kV1Payload), Xxh3(kV1Payload)); }
Manifest OldChunked() { return OneFrame(ChunkedManifest(), 0x8877665544332211); }

TEST_CASE("an inline manifest survives an encode/decode round trip") {
  const std::string payload = "\x28\xb5\x2f\xfd compressed bytes \x00 with a NUL";
  const Manifest m = InlineManifest(payload);
  const std::string bytes = EncodeManifest(m, kKey, payload);
  REQUIRE(bytes.size() == kHeaderV3 + kFrameEntry + payload.size());

  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 3);
  CheckSameFields(decoded->manifest, m);
  CHECK(decoded->manifest.is_inline());
  CHECK(decoded->inline_payload == payload);
  // The payload is a view into the decoded bytes, after header and table, not a copy.
  CHECK(decoded->inline_payload.data() == bytes.data() + kHeaderV3 + kFrameEntry);
}

TEST_CASE("an inline manifest of many frames survives an encode/decode round trip") {
  const std::string payload(700, 'p');
  Manifest m = InlineManifest(payload);
  m.raw_size = 10'000;
  m = WithFrames(m, 1000);  // 10 frames of 70 compressed bytes
  REQUIRE(m.frames.size() == 10);
  const std::string bytes = EncodeManifest(m, kKey, payload);
  REQUIRE(bytes.size() == kHeaderV3 + 10 * kFrameEntry + payload.size());
  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 3);
  CheckSameFields(decoded->manifest, m);
  CHECK(decoded->inline_payload.data() == bytes.data() + kHeaderV3 + 10 * kFrameEntry);
  CHECK(decoded->inline_payload == payload);
}

TEST_CASE("a chunked manifest of many frames survives an encode/decode round trip") {
  const Manifest m = ChunkedManifest();
  REQUIRE(m.frames.size() == 5);
  const std::string bytes = EncodeManifest(m, kKey, {});
  REQUIRE(bytes.size() == ManifestSize(5));
  REQUIRE(ManifestSize(5) == kHeaderV3 + 5 * kFrameEntry);

  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 3);
  CheckSameFields(decoded->manifest, m);
  CHECK_FALSE(decoded->manifest.is_inline());
  CHECK(decoded->inline_payload.empty());
  // Every frame but the last holds frame_size raw bytes; the last the rest.
  CHECK(decoded->manifest.FrameRawSize(0) == 2 * kMiB);
  CHECK(decoded->manifest.FrameRawSize(4) == 2 * kMiB);

  // One frame of 1,000 frames, chunked.
  Manifest many = ChunkedManifest();
  many.raw_size = 1000 * std::uint64_t{kMiB} / 2;
  many = WithFrames(many, kMiB / 2);
  REQUIRE(many.frames.size() == 1000);
  const absl::StatusOr<DecodedManifest> again =
      DecodeManifest(EncodeManifest(many, kKey, {}), kKey, Limits(std::size_t{1} << 30));
  REQUIRE(again.ok());
  CheckSameFields(again->manifest, many);
}

TEST_CASE("extreme field values survive an encode/decode round trip") {
  Manifest m = ChunkedManifest();
  m.generation = ~std::uint64_t{0};
  m.created_unix_ms = INT64_MIN;
  m.raw_size = kMaxPayload;  // the limit itself is allowed
  m.stored_size = 1;
  m.chunk_size = ~std::uint32_t{0};
  m.chunk_count = 1;
  // A frame size larger than the payload: one frame (a reader does not check how F was chosen).
  m = WithFrames(m, ~std::uint32_t{0});
  m.frames[0].checksum = ~std::uint64_t{0};
  m.checksum = FrameTableChecksum(m.frames);
  const absl::StatusOr<DecodedManifest> decoded =
      DecodeManifest(EncodeManifest(m, kKey, {}), kKey, Limits());
  REQUIRE(decoded.ok());
  CheckSameFields(decoded->manifest, m);
  CHECK(decoded->manifest.FrameRawSize(0) == kMaxPayload);

  // One raw byte per frame.
  Manifest bytewise = ChunkedManifest();
  bytewise.raw_size = 300;
  bytewise.stored_size = 300 * 9;  // ZSTD_compressBound(1) is 65: 9 bytes a frame is fine
  bytewise.chunk_size = 128;
  bytewise.chunk_count = (300 * 9 + 127) / 128;
  bytewise = WithFrames(bytewise, 1);
  const absl::StatusOr<DecodedManifest> tiny =
      DecodeManifest(EncodeManifest(bytewise, kKey, {}), kKey, Limits());
  REQUIRE(tiny.ok());
  CheckSameFields(tiny->manifest, bytewise);
}

TEST_CASE("the frame table checksum is XXH3-64 of the table as stored") {
  const std::vector<Frame> frames = {{1, 2}, {0xfffffffe, 0x0102030405060708}};
  std::string table(2 * kFrameEntry, '\0');
  StoreLE32(table, 0, 1);
  StoreLE64(table, 4, 2);
  StoreLE32(table, 12, 0xfffffffe);
  StoreLE64(table, 16, 0x0102030405060708);
  CHECK(FrameTableChecksum(frames) == Xxh3(table));
  CHECK(FrameTableChecksum({}) == XXH3_64bits("", 0));
}

TEST_CASE("the encoded header follows the version-3 layout of docs/FORMAT.md") {
  const std::string payload = "xyz";
  Manifest m = InlineManifest(payload);
  m.raw_size = 2500;
  m.frame_size = 1000;
  m.frames = {{1, 0x1111111111111111}, {1, 0x2222222222222222}, {1, 0x3333333333333333}};
  m.checksum = FrameTableChecksum(m.frames);
  const std::string bytes = EncodeManifest(m, kKey, payload);
  REQUIRE(bytes.size() == 80 + 3 * 12 + payload.size());
  CHECK(bytes.substr(0, 4) == "CCMF");
  CHECK(bytes[4] == 3);  // format version
  CHECK(bytes[5] == 1);  // codec: zstd
  CHECK(bytes[6] == 1);  // flags: inline
  CHECK(bytes[7] == 0);  // reserved
  CHECK(LoadLE64(bytes, 8) == m.generation);
  CHECK(LoadLE64(bytes, 16) == 2500);  // raw size
  CHECK(LoadLE64(bytes, 24) == 3);     // stored size
  CHECK(LoadLE32(bytes, 32) == m.chunk_size);
  CHECK(LoadLE32(bytes, 36) == 0);                                             // chunk count
  CHECK(LoadLE64(bytes, 40) == Xxh3(std::string_view(bytes).substr(80, 36)));  // table checksum
  CHECK(LoadLE64(bytes, 48) == static_cast<std::uint64_t>(m.created_unix_ms));
  CHECK(LoadLE64(bytes, 56) == Xxh3(kKey));                     // key hash
  CHECK(LoadLE32(bytes, 64) == 1000);                           // frame size
  CHECK(LoadLE32(bytes, 68) == 3);                              // frame count
  CHECK(LoadLE64(bytes, 72) == XXH3_64bits(bytes.data(), 72));  // header checksum
  for (std::size_t j = 0; j < 3; ++j) {                         // the frame table
    CAPTURE(j);
    CHECK(LoadLE32(bytes, 80 + 12 * j) == 1);
    CHECK(LoadLE64(bytes, 84 + 12 * j) == 0x1111111111111111 * (j + 1));
  }
  CHECK(bytes.substr(116) == payload);

  const std::string chunked_bytes = EncodeManifest(ChunkedManifest(), kKey, {});
  CHECK(chunked_bytes[6] == 0);  // flags: not inline
  CHECK(LoadLE32(chunked_bytes, 36) == 4);
  CHECK(LoadLE32(chunked_bytes, 64) == 2 * kMiB);
  CHECK(LoadLE32(chunked_bytes, 68) == 5);
  CHECK(chunked_bytes.size() == 80 + 5 * 12);
}

// Every byte of any version's header, the key hash included, is covered by its checksum: past the
// magic and the version byte, a flipped bit is caught as a checksum mismatch (not by a later
// check that a different edit could get past).
TEST_CASE("a flipped header byte is rejected") {
  const std::string payload(40, 'p');
  const Manifest inline_manifest = InlineManifest(payload), chunked = ChunkedManifest();
  const std::string originals[] = {
      EncodeManifest(inline_manifest, kKey, payload), EncodeManifest(chunked, kKey, {}),
      EncodeVersion2(OldInline(), kKey, kV1Payload),  EncodeVersion2(OldChunked(), kKey, {}),
      EncodeVersion1(OldInline(), kV1Payload),        EncodeVersion1(OldChunked(), {})};
  for (const std::string& original : originals) {
    REQUIRE(DecodeManifest(original, kKey, Limits()).ok());
    const std::size_t header_size = HeaderSizeOf(original[4]);
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

// FORMAT.md "Reading" step 2, version 3: the table checksum matches bytes 80 to 80 + 12 m - 1.
TEST_CASE("a flipped frame table byte is rejected by the table checksum") {
  const std::string payload(40, 'p');
  for (const std::string& original : {EncodeManifest(InlineManifest(payload), kKey, payload),
                                      EncodeManifest(ChunkedManifest(), kKey, {})}) {
    REQUIRE(DecodeCode(original) == absl::StatusCode::kOk);
    const std::size_t table_end = kHeaderV3 + kFrameEntry * LoadLE32(original, 68);
    for (std::size_t offset = kHeaderV3; offset < table_end; ++offset) {
      for (const int mask : {0x01, 0x80, 0xff}) {
        CAPTURE(offset, mask, original.size());
        std::string corrupt = original;
        corrupt[offset] = static_cast<char>(corrupt[offset] ^ mask);
        CheckRefused(corrupt, "frame table checksum mismatch");
      }
    }
  }
  // A table checksum that is not the table's, in a well-sealed header.
  Manifest m = ChunkedManifest();
  m.checksum ^= 1;
  CheckRefused(EncodeManifest(m, kKey, {}), "frame table checksum mismatch");
}

TEST_CASE("a manifest shorter than its header is rejected") {
  const std::string payload(10, 'p');
  for (const std::string& bytes :
       {EncodeManifest(InlineManifest(payload), kKey, payload),
        EncodeManifest(ChunkedManifest(), kKey, {}), EncodeVersion2(OldChunked(), kKey, {}),
        EncodeVersion1(OldChunked(), {})}) {
    for (std::size_t length = 0; length < HeaderSizeOf(bytes[4]); ++length) {
      CAPTURE(length, int{bytes[4]});
      CHECK(DecodeCode(std::string_view(bytes).substr(0, length)) == absl::StatusCode::kDataLoss);
    }
  }
}

// FORMAT.md: "the manifest at least 80 + 12 m bytes long (check this before reading the table: m
// comes from stored bytes)".
TEST_CASE("a frame table longer than the manifest is rejected") {
  const std::string bytes = EncodeManifest(ChunkedManifest(), kKey, {});
  for (std::size_t length = kHeaderV3; length < bytes.size(); ++length) {
    CAPTURE(length);
    CheckRefused(std::string_view(bytes).substr(0, length), "cannot hold a table of 5 frames");
  }
  // A header alone claiming 2^32 - 1 frames (one raw byte each): refused before the table is read.
  Manifest m = ChunkedManifest();
  m.raw_size = ~std::uint32_t{0};
  m.frame_size = 1;
  m.frames = {};
  m.checksum = FrameTableChecksum({});
  std::string header_only = EncodeManifest(m, kKey, {});
  REQUIRE(header_only.size() == kHeaderV3);
  StoreLE32(header_only, 68, ~std::uint32_t{0});
  Reseal(header_only);
  CheckRefused(header_only, "cannot hold a table of 4294967295 frames", std::size_t{1} << 33);
  // An inline manifest whose table would run into its payload: the length rule catches it whatever
  // the payload.
  const std::string payload(100, 'p');
  std::string inline_bytes = EncodeManifest(InlineManifest(payload), kKey, payload);
  StoreLE64(inline_bytes, 16, 10 * 1000);  // 10 frames of 1000 raw bytes: 120 > 112 bytes
  StoreLE32(inline_bytes, 68, 10);
  Reseal(inline_bytes);
  CheckRefused(inline_bytes, "cannot hold a table of 10 frames");
}

TEST_CASE("a version-3 raw size of 0 is rejected") {
  Manifest m = ChunkedManifest();
  m.raw_size = 0;
  m.stored_size = 9;
  m.chunk_size = 128;
  m.chunk_count = 1;
  m.frame_size = 1;
  m.frames = {};
  m.checksum = FrameTableChecksum({});
  CheckRefused(EncodeManifest(m, kKey, {}), "raw size 0");
  // Inline, with one frame in the table: still refused.
  const std::string payload(9, 'p');
  Manifest one = InlineManifest(payload);
  one.raw_size = 0;
  CheckRefused(EncodeManifest(one, kKey, payload), "raw size 0");
}

TEST_CASE("a version-3 frame size of 0 is rejected") {
  const std::string payload(9, 'p');
  Manifest m = InlineManifest(payload);
  m.frame_size = 0;
  CheckRefused(EncodeManifest(m, kKey, payload), "frame size 0");
  Manifest chunked = ChunkedManifest();
  chunked.frame_size = 0;
  CheckRefused(EncodeManifest(chunked, kKey, {}), "frame size 0");
}

TEST_CASE("a version-3 frame count other than ceil(raw size / frame size) is rejected") {
  const Manifest good = ChunkedManifest();  // 10 MiB in frames of 2 MiB: 5
  REQUIRE(DecodeCode(EncodeManifest(good, kKey, {})) == absl::StatusCode::kOk);
  // The count field alone changed (the table as written).
  for (const std::uint32_t count : {0u, 4u, 6u, 1000u, ~0u}) {
    CAPTURE(count);
    std::string bytes = EncodeManifest(good, kKey, {});
    StoreLE32(bytes, 68, count);
    Reseal(bytes);
    CheckRefused(bytes, "does not match raw size");
  }
  // A table that really has one frame more or fewer, sealed: the count must follow the sizes.
  for (const int delta : {-1, 1}) {
    CAPTURE(delta);
    Manifest m = good;
    if (delta < 0) {
      m.frames.pop_back();
    } else {
      m.frames.push_back({1, 7});
    }
    m.checksum = FrameTableChecksum(m.frames);
    CheckRefused(EncodeManifest(m, kKey, {}), "does not match raw size");
  }
  // The frame size off by one either way: 10 MiB / (2 MiB - 1) needs 6 frames; 10 MiB / (2 MiB
  // + 1) still 5, which is fine.
  Manifest smaller = good;
  smaller.frame_size -= 1;
  CheckRefused(EncodeManifest(smaller, kKey, {}), "does not match raw size");
  Manifest larger = good;
  larger.frame_size += 1;
  CHECK(DecodeCode(EncodeManifest(larger, kKey, {})) == absl::StatusCode::kOk);
}

TEST_CASE("a version-3 frame of stored size 0 is rejected") {
  for (std::size_t zero = 0; zero < 5; ++zero) {
    CAPTURE(zero);
    Manifest m = ChunkedManifest();
    m.frames[(zero + 1) % 5].stored_size += m.frames[zero].stored_size;  // the sum stays
    m.frames[zero].stored_size = 0;
    m.checksum = FrameTableChecksum(m.frames);
    CheckRefused(EncodeManifest(m, kKey, {}), "impossible for raw size");
  }
}

TEST_CASE("a version-3 frame over the compression bound of its raw size is rejected") {
  // Frames of 100 raw bytes, the last of 10: bounds ZSTD_compressBound(100) and (10).
  const std::size_t bound = ZSTD_compressBound(100), last_bound = ZSTD_compressBound(10);
  REQUIRE(last_bound < bound);
  Manifest m = ChunkedManifest();
  m.raw_size = 310;
  m.frame_size = 100;
  m.chunk_size = 128;
  const auto encode = [&](std::vector<std::uint64_t> sizes) {
    m.frames.clear();
    m.stored_size = 0;
    for (const std::uint64_t size : sizes) {
      m.frames.push_back({size, size * 31});
      m.stored_size += size;
    }
    m.chunk_count = static_cast<std::uint32_t>((m.stored_size + 127) / 128);
    m.checksum = FrameTableChecksum(m.frames);
    return EncodeManifest(m, kKey, {});
  };
  CHECK(DecodeCode(encode({bound, bound, bound, last_bound})) == absl::StatusCode::kOk);
  CheckRefused(encode({bound + 1, bound, bound, last_bound}), "frame 0: stored size");
  CheckRefused(encode({bound, bound, bound + 1, last_bound}), "frame 2: stored size");
  // The last frame's bound is that of its own raw size, not of the frame size.
  CheckRefused(encode({bound, bound, bound, last_bound + 1}), "frame 3: stored size");
}

TEST_CASE("version-3 frame sizes that do not add up to the stored size are rejected") {
  for (const int delta : {-1, 1}) {
    CAPTURE(delta);
    Manifest m = ChunkedManifest();
    m.frames[2].stored_size += delta;
    m.checksum = FrameTableChecksum(m.frames);
    CheckRefused(EncodeManifest(m, kKey, {}), "frames add up to");
  }
  const std::string payload(50, 'p');
  Manifest m = InlineManifest(payload);
  m.stored_size = 49;  // the inline payload is 49 bytes; the frame says 50
  CheckRefused(EncodeManifest(m, kKey, payload.substr(1)), "frames add up to");
}

TEST_CASE("a manifest claiming a raw size over max_payload_size is rejected") {
  Manifest m = ChunkedManifest();
  m.raw_size = std::uint64_t{1} << 40;
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload) == absl::StatusCode::kDataLoss);

  m.raw_size = kMaxPayload + 1;
  CheckRefused(EncodeManifest(WithFrames(m, 32 * kMiB), kKey, {}), "exceeds max_payload_size",
               kMaxPayload);
  m.raw_size = kMaxPayload;
  CHECK(DecodeCode(EncodeManifest(WithFrames(m, 32 * kMiB), kKey, {}), kMaxPayload) ==
        absl::StatusCode::kOk);

  // Versions 1 and 2 as well.
  Manifest old = OldChunked();
  old.raw_size = kMaxPayload + 1;
  CheckRefused(EncodeVersion2(old, kKey, {}), "exceeds max_payload_size", kMaxPayload);
  CheckRefused(EncodeVersion1(old, {}), "exceeds max_payload_size", kMaxPayload);
}

// Regression: with max_payload_size = SIZE_MAX, a raw size past ZSTD_MAX_INPUT_SIZE passed,
// because ZSTD_compressBound returns an error code (a huge number) for it.
TEST_CASE("a raw size no zstd frame can have is rejected even without a payload limit") {
  for (const std::uint64_t raw_size : {~std::uint64_t{0}, ~std::uint64_t{0} - 1}) {
    CAPTURE(raw_size);
    Manifest m = OldChunked();
    m.raw_size = raw_size;
    CHECK(DecodeCode(EncodeVersion2(m, kKey, {}), ~std::size_t{0}) == absl::StatusCode::kDataLoss);
    CHECK(DecodeCode(EncodeVersion1(m, {}), ~std::size_t{0}) == absl::StatusCode::kDataLoss);
    // Version 3: frames of 2^32 - 1 bytes would need more than 2^32 - 1 of them; and a last frame
    // past zstd's limit has no bound.
    Manifest v3 = ChunkedManifest();
    v3.raw_size = raw_size;
    v3.frame_size = ~std::uint32_t{0};
    std::string bytes = EncodeManifest(v3, kKey, {});
    StoreLE32(bytes, 68, ~std::uint32_t{0});
    Reseal(bytes);
    CHECK(DecodeCode(bytes, ~std::size_t{0}) == absl::StatusCode::kDataLoss);
  }
}

// Versions 1 and 2: 0 < stored size <= ZSTD_compressBound(raw size) (version 3 checks each frame).
TEST_CASE("a version-1 or 2 stored size of zero or beyond the compression bound is rejected") {
  Manifest m = OldChunked();
  m.stored_size = 0;
  m.chunk_count = 0;
  CheckRefused(EncodeVersion2(m, kKey, {}), "impossible for raw size");
  CheckRefused(EncodeVersion1(m, {}), "impossible for raw size");

  m = OldChunked();
  m.raw_size = 100;
  m.stored_size = 10 * kMiB;  // 100 bytes never compress to 10 MiB
  m.chunk_count = 10;
  CheckRefused(EncodeVersion2(m, kKey, {}), "impossible for raw size");
  CheckRefused(EncodeVersion1(m, {}), "impossible for raw size");

  // The bound itself is fine, one more is not.
  m.stored_size = ZSTD_compressBound(100);
  m.chunk_size = 128;
  m.chunk_count = static_cast<std::uint32_t>((m.stored_size + 127) / 128);
  CHECK(DecodeCode(EncodeVersion2(m, kKey, {})) == absl::StatusCode::kOk);
  m.stored_size += 1;
  m.chunk_count = static_cast<std::uint32_t>((m.stored_size + 127) / 128);
  CheckRefused(EncodeVersion2(m, kKey, {}), "impossible for raw size");
}

TEST_CASE("a chunk count inconsistent with stored size and chunk size is rejected") {
  Manifest m = ChunkedManifest();  // 3 MiB + 1 byte in 1 MiB chunks: 4 chunks
  REQUIRE(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
  for (const std::uint32_t count : {1u, 2u, 3u, 5u, 1000u, ~0u}) {
    CAPTURE(count);
    m.chunk_count = count;
    CheckRefused(EncodeManifest(m, kKey, {}), "chunk count");
    Manifest old = OldChunked();
    old.chunk_count = count;
    CheckRefused(EncodeVersion2(old, kKey, {}), "chunk count");
    CheckRefused(EncodeVersion1(old, {}), "chunk count");
  }

  m = ChunkedManifest();
  m.stored_size = 3 * std::uint64_t{kMiB};  // exactly 3 full chunks
  m.chunk_count = 3;
  m = WithFrames(m, m.frame_size);
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
  m.chunk_count = 4;
  CheckRefused(EncodeManifest(m, kKey, {}), "chunk count");

  m = ChunkedManifest();
  m.chunk_size = 0;
  CheckRefused(EncodeManifest(m, kKey, {}), "below the minimum");
  m.chunk_size = kMinChunkSize - 1;
  CheckRefused(EncodeManifest(m, kKey, {}), "below the minimum");
}

// FORMAT.md: "inline: the manifest is exactly H + T + stored size bytes long".
TEST_CASE("an inline payload whose size differs from the stored size is rejected") {
  const std::string payload(100, 'p');
  const Manifest m = InlineManifest(payload);
  REQUIRE(DecodeCode(EncodeManifest(m, kKey, payload)) == absl::StatusCode::kOk);
  CHECK(DecodeCode(EncodeManifest(m, kKey, payload.substr(0, 99))) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, payload + "p")) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kDataLoss);
  // Cut off at every length between the table and the full payload.
  const std::string bytes = EncodeManifest(m, kKey, payload);
  for (std::size_t length = kHeaderV3 + kFrameEntry; length < bytes.size(); ++length) {
    CAPTURE(length);
    CheckRefused(std::string_view(bytes).substr(0, length), "inline payload size");
  }
  // The same for versions 1 and 2 (no table).
  for (const std::string& old :
       {EncodeVersion2(OldInline(), kKey, kV1Payload), EncodeVersion1(OldInline(), kV1Payload)}) {
    REQUIRE(DecodeCode(old) == absl::StatusCode::kOk);
    CheckRefused(old + "p", "inline payload size");
    CheckRefused(old.substr(0, old.size() - 1), "inline payload size");
  }
}

// FORMAT.md: "chunked: the manifest is exactly H + T bytes".
TEST_CASE("trailing bytes after a chunked manifest's frame table are rejected") {
  const Manifest m = ChunkedManifest();
  CheckRefused(EncodeManifest(m, kKey, {}) + "x", "trailing bytes");
  CheckRefused(EncodeManifest(m, kKey, std::string(1, '\0')), "trailing bytes");
  CheckRefused(EncodeManifest(m, kKey, std::string(12, 'x')), "trailing bytes");  // an entry more
  CheckRefused(EncodeManifest(m, kKey, std::string(1000, 'x')), "trailing bytes");
  CheckRefused(EncodeVersion2(OldChunked(), kKey, {}) + "x", "trailing bytes");
  CheckRefused(EncodeVersion1(OldChunked(), {}) + "x", "trailing bytes");
}

TEST_CASE("a well-sealed header with a bad magic, version or codec is rejected") {
  const std::string good = EncodeManifest(ChunkedManifest(), kKey, {});
  REQUIRE(DecodeCode(good) == absl::StatusCode::kOk);

  std::string bad_magic = good;
  bad_magic[3] = 'X';
  Reseal(bad_magic);
  CheckRefused(bad_magic, "bad magic");

  for (const int version : {0, 4, 255}) {
    std::string bad_version = good;
    bad_version[4] = static_cast<char>(version);
    Reseal(bad_version);
    CheckRefused(bad_version, "unsupported format version");
  }

  for (const int codec : {0, 2, 255}) {
    std::string bad_codec = good;
    bad_codec[5] = static_cast<char>(codec);
    Reseal(bad_codec);
    CheckRefused(bad_codec, "unknown codec");
  }
}

TEST_CASE("an inline flag that disagrees with the chunk count is rejected") {
  std::string chunked_marked_inline = EncodeManifest(ChunkedManifest(), kKey, {});
  chunked_marked_inline[6] = 1;
  Reseal(chunked_marked_inline);
  CheckRefused(chunked_marked_inline, "inline flag");

  const std::string payload(100, 'p');
  std::string inline_marked_chunked = EncodeManifest(InlineManifest(payload), kKey, payload);
  inline_marked_chunked[6] = 0;
  Reseal(inline_marked_chunked);
  CheckRefused(inline_marked_chunked, "inline flag");

  std::string old = EncodeVersion2(OldChunked(), kKey, {});
  old[6] = 1;
  Reseal(old, 2);
  CheckRefused(old, "inline flag");
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
  m = WithFrames(m, m.frame_size);
  const absl::StatusOr<DecodedManifest> decoded =
      DecodeManifest(EncodeManifest(m, kKey, {}), kKey, Limits(kMaxPayload, kMiB));
  REQUIRE(absl::IsDataLoss(decoded.status()));
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("chunk size 2097152 exceeds the item limit 1048576"));

  // The smallest item limit a cache accepts still admits the smallest chunks (and a manifest of
  // one frame fits in one).
  m.raw_size = 5000;
  m.chunk_size = kMinChunkSize;
  m.stored_size = 1000;
  m.chunk_count = 8;
  m = WithFrames(m, 5000);
  CHECK(DecodeCode(EncodeManifest(m, kKey, {}), kMaxPayload, kMinChunkSize) ==
        absl::StatusCode::kOk);
}

// FORMAT.md "Reading" step 2: inline and chunked, the manifest is at most max_item_size.
TEST_CASE("a manifest longer than the reader's item limit is rejected") {
  const std::string payload(1000, 'p');
  const std::string bytes = EncodeManifest(InlineManifest(payload), kKey, payload);
  CHECK(DecodeCode(bytes, kMaxPayload, bytes.size()) == absl::StatusCode::kOk);
  CheckRefused(bytes, "exceeds the item limit", kMaxPayload, bytes.size() - 1);

  // Chunked: the frame table alone makes it longer than an item of the reader's backend (no
  // writer for it lists more frames than one item holds).
  Manifest m = ChunkedManifest();
  m.raw_size = 78 * 1000;
  m.stored_size = 30'000;
  m.chunk_size = 1024;
  m.chunk_count = 30;
  m = WithFrames(m, 1000);  // 78 frames: 80 + 936 = 1016 bytes
  const std::string fits = EncodeManifest(m, kKey, {});
  REQUIRE(fits.size() == 1016);
  CHECK(DecodeCode(fits, kMaxPayload, 1024) == absl::StatusCode::kOk);
  m.raw_size = 80 * 1000;
  m = WithFrames(m, 1000);  // 80 frames: 1040 bytes
  const std::string too_long = EncodeManifest(m, kKey, {});
  REQUIRE(too_long.size() == 1040);
  CHECK(DecodeCode(too_long, kMaxPayload, 2048) == absl::StatusCode::kOk);
  CheckRefused(too_long, "a manifest of 1040 bytes exceeds the item limit 1024", kMaxPayload, 1024);

  // Versions 1 and 2, inline.
  const std::string v2 = EncodeVersion2(OldInline(), kKey, kV1Payload);
  CheckRefused(v2, "exceeds the item limit", kMaxPayload, v2.size() - 1);
  const std::string v1 = EncodeVersion1(OldInline(), kV1Payload);
  CheckRefused(v1, "exceeds the item limit", kMaxPayload, v1.size() - 1);
}

// FORMAT.md: flag bits other than bit 0 and the reserved byte are 0 in versions 1 to 3. A reader
// that ignored them would read an entry whose writer meant something else by them.
TEST_CASE("unknown flag bits or a non-zero reserved byte are rejected") {
  const std::string payload(40, 'p');
  for (const std::string& good :
       {EncodeManifest(InlineManifest(payload), kKey, payload),
        EncodeManifest(ChunkedManifest(), kKey, {}), EncodeVersion2(OldInline(), kKey, kV1Payload),
        EncodeVersion2(OldChunked(), kKey, {}), EncodeVersion1(OldInline(), kV1Payload),
        EncodeVersion1(OldChunked(), {})}) {
    REQUIRE(DecodeCode(good) == absl::StatusCode::kOk);
    const int version = good[4];
    for (int bit = 1; bit < 8; ++bit) {
      CAPTURE(bit, version, good.size());
      std::string flagged = good;
      flagged[6] = static_cast<char>(flagged[6] | (1 << bit));
      Reseal(flagged, version);
      CheckRefused(flagged, "unknown flag bits");
    }
    for (const int reserved : {1, 0x80, 0xff}) {
      CAPTURE(reserved, version, good.size());
      std::string marked = good;
      marked[7] = static_cast<char>(reserved);
      Reseal(marked, version);
      CheckRefused(marked, "non-zero reserved byte");
    }
  }
}

// Issue 16 item 1: a Redis connection off by one reply served key "a"'s manifest, inline payload
// and all, for key "b". Versions 2 and 3 name (by hash) the key they were written under.
TEST_CASE("a manifest written under another key is rejected") {
  const std::string payload(40, 'p');
  for (const std::string& bytes :
       {EncodeManifest(InlineManifest(payload), kKey, payload),
        EncodeManifest(ChunkedManifest(), kKey, {}), EncodeVersion2(OldInline(), kKey, kV1Payload),
        EncodeVersion2(OldChunked(), kKey, {})}) {
    REQUIRE(DecodeCode(bytes) == absl::StatusCode::kOk);
    const int version = bytes[4];
    // Another logical key, a prefix of it, another key_prefix, an extra byte, no key.
    for (const std::string_view other :
         {std::string_view("cc:{catalogue2}"), std::string_view("cc:{catalogu}"),
          std::string_view("cc2:{catalogue}"), std::string_view("cc:{catalogue}\0", 15),
          std::string_view()}) {
      CAPTURE(other, version, bytes.size());
      const absl::Status status = DecodeManifest(bytes, other, Limits()).status();
      CHECK(absl::IsDataLoss(status));
      CHECK_THAT(std::string(status.message()), Catch::Contains("written under another key"));
    }
    // What decides is the hash the header records: rebound, the same bytes are the other key's.
    std::string rebound = bytes;
    Rebind(rebound, "cc:{catalogue2}", version);
    CHECK(DecodeManifest(rebound, "cc:{catalogue2}", Limits()).ok());
    CHECK(DecodeCode(rebound) == absl::StatusCode::kDataLoss);
  }
}

// docs/FORMAT.md, "Versioning": every earlier version is still read, as one frame whose checksum
// is the payload checksum. Version 1 records no key, so it is read under any key (unprotected
// until such entries expire, within ttl of an upgrade).
TEST_CASE("version-1 manifests written by an earlier release are still decoded") {
  const Manifest inline_manifest = OldInline();
  const std::string inline_bytes = EncodeVersion1(inline_manifest, kV1Payload);
  REQUIRE(inline_bytes.size() == kManifestHeaderSizeV1 + kV1Payload.size());
  for (const std::string_view key : {kKey, std::string_view("cc:{another}")}) {
    CAPTURE(key);
    const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(inline_bytes, key, Limits());
    REQUIRE(decoded.ok());
    CHECK(decoded->version == 1);
    CheckSameFields(decoded->manifest, inline_manifest);
    CHECK(decoded->inline_payload == kV1Payload);
    CHECK(decoded->inline_payload.data() == inline_bytes.data() + kManifestHeaderSizeV1);
  }

  const Manifest chunked = OldChunked();
  const std::string chunked_bytes = EncodeVersion1(chunked, {});
  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(chunked_bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 1);
  CheckSameFields(decoded->manifest, chunked);  // one frame: frame size = raw size
  CHECK(decoded->inline_payload.empty());

  // Version 1's own lengths: 8 bytes more (a version-2 header's length) is not version 1.
  CHECK(DecodeCode(chunked_bytes + std::string(8, '\0')) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(inline_bytes + std::string(8, 'p')) == absl::StatusCode::kDataLoss);
}

TEST_CASE("version-2 manifests written by the previous release are still decoded") {
  const Manifest inline_manifest = OldInline();
  const std::string inline_bytes = EncodeVersion2(inline_manifest, kKey, kV1Payload);
  REQUIRE(inline_bytes.size() == kManifestHeaderSizeV2 + kV1Payload.size());
  const absl::StatusOr<DecodedManifest> decoded = DecodeManifest(inline_bytes, kKey, Limits());
  REQUIRE(decoded.ok());
  CHECK(decoded->version == 2);
  CheckSameFields(decoded->manifest, inline_manifest);
  CHECK(decoded->manifest.frames[0].checksum == Xxh3(kV1Payload));
  CHECK(decoded->manifest.FrameRawSize(0) == inline_manifest.raw_size);
  CHECK(decoded->inline_payload == kV1Payload);
  CHECK(decoded->inline_payload.data() == inline_bytes.data() + kManifestHeaderSizeV2);

  const Manifest chunked = OldChunked();
  const std::string chunked_bytes = EncodeVersion2(chunked, kKey, {});
  REQUIRE(chunked_bytes.size() == kManifestHeaderSizeV2);
  const absl::StatusOr<DecodedManifest> again = DecodeManifest(chunked_bytes, kKey, Limits());
  REQUIRE(again.ok());
  CHECK(again->version == 2);
  CheckSameFields(again->manifest, chunked);
  CHECK(again->inline_payload.empty());

  // Version 2's own lengths: a version-3 header's 8 bytes more, or a table entry, is not it.
  CHECK(DecodeCode(chunked_bytes + std::string(8, '\0')) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(chunked_bytes + std::string(12, '\0')) == absl::StatusCode::kDataLoss);
  CHECK(DecodeCode(inline_bytes + std::string(8, 'p')) == absl::StatusCode::kDataLoss);
}

// The version byte decides the layout: a header relabelled and resealed as another version does
// not decode as any (so a damaged version byte cannot strip a key binding or a frame table).
TEST_CASE("a manifest relabelled as another version is rejected") {
  const std::string v3_payload(40, 'p');
  const std::vector<std::string> all = {
      EncodeManifest(InlineManifest(v3_payload), kKey, v3_payload),
      EncodeManifest(ChunkedManifest(), kKey, {}),
      EncodeVersion2(OldInline(), kKey, kV1Payload),
      EncodeVersion2(OldChunked(), kKey, {}),
      EncodeVersion1(OldInline(), kV1Payload),
      EncodeVersion1(OldChunked(), {})};
  for (const std::string& original : all) {
    REQUIRE(DecodeCode(original) == absl::StatusCode::kOk);
    for (const int version : {1, 2, 3}) {
      if (version == original[4]) continue;
      CAPTURE(int{original[4]}, version, original.size());
      std::string relabelled = original;
      relabelled[4] = static_cast<char>(version);
      if (relabelled.size() >= HeaderSizeOf(version)) Reseal(relabelled, version);
      CHECK(DecodeCode(relabelled) == absl::StatusCode::kDataLoss);
    }
  }
}

// The reader's bound on each frame, stored size <= ZSTD_compressBound(its raw size), must never
// refuse what a writer stored: writers compress into a buffer of exactly that bound, and
// incompressible input is zstd's worst case.
TEST_CASE("the writer's worst case is within the reader's stored-size bound") {
  std::uint64_t state = 0x9e3779b97f4a7c15;
  std::string random(std::size_t{1} << 20, '\0');
  for (char& c : random) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(state >> 56);
  }
  for (const int workers : {0, 2}) {
    Codec codec(/*compression_level=*/1, workers);
    for (const std::size_t size : {std::size_t{1}, std::size_t{127}, std::size_t{128 << 10} - 1,
                                   std::size_t{128 << 10}, random.size()}) {
      CAPTURE(workers, size);
      const std::string_view raw = std::string_view(random).substr(0, size);
      absl::StatusOr<CompressedBuffer> stored = codec.Compress(raw);
      REQUIRE(stored.ok());
      CHECK(stored->size <= ZSTD_compressBound(size));
      Manifest m = ChunkedManifest();
      m.raw_size = size;
      m.stored_size = stored->size;
      m.chunk_size = kMinChunkSize;
      m.chunk_count =
          static_cast<std::uint32_t>((stored->size + kMinChunkSize - 1) / kMinChunkSize);
      m.frame_size = size;
      m.frames = {{stored->size, Xxh3(stored->view())}};
      m.checksum = FrameTableChecksum(m.frames);
      CHECK(DecodeCode(EncodeManifest(m, kKey, {})) == absl::StatusCode::kOk);
      CHECK(DecodeCode(EncodeVersion2(OneFrame(m, m.frames[0].checksum), kKey, {})) ==
            absl::StatusCode::kOk);

      // The same bytes in frames of 1000 (the last shorter), each compressed on its own.
      Manifest framed = m;
      framed.frame_size = 1000;
      framed.frames.clear();
      framed.stored_size = 0;
      for (std::size_t at = 0; at < size; at += 1000) {
        const std::string_view part = raw.substr(at, 1000);
        std::string out(ZSTD_compressBound(part.size()), '\0');
        absl::StatusOr<std::size_t> n = codec.CompressFrame(part, {out.data(), out.size()});
        REQUIRE(n.ok());
        CHECK(*n <= ZSTD_compressBound(part.size()));
        framed.frames.push_back({*n, Xxh3(std::string_view(out.data(), *n))});
        framed.stored_size += *n;
      }
      framed.chunk_count =
          static_cast<std::uint32_t>((framed.stored_size + kMinChunkSize - 1) / kMinChunkSize);
      framed.checksum = FrameTableChecksum(framed.frames);
      CHECK(DecodeCode(EncodeManifest(framed, kKey, {})) == absl::StatusCode::kOk);
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

TEST_CASE("every frame but the last has the frame size and the last holds the rest") {
  for (const std::uint64_t raw : {1ull, 999ull, 1000ull, 1001ull, 10'000ull, 10'001ull}) {
    for (const std::uint64_t frame : {1ull, 7ull, 1000ull, 4096ull}) {
      Manifest m;
      m.raw_size = raw;
      m.stored_size = 1;
      m = WithFrames(m, frame);
      std::uint64_t total = 0;
      for (std::size_t i = 0; i < m.frames.size(); ++i) {
        CAPTURE(raw, frame, i);
        const std::size_t size = m.FrameRawSize(i);
        CHECK(size >= 1);
        CHECK(size <= frame);
        if (i + 1 < m.frames.size()) CHECK(size == frame);
        total += size;
      }
      CHECK(total == raw);
    }
  }
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
