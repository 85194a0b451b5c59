// fuzz_keys — stored-key derivation (src/keys.h) and its Redis Cluster slot.
//
// Input: pieces (fuzz_util.h) key A, key B, prefix P, prefix Q, then a 64-bit generation and a
// 32-bit chunk index (little-endian). Properties:
//   - ValidateKey is OK exactly for 1 to kMaxKeySize bytes, InvalidArgument otherwise;
//   - EscapeKeyPart writes only printable ASCII without '{' or '}', every '%' starts an upper-case
//     %XX escape, printable bytes other than '{', '}' and '%' stay as they are, and unescaping
//     gives the input back (so it is injective): A != B <=> esc(A) != esc(B);
//   - StoredKeys follows docs/FORMAT.md to the byte: esc(P){esc(K)}, ...:hex16(G):decimal(i),
//     ...:lease; Chunks(G, n) lists Chunk(G, 0..n-1);
//   - for a valid key, {esc(K)} is the Redis hash tag of every stored key, so RedisClusterSlot is
//     the same for all of them and equals CRC16-XMODEM(esc(K)) mod 16384;
//   - distinct (prefix, key) pairs share no stored key, and no chunk or lease key equals a
//     manifest key.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/options.h"
#include "chunkcache/redis_backend.h"
#include "format/keys.h"
#include "fuzz_util.h"

namespace chunkcache::fuzz {
namespace keys_target {

bool IsUpperHex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }
int HexValue(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

// Checks the alphabet of an escaped part and returns what it stands for.
std::string CheckAndUnescape(std::string_view escaped) {
  std::string out;
  for (std::size_t i = 0; i < escaped.size(); ++i) {
    const char c = escaped[i];
    FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '{' && c != '}',
               absl::StrFormat("escaped byte 0x%02x at %d", static_cast<unsigned char>(c), i));
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    FUZZ_CHECK(i + 2 < escaped.size() && IsUpperHex(escaped[i + 1]) && IsUpperHex(escaped[i + 2]),
               "a '%' that does not start an upper-case %XX escape");
    const char byte = static_cast<char>(HexValue(escaped[i + 1]) * 16 + HexValue(escaped[i + 2]));
    const auto u = static_cast<unsigned char>(byte);
    FUZZ_CHECK(!(u > 0x20 && u < 0x7f && byte != '{' && byte != '}' && byte != '%'),
               absl::StrFormat("printable byte 0x%02x escaped needlessly", u));
    out.push_back(byte);
    i += 2;
  }
  return out;
}

std::string Escape(std::string_view part) {
  const std::string escaped = internal::EscapeKeyPart(part);
  FUZZ_CHECK(CheckAndUnescape(escaped) == part, "unescaping does not give the part back");
  return escaped;
}

void CheckValidate(std::string_view key) {
  const absl::Status status = internal::ValidateKey(key);
  const bool valid = !key.empty() && key.size() <= kMaxKeySize;
  FUZZ_CHECK(status.ok() == valid && (valid || absl::IsInvalidArgument(status)),
             absl::StrCat(key.size(), "-byte key: ", status.ToString()));
}

int Crc16Slot(std::string_view bytes) {
  std::uint16_t crc = 0;
  for (const char c : bytes) {
    crc ^= static_cast<std::uint16_t>(static_cast<std::uint8_t>(c) << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
  }
  return crc % 16384;
}

// Every stored key of (prefix, key), after checking their layout and slot.
std::vector<std::string> CheckStoredKeys(std::string_view prefix, std::string_view key,
                                         std::uint64_t generation, std::uint32_t index) {
  const internal::StoredKeys keys(prefix, key);
  const std::string tag = Escape(key);
  const std::string manifest = absl::StrCat(Escape(prefix), "{", tag, "}");
  FUZZ_CHECK(keys.manifest() == manifest, "the manifest key is not esc(P){esc(K)}");
  const std::string chunk = keys.Chunk(generation, index);
  FUZZ_CHECK(chunk == absl::StrFormat("%s:%016x:%d", manifest, generation, index),
             "a chunk key is not <manifest>:hex16(G):decimal(i)");
  FUZZ_CHECK(keys.Lease() == manifest + ":lease", "the lease key is not <manifest>:lease");
  const std::uint32_t count = index % 5;
  const std::vector<std::string> chunks = keys.Chunks(generation, count);
  FUZZ_CHECK(chunks.size() == count, "Chunks returned a wrong number of keys");
  for (std::uint32_t i = 0; i < count; ++i) {
    FUZZ_CHECK(chunks[i] == keys.Chunk(generation, i), "Chunks differs from Chunk");
  }

  std::vector<std::string> all = {keys.manifest(), chunk, keys.Lease()};
  all.insert(all.end(), chunks.begin(), chunks.end());
  if (internal::ValidateKey(key).ok()) {
    const int slot = Crc16Slot(tag);
    for (const std::string& stored : all) {
      const std::size_t open = stored.find('{');
      const std::size_t close = stored.find('}', open + 1);
      FUZZ_CHECK(open != std::string::npos && close != std::string::npos &&
                     stored.substr(open + 1, close - open - 1) == tag,
                 "the first {...} of a stored key is not {esc(K)}: " + stored);
      FUZZ_CHECK(RedisClusterSlot(stored) == slot,
                 absl::StrCat("stored key ", stored, " is in slot ", RedisClusterSlot(stored),
                              ", not the key's slot ", slot));
    }
  }
  return all;
}

}  // namespace keys_target

int FuzzKeys(const std::uint8_t* data, std::size_t size) {
  using namespace keys_target;
  InputReader in(data, size);
  const std::string a = in.Piece();
  const std::string b = in.Piece();
  const std::string p = in.Piece();
  const std::string q = in.Piece();
  const auto generation = in.Integer<std::uint64_t>();
  const auto index = in.Integer<std::uint32_t>();

  for (const std::string* key : {&a, &b}) CheckValidate(*key);
  FUZZ_CHECK((Escape(a) == Escape(b)) == (a == b), "escaping is not injective");
  FUZZ_CHECK((Escape(p) == Escape(q)) == (p == q), "escaping is not injective");

  const std::vector<std::string> ap = CheckStoredKeys(p, a, generation, index);
  const std::vector<std::string> bp = CheckStoredKeys(p, b, generation, index);
  const std::vector<std::string> aq = CheckStoredKeys(q, a, generation, index);
  // Within one logical key: a chunk or lease key is never its manifest key.
  for (std::size_t i = 1; i < ap.size(); ++i) FUZZ_CHECK(ap[i] != ap[0], ap[i]);
  // Across logical keys (or prefixes): no stored key in common.
  const auto disjoint = [](const std::vector<std::string>& x, const std::vector<std::string>& y) {
    for (const std::string& k : x) {
      for (const std::string& l : y) FUZZ_CHECK(k != l, "two logical keys share " + k);
    }
  };
  if (a != b) disjoint(ap, bp);
  if (p != q) disjoint(ap, aq);
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzKeys(data, size);
}
#endif
