#include "format/keys.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/options.h"
#include "internal/percent_encode.h"

namespace chunkcache::internal {

absl::Status ValidateKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("chunkcache: the key is empty");
  if (key.size() > kMaxKeySize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: the key is %d bytes long; the limit is %d", key.size(), kMaxKeySize));
  }
  return absl::OkStatus();
}

// Printable ASCII but for the hash-tag braces and '%' itself, so that a key's own braces cannot
// move the Redis Cluster hash tag and the escaping stays reversible.
std::string EscapeKeyPart(std::string_view part) {
  return PercentEncode(part, [](unsigned char byte) {
    return byte > 0x20 && byte < 0x7f && byte != '{' && byte != '}' && byte != '%';
  });
}

StoredKeys::StoredKeys(std::string_view prefix, std::string_view key)
    : key_(key), manifest_(absl::StrCat(EscapeKeyPart(prefix), "{", EscapeKeyPart(key), "}")) {}

std::string StoredKeys::Chunk(std::uint64_t generation, std::uint32_t index) const {
  return absl::StrFormat("%s:%016x:%d", manifest_, generation, index);
}

std::vector<std::string> StoredKeys::Chunks(std::uint64_t generation, std::uint32_t count) const {
  std::vector<std::string> keys;
  keys.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) keys.push_back(Chunk(generation, i));
  return keys;
}

}  // namespace chunkcache::internal
