#include "format/keys.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/options.h"

namespace chunkcache::internal {

absl::Status ValidateKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("chunkcache: the key is empty");
  if (key.size() > kMaxKeySize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: the key is %d bytes long; the limit is %d", key.size(), kMaxKeySize));
  }
  return absl::OkStatus();
}

std::string EscapeKeyPart(std::string_view part) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(part.size());
  for (const char c : part) {
    const auto byte = static_cast<unsigned char>(c);
    const bool plain = byte > 0x20 && byte < 0x7f && c != '{' && c != '}' && c != '%';
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    }
  }
  return out;
}

StoredKeys::StoredKeys(std::string_view prefix, std::string_view key)
    : manifest_(absl::StrCat(EscapeKeyPart(prefix), "{", EscapeKeyPart(key), "}")) {}

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
