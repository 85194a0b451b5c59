#include "format/codec.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <latch>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#define XXH_INLINE_ALL  // header-only: the reference checksum needs no link dependency
#include "xxhash.h"
#include "zstd.h"

namespace chunkcache::internal {
namespace {

using namespace std::string_literals;

// A JSON array of catalogue-like objects, about `approx_bytes` long. Words repeat (so it
// compresses like real JSON) and random ids keep it from compressing to nothing.
std::string MakeJson(std::size_t approx_bytes, std::uint32_t seed) {
  static constexpr std::string_view kWords[] = {"night", "river",  "episode", "season", "city",
                                                "ghost", "summer", "última",  "東京",   "🎬"};
  std::mt19937 rng(seed);
  std::string json = "[";
  for (int id = 0; json.size() < approx_bytes; ++id) {
    if (id > 0) json += ",";
    json +=
        "{\"id\":" + std::to_string(id) + ",\"ref\":\"" + std::to_string(rng()) + "\",\"title\":\"";
    for (int w = 0; w < 4; ++w) {
      if (w > 0) json += " ";
      json += kWords[rng() % std::size(kWords)];
    }
    json += "\",\"duration\":" + std::to_string(rng() % 7200) +
            ",\"free\":" + (rng() % 2 ? "true" : "false") + "}";
  }
  json += "]";
  return json;
}

std::vector<std::string_view> Split(std::string_view bytes, std::size_t part_size) {
  std::vector<std::string_view> parts;
  for (std::size_t i = 0; i < bytes.size(); i += part_size) {
    parts.push_back(bytes.substr(i, part_size));
  }
  return parts;
}

// Parts of random sizes from `min_part_size` to `max_part_size`, with empty parts mixed in.
std::vector<std::string_view> SplitRandomly(std::string_view bytes, std::size_t min_part_size,
                                            std::size_t max_part_size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> size(min_part_size, max_part_size);
  std::vector<std::string_view> parts;
  for (std::size_t i = 0; i < bytes.size();) {
    const std::size_t n = size(rng);
    parts.push_back(bytes.substr(i, n));
    i += n;
    if (i < bytes.size() && rng() % 4 == 0) parts.push_back({});
  }
  return parts;
}

std::string Compressed(Codec& codec, std::string_view raw) {
  absl::StatusOr<CompressedBuffer> frame = codec.Compress(raw);
  REQUIRE(frame.ok());
  return std::string(frame->view());
}

absl::StatusCode DecompressCode(Codec& codec, absl::Span<const std::string_view> parts,
                                std::size_t raw_size) {
  return codec.Decompress(parts, raw_size).status().code();
}

TEST_CASE("valid JSON documents are accepted") {
  Codec codec(3, 0);
  const std::vector<std::string> documents = {
      R"({"a":1,"b":[true,false,null],"c":{"d":"e"}})",
      "{}",
      "[]",
      "[1, 2.5, -3e10, \"x\", [], {}]",
      "0",
      "-1.5e3",
      R"("a string")",
      "true",
      "false",
      "null",
      " \n\t{\"padded\": \"with whitespace\"} \r\n",
      R"({"é":"日本語 😀","esc":"\u00e9\ud83d\ude00\n"})",
      MakeJson(100'000, 1),
  };
  for (const std::string& json : documents) {
    CAPTURE(json.substr(0, 80));
    const absl::Status status = codec.ValidateJson(json);
    CAPTURE(status.ToString());
    CHECK(status.ok());
  }
}

TEST_CASE("invalid JSON is rejected as an invalid argument") {
  Codec codec(3, 0);
  const std::string big = MakeJson(100'000, 2);
  const std::vector<std::string> documents = {
      "",                             // empty
      "   \n",                        // only whitespace
      R"({"a":1)",                    // truncated object
      "[1,2",                         // truncated array
      R"({"a":"unterminated)",        // truncated string
      big.substr(0, big.size() - 1),  // a large document missing its last byte
      R"({"a":1} x)",                 // trailing garbage
      "[1] [2]",                      // two documents
      "1 2",
      "{\"a\":1}\0"s,      // trailing NUL
      "\xff",              // bad UTF-8 alone
      "\"\xff\"",          // bad UTF-8 inside a string
      "\"\xc3\"",          // truncated UTF-8 sequence
      "\"\xed\xa0\x80\"",  // UTF-8-encoded surrogate
      "[1,]",              // trailing comma
      "{'a':1}",           // single quotes
      "nul",               // truncated literal
      "{\"a\" 1}",         // missing colon
  };
  for (const std::string& json : documents) {
    CAPTURE(json.substr(0, 80));
    CHECK(codec.ValidateJson(json).code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a compressed payload is one standard zstd frame recording its content size") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(200'000, 3);
  const std::string frame = Compressed(codec, raw);
  CHECK(frame.size() < raw.size());
  CHECK(ZSTD_getFrameContentSize(frame.data(), frame.size()) == raw.size());
  CHECK(ZSTD_findFrameCompressedSize(frame.data(), frame.size()) == frame.size());
  std::string decoded(raw.size(), '\0');
  CHECK(ZSTD_decompress(decoded.data(), decoded.size(), frame.data(), frame.size()) == raw.size());
  CHECK(decoded == raw);
}

TEST_CASE("a payload in one part round-trips") {
  for (const int level : {1, 3, 19, -5}) {
    Codec codec(level, 0);
    for (const std::string& raw : {MakeJson(10, 4), MakeJson(5'000, 5), MakeJson(300'000, 6),
                                   std::string("\"x\""), std::string(100'000, ' ') + "1"}) {
      CAPTURE(level, raw.size());
      const std::string frame = Compressed(codec, raw);
      const std::vector<std::string_view> parts = {frame};
      const absl::StatusOr<std::string> decoded = codec.Decompress(parts, raw.size());
      REQUIRE(decoded.ok());
      CHECK(*decoded == raw);
    }
  }
}

TEST_CASE("a payload compressed by zstd worker threads round-trips") {
  REQUIRE(CheckCompressionSettings(3, 2).ok());
  Codec codec(3, 2);
  const std::string raw = MakeJson(3'000'000, 7);
  const std::string frame = Compressed(codec, raw);
  CHECK(ZSTD_getFrameContentSize(frame.data(), frame.size()) == raw.size());
  const std::vector<std::string_view> parts = {frame};
  const absl::StatusOr<std::string> decoded = codec.Decompress(parts, raw.size());
  REQUIRE(decoded.ok());
  CHECK(*decoded == raw);
}

TEST_CASE("a payload split into parts of many sizes round-trips") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(400'000, 8);
  const std::string frame = Compressed(codec, raw);
  REQUIRE(frame.size() > 4096);
  // 32 and up: every part holds at least a whole zstd frame header (18 bytes at most).
  for (const std::size_t part_size :
       {std::size_t{32}, std::size_t{100}, std::size_t{128}, std::size_t{1000}, std::size_t{4096},
        frame.size() / 2, frame.size() - 1, frame.size()}) {
    CAPTURE(part_size);
    const std::vector<std::string_view> parts = Split(frame, part_size);
    const absl::StatusOr<std::string> decoded = codec.Decompress(parts, raw.size());
    REQUIRE(decoded.ok());
    CHECK(*decoded == raw);
  }
}

TEST_CASE("a payload split into parts of random sizes, some empty, round-trips") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(100'000, 9);
  const std::string frame = Compressed(codec, raw);
  for (std::uint32_t seed = 0; seed < 20; ++seed) {
    CAPTURE(seed);
    // The first part holds the whole frame header; see the next test for shorter ones.
    std::vector<std::string_view> parts = {std::string_view(frame).substr(0, 32)};
    const std::vector<std::string_view> rest =
        SplitRandomly(std::string_view(frame).substr(32), 1, 700, seed);
    parts.insert(parts.end(), rest.begin(), rest.end());
    std::size_t covered = 0;
    for (const std::string_view part : parts) covered += part.size();
    REQUIRE(covered == frame.size());
    const absl::StatusOr<std::string> decoded = codec.Decompress(parts, raw.size());
    REQUIRE(decoded.ok());
    CHECK(*decoded == raw);
  }
}

// Regression: the declared content size was read from parts[0] alone, rejecting a valid frame
// whose header straddles parts.
TEST_CASE("a payload split into parts shorter than a frame header round-trips") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(20'000, 10);
  const std::string frame = Compressed(codec, raw);
  for (const std::size_t part_size : {1, 2, 3, 4, 5, 6}) {
    CAPTURE(part_size);
    const absl::StatusOr<std::string> decoded =
        codec.Decompress(Split(frame, part_size), raw.size());
    CAPTURE(decoded.status().ToString());
    CHECK(decoded.ok());
    if (decoded.ok()) CHECK(*decoded == raw);
  }
  const std::vector<std::string_view> empty_first = {{}, frame};
  const absl::StatusOr<std::string> decoded = codec.Decompress(empty_first, raw.size());
  CHECK(decoded.ok());
  if (decoded.ok()) CHECK(*decoded == raw);
}

TEST_CASE("decompressing with a raw size other than the frame's is data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(50'000, 11);
  const std::string frame = Compressed(codec, raw);
  const std::vector<std::string_view> one_part = {frame};
  const std::vector<std::string_view> many_parts = Split(frame, 100);
  for (const std::size_t raw_size : {std::size_t{0}, std::size_t{1}, raw.size() - 1, raw.size() + 1,
                                     raw.size() * 2, std::size_t{1} << 30}) {
    CAPTURE(raw_size);
    CHECK(DecompressCode(codec, one_part, raw_size) == absl::StatusCode::kDataLoss);
    CHECK(DecompressCode(codec, many_parts, raw_size) == absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("a truncated frame is data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(50'000, 12);
  const std::string frame = Compressed(codec, raw);
  for (const std::size_t length : {std::size_t{1}, std::size_t{4}, std::size_t{10},
                                   frame.size() / 2, frame.size() - 3, frame.size() - 1}) {
    CAPTURE(length);
    const std::string_view truncated = std::string_view(frame).substr(0, length);
    const std::vector<std::string_view> one_part = {truncated};
    CHECK(DecompressCode(codec, one_part, raw.size()) == absl::StatusCode::kDataLoss);
    if (length > 32) {
      CHECK(DecompressCode(codec, Split(truncated, 32), raw.size()) == absl::StatusCode::kDataLoss);
    }
  }
}

TEST_CASE("two concatenated frames are data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(20'000, 13);
  const std::string frame = Compressed(codec, raw);
  const std::string twice = frame + frame;
  const std::vector<std::string_view> one_part = {twice};
  const std::vector<std::string_view> two_parts = {frame, frame};
  CHECK(DecompressCode(codec, one_part, raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, two_parts, raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, Split(twice, 64), raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, Split(twice, 1000), raw.size()) == absl::StatusCode::kDataLoss);
  // The second frame starting inside the last part of the first one.
  const std::vector<std::string_view> straddling = {
      std::string_view(twice).substr(0, frame.size() - 10),
      std::string_view(twice).substr(frame.size() - 10)};
  CHECK(DecompressCode(codec, straddling, raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, one_part, 2 * raw.size()) == absl::StatusCode::kDataLoss);
  // Trailing bytes that are not a frame at all.
  const std::string trailing_garbage = frame + "garbage";
  const std::vector<std::string_view> with_garbage = {trailing_garbage};
  CHECK(DecompressCode(codec, with_garbage, raw.size()) == absl::StatusCode::kDataLoss);
  const std::vector<std::string_view> garbage_part = {frame, "garbage"};
  CHECK(DecompressCode(codec, garbage_part, raw.size()) == absl::StatusCode::kDataLoss);
}

TEST_CASE("garbage bytes are data loss") {
  Codec codec(3, 0);
  std::mt19937 rng(14);
  std::string random(5000, '\0');
  for (char& c : random) c = static_cast<char>(rng());
  std::string magic_then_random = "\x28\xb5\x2f\xfd" + random;
  const std::vector<std::string> garbage = {"hello", std::string(100, '\0'), random,
                                            magic_then_random, R"({"not":"compressed"})"};
  for (const std::string& bytes : garbage) {
    CAPTURE(bytes.size());
    for (const std::size_t raw_size : {std::size_t{5}, std::size_t{1000}, std::size_t{100'000}}) {
      const std::vector<std::string_view> one_part = {bytes};
      CHECK(DecompressCode(codec, one_part, raw_size) == absl::StatusCode::kDataLoss);
      CHECK(DecompressCode(codec, Split(bytes, 64), raw_size) == absl::StatusCode::kDataLoss);
    }
  }
  // A real frame with its body scrambled.
  const std::string raw = MakeJson(50'000, 15);
  std::string frame = Compressed(codec, raw);
  for (std::size_t i = 32; i < frame.size(); i += 7) frame[i] = static_cast<char>(frame[i] ^ 0x5a);
  const std::vector<std::string_view> scrambled = {frame};
  CHECK(DecompressCode(codec, scrambled, raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, Split(frame, 512), raw.size()) == absl::StatusCode::kDataLoss);
}

TEST_CASE("no parts, or an empty payload, is data loss") {
  Codec codec(3, 0);
  CHECK(DecompressCode(codec, {}, 10) == absl::StatusCode::kDataLoss);
  const std::vector<std::string_view> empty = {""};
  CHECK(DecompressCode(codec, empty, 10) == absl::StatusCode::kDataLoss);
  const std::vector<std::string_view> empties = {"", "", ""};
  CHECK(DecompressCode(codec, empties, 10) == absl::StatusCode::kDataLoss);
}

TEST_CASE("a payload with a part dropped is data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(100'000, 16);
  const std::string frame = Compressed(codec, raw);
  const std::vector<std::string_view> parts = Split(frame, 1024);
  REQUIRE(parts.size() > 4);
  for (std::size_t dropped = 0; dropped < parts.size(); ++dropped) {
    CAPTURE(dropped, parts.size());
    std::vector<std::string_view> remaining = parts;
    remaining.erase(remaining.begin() + static_cast<std::ptrdiff_t>(dropped));
    CHECK(DecompressCode(codec, remaining, raw.size()) == absl::StatusCode::kDataLoss);
  }
  // Parts swapped rather than dropped.
  std::vector<std::string_view> swapped = parts;
  std::swap(swapped[1], swapped[2]);
  CHECK(DecompressCode(codec, swapped, raw.size()) == absl::StatusCode::kDataLoss);
}

// `raw` as one zstd frame whose header does not declare its content size.
std::string FrameWithoutContentSize(const std::string& raw) {
  ZSTD_CCtx* const cctx = ZSTD_createCCtx();
  REQUIRE(cctx != nullptr);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  std::string frame(ZSTD_compressBound(raw.size()), '\0');
  const std::size_t size = ZSTD_compress2(cctx, frame.data(), frame.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(cctx);
  REQUIRE_FALSE(ZSTD_isError(size));
  frame.resize(size);
  return frame;
}

TEST_CASE("a frame without a declared content size is data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(20'000, 17);
  const std::string frame = FrameWithoutContentSize(raw);
  REQUIRE(ZSTD_getFrameContentSize(frame.data(), frame.size()) == ZSTD_CONTENTSIZE_UNKNOWN);

  const std::vector<std::string_view> one_part = {frame};
  CHECK(DecompressCode(codec, one_part, raw.size()) == absl::StatusCode::kDataLoss);
  CHECK(DecompressCode(codec, Split(frame, 64), raw.size()) == absl::StatusCode::kDataLoss);
}

// Regression: zstd's content-size sentinels (2^64 - 1, 2^64 - 2) once matched a raw size equal
// to them, and Decompress tried to allocate that much.
TEST_CASE("a raw size equal to a zstd sentinel never makes Decompress allocate it") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(1'000, 18);
  const std::string frame = FrameWithoutContentSize(raw);

  const std::string garbage = "not a zstd frame at all";
  const std::vector<std::string_view> unknown_size = {frame};
  const std::vector<std::string_view> not_a_frame = {garbage};
  absl::StatusOr<std::string> result = absl::UnknownError("not run");
  CHECK_NOTHROW(result = codec.Decompress(unknown_size, ZSTD_CONTENTSIZE_UNKNOWN));
  CHECK(result.status().code() == absl::StatusCode::kDataLoss);
  result = absl::UnknownError("not run");
  CHECK_NOTHROW(result = codec.Decompress(not_a_frame, ZSTD_CONTENTSIZE_ERROR));
  CHECK(result.status().code() == absl::StatusCode::kDataLoss);
}

// ---- Frames (docs/FORMAT.md "Payload": independent zstd frames) ------------------------------

// `raw` compressed by CompressFrame into a buffer of exactly ZSTD_compressBound(raw.size()).
std::string CompressedFrame(Codec& codec, std::string_view raw) {
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  const absl::StatusOr<std::size_t> size = codec.CompressFrame(raw, {out.data(), out.size()});
  REQUIRE(size.ok());
  out.resize(*size);
  return out;
}

absl::StatusCode DecodeFrameCode(Codec& codec, absl::Span<const std::string_view> parts,
                                 std::size_t raw_size) {
  std::string out(raw_size, '\0');
  return codec.DecodeFrame(parts, {out.data(), out.size()}).code();
}

TEST_CASE("frames compressed one by one concatenate into one zstd stream of the payload") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(100'000, 20);
  std::string stream;
  std::vector<std::string> frames;
  for (std::size_t at = 0; at < raw.size(); at += 30'000) {
    const std::string_view part = std::string_view(raw).substr(at, 30'000);
    frames.push_back(CompressedFrame(codec, part));
    const std::string& frame = frames.back();
    // One standard frame each: magic, declared content size, exactly its own bytes.
    CHECK(frame.substr(0, 4) == "\x28\xb5\x2f\xfd");
    CHECK(ZSTD_getFrameContentSize(frame.data(), frame.size()) == part.size());
    CHECK(ZSTD_findFrameCompressedSize(frame.data(), frame.size()) == frame.size());
    CHECK(frame.size() <= ZSTD_compressBound(part.size()));
    stream += frame;
  }
  REQUIRE(frames.size() == 4);
  // What `zstd -d` and an HTTP client decoding Content-Encoding: zstd do with the whole payload.
  std::string decoded(raw.size(), '\0');
  CHECK(ZSTD_decompress(decoded.data(), decoded.size(), stream.data(), stream.size()) ==
        raw.size());
  CHECK(decoded == raw);
  // Each frame decodes without the others, into its place.
  std::string assembled(raw.size(), '\0');
  for (std::size_t i = 0; i < frames.size(); ++i) {
    CAPTURE(i);
    const std::size_t size = std::min<std::size_t>(30'000, raw.size() - 30'000 * i);
    const std::vector<std::string_view> parts = {frames[i]};
    CHECK(codec.DecodeFrame(parts, {assembled.data() + 30'000 * i, size}).ok());
  }
  CHECK(assembled == raw);
}

TEST_CASE("CompressFrame into a buffer smaller than it needs fails without writing past it") {
  Codec codec(3, 0);
  std::mt19937 rng(21);
  std::string random(10'000, '\0');
  for (char& c : random) c = static_cast<char>(rng());  // incompressible: needs the full bound
  std::string buffer(ZSTD_compressBound(random.size()) + 64, '\x5a');
  const std::size_t room = random.size() / 2;
  const absl::StatusOr<std::size_t> size = codec.CompressFrame(random, {buffer.data(), room});
  CHECK_FALSE(size.ok());
  CHECK(buffer.substr(room) == std::string(buffer.size() - room, '\x5a'));
  // The bound is always enough, on the calling thread or zstd's workers.
  Codec workers(3, 2);
  for (Codec* c : {&codec, &workers}) {
    for (const bool use_workers : {false, true}) {
      const absl::StatusOr<std::size_t> fits =
          c->CompressFrame(random, {buffer.data(), ZSTD_compressBound(random.size())}, use_workers);
      REQUIRE(fits.ok());
      CHECK(*fits <= ZSTD_compressBound(random.size()));
    }
  }
}

TEST_CASE("DecodeFrame writes exactly its output span, whatever the bytes") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(20'000, 22);
  const std::string frame = CompressedFrame(codec, raw);
  const std::string other = CompressedFrame(codec, MakeJson(40'000, 23));
  const std::string both = frame + frame;
  const std::vector<std::vector<std::string_view>> inputs = {
      {frame}, Split(frame, 7), {other}, {both}, {std::string_view(frame).substr(0, 100)}};
  for (std::size_t input = 0; input < inputs.size(); ++input) {
    for (const std::size_t size : {raw.size() - 1, raw.size(), raw.size() + 1}) {
      CAPTURE(input, size);
      // Guard bytes on both sides of the span.
      std::string buffer(size + 128, '\x5a');
      const absl::Status status = codec.DecodeFrame(inputs[input], {buffer.data() + 64, size});
      CHECK(status.ok() == (input <= 1 && size == raw.size()));
      if (!status.ok()) CHECK(absl::IsDataLoss(status));
      CHECK(buffer.substr(0, 64) == std::string(64, '\x5a'));
      CHECK(buffer.substr(64 + size) == std::string(64, '\x5a'));
      if (status.ok()) CHECK(buffer.substr(64, size) == raw);
    }
  }
}

TEST_CASE("CheckFrameHeader reads the declared content size across parts") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(5'000, 24);
  const std::string frame = CompressedFrame(codec, raw);
  for (const std::size_t part_size :
       {std::size_t{1}, std::size_t{2}, std::size_t{5}, frame.size()}) {
    CAPTURE(part_size);
    const std::vector<std::string_view> parts = Split(frame, part_size);
    CHECK(CheckFrameHeader(parts, raw.size()).ok());
    CHECK(absl::IsDataLoss(CheckFrameHeader(parts, raw.size() + 1)));
    CHECK(absl::IsDataLoss(CheckFrameHeader(parts, 0)));
  }
  // A skippable frame, a frame without a content size, garbage, nothing.
  const std::string skippable(
      "\x50\x2a\x4d\x18\x04\x00\x00\x00"
      "abcd",
      12);
  const std::string no_size = FrameWithoutContentSize(raw);
  for (const std::string_view bad : {std::string_view(skippable), std::string_view(no_size),
                                     std::string_view("garbage"), std::string_view()}) {
    const std::vector<std::string_view> parts = {bad};
    CHECK(absl::IsDataLoss(CheckFrameHeader(parts, raw.size())));
    CHECK(absl::IsDataLoss(CheckFrameHeader(parts, 0)));
    CHECK(DecodeFrameCode(codec, parts, raw.size()) == absl::StatusCode::kDataLoss);
  }
  CHECK(absl::IsDataLoss(CheckFrameHeader({}, raw.size())));
}

// FORMAT.md "Payload": chunkcache's writers set no content checksum, but "a frame that has one is
// still valid, and its checksum must then match".
TEST_CASE("a frame with a zstd content checksum decodes, and a wrong one is data loss") {
  Codec codec(3, 0);
  const std::string raw = MakeJson(20'000, 25);
  ZSTD_CCtx* const cctx = ZSTD_createCCtx();
  REQUIRE(cctx != nullptr);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  std::string frame(ZSTD_compressBound(raw.size()), '\0');
  const std::size_t size = ZSTD_compress2(cctx, frame.data(), frame.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(cctx);
  REQUIRE_FALSE(ZSTD_isError(size));
  frame.resize(size);
  for (const std::size_t part_size : {frame.size(), std::size_t{100}}) {
    CAPTURE(part_size);
    std::string out(raw.size(), '\0');
    CHECK(codec.DecodeFrame(Split(frame, part_size), {out.data(), out.size()}).ok());
    CHECK(out == raw);
    std::string damaged = frame;
    damaged.back() = static_cast<char>(damaged.back() ^ 1);  // the checksum's last byte
    CHECK(DecodeFrameCode(codec, Split(damaged, part_size), raw.size()) ==
          absl::StatusCode::kDataLoss);
  }
}

TEST_CASE("the checksum of split parts equals the checksum of the whole") {
  const std::string whole = MakeJson(100'000, 19);
  const std::uint64_t expected = XXH3_64bits(whole.data(), whole.size());
  const std::vector<std::string_view> one_part = {whole};
  CHECK(Checksum(one_part) == expected);
  for (const std::size_t part_size : {1, 2, 3, 64, 100, 1000, 4096, 65536}) {
    CAPTURE(part_size);
    CHECK(Checksum(Split(whole, part_size)) == expected);
  }
  for (std::uint32_t seed = 0; seed < 5; ++seed) {
    CHECK(Checksum(SplitRandomly(whole, 1, 5000, seed)) == expected);
  }
  const std::vector<std::string_view> with_empties = {
      "", std::string_view(whole).substr(0, 10), "", "", std::string_view(whole).substr(10), ""};
  CHECK(Checksum(with_empties) == expected);
}

TEST_CASE("the checksum is XXH3-64 with seed 0 and tells payloads apart") {
  CHECK(Checksum({}) == XXH3_64bits("", 0));
  const std::vector<std::string_view> empty = {""};
  CHECK(Checksum(empty) == XXH3_64bits("", 0));
  const std::vector<std::string_view> abc = {"abc"};
  const std::vector<std::string_view> a_bc = {"a", "bc"};
  const std::vector<std::string_view> abd = {"abd"};
  CHECK(Checksum(abc) == XXH3_64bits("abc", 3));
  CHECK(Checksum(a_bc) == Checksum(abc));
  CHECK(Checksum(abd) != Checksum(abc));
}

TEST_CASE("compression settings outside zstd's range are rejected") {
  CHECK(CheckCompressionSettings(0, 0).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(100, 0).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(ZSTD_maxCLevel() + 1, 0).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(ZSTD_minCLevel() - 1, 0).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(std::numeric_limits<int>::min(), 0).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(3, -1).code() == absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(3, std::numeric_limits<int>::min()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(CheckCompressionSettings(3, std::numeric_limits<int>::max()).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("compression settings within zstd's range are accepted") {
  for (const int level : {1, 3, 19, ZSTD_maxCLevel(), -1, -5, ZSTD_minCLevel()}) {
    CAPTURE(level);
    CHECK(CheckCompressionSettings(level, 0).ok());
  }
  CHECK(CheckCompressionSettings(3, 1).ok());
  CHECK(CheckCompressionSettings(3, 2).ok());
}

TEST_CASE("a codec used from 8 threads at once round-trips every payload", "[concurrency]") {
  constexpr int kThreads = 8;
  constexpr int kRounds = 16;
  Codec codec(3, 0);
  std::vector<std::string> payloads;
  for (int t = 0; t < kThreads; ++t) {
    payloads.push_back(MakeJson(20'000 + 7'000 * static_cast<std::size_t>(t), 100 + t));
  }
  const std::string invalid = R"({"truncated": [1, 2)";

  // Catch2 assertions are not thread-safe: workers count failures, the main thread checks.
  std::vector<int> failures(kThreads, 0);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      int& failed = failures[t];
      for (int round = 0; round < kRounds; ++round) {
        // Each thread works on a different payload every round, so pooled contexts and parsers
        // see documents of different sizes from different threads.
        const std::string& raw = payloads[(t + round) % kThreads];
        if (!codec.ValidateJson(raw).ok()) ++failed;
        if (codec.ValidateJson(invalid).code() != absl::StatusCode::kInvalidArgument) ++failed;
        absl::StatusOr<CompressedBuffer> frame = codec.Compress(raw);
        if (!frame.ok()) {
          ++failed;
          continue;
        }
        const std::vector<std::string_view> one_part = {frame->view()};
        absl::StatusOr<std::string> whole = codec.Decompress(one_part, raw.size());
        if (!whole.ok() || *whole != raw) ++failed;
        absl::StatusOr<std::string> split =
            codec.Decompress(Split(frame->view(), 128 + 37 * t), raw.size());
        if (!split.ok() || *split != raw) ++failed;
        if (codec.Decompress(one_part, raw.size() + 1).status().code() !=
            absl::StatusCode::kDataLoss) {
          ++failed;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    CAPTURE(t);
    CHECK(failures[t] == 0);
  }
}

}  // namespace
}  // namespace chunkcache::internal
