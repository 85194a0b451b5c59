#include "format/keys.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "chunkcache/options.h"

namespace chunkcache::internal {
namespace {

using namespace std::string_literals;

// Keys chosen to trip up an escaping scheme: braces, the escape character itself, text that looks
// like an escape sequence, NUL and other control bytes, spaces, UTF-8 and high bytes.
const std::vector<std::string>& TrickyKeys() {
  static const std::vector<std::string> keys = {
      "a{b",
      "a%7Bb",
      "a%7bb",
      "a}b",
      "a%7Db",
      "{",
      "}",
      "{}",
      "}{",
      "{a}",
      "%",
      "%%",
      "%25",
      "%2",
      "\x00"s,
      "\x00\x00"s,
      "%00",
      "a\x00"s,
      "a",
      " ",
      "  ",
      "%20",
      "a b",
      "a\tb",
      "a\nb",
      "\x7f",
      "\x80",
      "\xff",
      "\xff\xfe",
      "é",
      "%C3%A9",
      "e\xcc\x81",  // e + combining acute: looks like "é", is a different key
      "catalogue",
      "cc:{catalogue}",
      "k}:0000000000000001:0",
      "k:0000000000000001:0",
      "k",
  };
  return keys;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lower-case hex is not what EscapeKeyPart writes
}

// Inverts EscapeKeyPart, failing the test on anything it should never produce. A left inverse
// proves the escaping injective for every input it is applied to.
std::string Unescape(std::string_view escaped) {
  std::string out;
  for (std::size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] != '%') {
      out.push_back(escaped[i]);
      continue;
    }
    REQUIRE(i + 2 < escaped.size());
    const int high = HexValue(escaped[i + 1]);
    const int low = HexValue(escaped[i + 2]);
    REQUIRE(high >= 0);
    REQUIRE(low >= 0);
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

bool IsAllowedEscapedChar(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte >= 0x21 && byte <= 0x7e && c != '{' && c != '}';
}

// The Redis Cluster hash-tag rule: if the key has a '{' and a '}' after it with at least one byte
// in between, only the bytes between the first '{' and the first '}' after it are hashed;
// otherwise the whole key is.
std::string_view HashTag(std::string_view key) {
  const std::size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  const std::size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

TEST_CASE("an empty key is rejected as an invalid argument") {
  CHECK(ValidateKey("").code() == absl::StatusCode::kInvalidArgument);
  CHECK(ValidateKey(std::string_view()).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a key of exactly kMaxKeySize bytes is accepted") {
  CHECK(ValidateKey(std::string(kMaxKeySize, 'k')).ok());
  CHECK(ValidateKey(std::string(kMaxKeySize, '\0')).ok());
}

TEST_CASE("a key one byte over kMaxKeySize is rejected as an invalid argument") {
  CHECK(ValidateKey(std::string(kMaxKeySize + 1, 'k')).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ValidateKey(std::string(4 * kMaxKeySize, 'k')).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a key of any byte values, NUL included, is accepted") {
  CHECK(ValidateKey("k").ok());
  CHECK(ValidateKey("\x00"s).ok());
  CHECK(ValidateKey("a\x00z\xff\x01\x7f{}%"s).ok());
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  CHECK(ValidateKey(every_byte).ok());
}

TEST_CASE("an escaped key part holds only printable ASCII without braces or bare percent signs") {
  std::vector<std::string> inputs = TrickyKeys();
  for (int b = 0; b < 256; ++b) inputs.push_back(std::string(1, static_cast<char>(b)));
  for (const std::string& input : inputs) {
    CAPTURE(input);
    const std::string escaped = EscapeKeyPart(input);
    CAPTURE(escaped);
    for (std::size_t i = 0; i < escaped.size(); ++i) {
      CHECK(IsAllowedEscapedChar(escaped[i]));
      if (escaped[i] == '%') {
        // A '%' only ever starts an escape: two upper-case hex digits follow.
        REQUIRE(i + 2 < escaped.size());
        CHECK(HexValue(escaped[i + 1]) >= 0);
        CHECK(HexValue(escaped[i + 2]) >= 0);
        i += 2;
      }
    }
  }
}

TEST_CASE("escaping keeps printable ASCII and writes every other byte as upper-case %XX") {
  CHECK(EscapeKeyPart("catalogue") == "catalogue");
  CHECK(EscapeKeyPart("cc:") == "cc:");
  CHECK(EscapeKeyPart("a b{c}") == "a%20b%7Bc%7D");  // the example of docs/FORMAT.md
  CHECK(EscapeKeyPart("%") == "%25");
  CHECK(EscapeKeyPart("\x00"s) == "%00");
  CHECK(EscapeKeyPart("\xff") == "%FF");
  CHECK(EscapeKeyPart("é") == "%C3%A9");
  CHECK(EscapeKeyPart("\x7f") == "%7F");
  CHECK(EscapeKeyPart("~!") == "~!");
  CHECK(EscapeKeyPart("") == "");
}

TEST_CASE("escaping is injective on tricky keys") {
  std::vector<std::string> inputs = TrickyKeys();
  for (int b = 0; b < 256; ++b) inputs.push_back(std::string(1, static_cast<char>(b)));
  for (int b = 0; b < 256; ++b) inputs.push_back("x" + std::string(1, static_cast<char>(b)) + "y");

  std::set<std::string> distinct_inputs(inputs.begin(), inputs.end());
  std::set<std::string> escaped;
  for (const std::string& input : distinct_inputs) {
    CAPTURE(input);
    const std::string e = EscapeKeyPart(input);
    CHECK(Unescape(e) == input);
    CHECK(escaped.insert(e).second);
  }
  CHECK(escaped.size() == distinct_inputs.size());
}

TEST_CASE("the manifest key is the escaped prefix followed by the escaped key in braces") {
  CHECK(StoredKeys("cc:", "catalogue").manifest() == "cc:{catalogue}");
  CHECK(StoredKeys("", "k").manifest() == "{k}");
  CHECK(StoredKeys("p{1}:", "a b{c}").manifest() == "p%7B1%7D:{a%20b%7Bc%7D}");
  CHECK(StoredKeys("cc:", "\x00"s).manifest() == "cc:{%00}");
}

TEST_CASE("chunk keys append the generation in 16 hex digits and the index in decimal") {
  const StoredKeys keys("cc:", "catalogue");
  CHECK(keys.Chunk(0x1f2e3d4c5b6a7988, 0) == "cc:{catalogue}:1f2e3d4c5b6a7988:0");
  CHECK(keys.Chunk(0x1f2e3d4c5b6a7988, 1) == "cc:{catalogue}:1f2e3d4c5b6a7988:1");
  CHECK(keys.Chunk(0, 10) == "cc:{catalogue}:0000000000000000:10");
  CHECK(keys.Chunk(~std::uint64_t{0}, ~std::uint32_t{0}) ==
        "cc:{catalogue}:ffffffffffffffff:4294967295");
}

TEST_CASE("Chunks lists the chunk keys of one generation in order") {
  const StoredKeys keys("cc:", "k");
  CHECK(keys.Chunks(7, 0).empty());
  const std::vector<std::string> chunks = keys.Chunks(7, 5);
  REQUIRE(chunks.size() == 5);
  for (std::uint32_t i = 0; i < 5; ++i) CHECK(chunks[i] == keys.Chunk(7, i));
}

TEST_CASE("every stored key of a logical key carries the same Redis hash tag") {
  const std::vector<std::string> prefixes = {"cc:", "", "p{x}:", "}{", "%7B", "a b"};
  const std::vector<std::uint64_t> generations = {0, 1, 0x1f2e3d4c5b6a7988, ~std::uint64_t{0}};
  for (const std::string& prefix : prefixes) {
    for (const std::string& key : TrickyKeys()) {
      CAPTURE(prefix, key);
      const StoredKeys keys(prefix, key);
      const std::string_view tag = HashTag(keys.manifest());
      // The tag is the escaped key itself, not the whole manifest key: a cluster hashes only it.
      CHECK(tag == EscapeKeyPart(key));
      for (const std::uint64_t generation : generations) {
        for (const std::string& chunk : keys.Chunks(generation, 12)) {
          CAPTURE(chunk);
          CHECK(HashTag(chunk) == tag);
        }
      }
    }
  }
}

TEST_CASE("distinct generations and indexes give distinct chunk keys") {
  const StoredKeys keys("cc:", "k");
  const std::vector<std::uint64_t> generations = {
      0, 1, 2, 10, 16, 0x100, 0x1f2e3d4c5b6a7988, ~std::uint64_t{0}, ~std::uint64_t{0} - 1};
  const std::vector<std::uint32_t> indexes = {0,   1,   2,    9,    10,    11,
                                              100, 101, 1000, 1010, 65536, ~std::uint32_t{0}};
  std::set<std::string> seen;
  for (const std::uint64_t generation : generations) {
    for (const std::uint32_t index : indexes) {
      CAPTURE(generation, index);
      CHECK(seen.insert(keys.Chunk(generation, index)).second);
    }
  }
  CHECK(seen.size() == generations.size() * indexes.size());
}

TEST_CASE("no chunk key equals any manifest key, and distinct logical keys share no stored key") {
  const std::vector<std::string> prefixes = {"cc:", "", "}:", "cc:{"};
  std::set<std::string> manifests;
  std::vector<std::string> chunks;
  std::size_t logical_keys = 0;
  for (const std::string& prefix : prefixes) {
    for (const std::string& key : TrickyKeys()) {
      const StoredKeys keys(prefix, key);
      ++logical_keys;
      CHECK(manifests.insert(keys.manifest()).second);
      for (const std::uint64_t generation : {std::uint64_t{0}, std::uint64_t{1}}) {
        for (std::string& chunk : keys.Chunks(generation, 3)) chunks.push_back(std::move(chunk));
      }
    }
  }
  CHECK(manifests.size() == logical_keys);
  std::set<std::string> distinct_chunks;
  for (const std::string& chunk : chunks) {
    CAPTURE(chunk);
    CHECK(manifests.count(chunk) == 0);
    CHECK(distinct_chunks.insert(chunk).second);
  }
}

}  // namespace
}  // namespace chunkcache::internal
