// Percent-encoding (RFC 3986 §2.1) with the caller's choice of bytes that stay as they are: stored
// key parts, URL query values, URL path segments.
//
//   std::string q = chunkcache::internal::PercentEncode(key,
//   chunkcache::internal::IsUrlUnreserved);

#ifndef CHUNKCACHE_SRC_INTERNAL_PERCENT_ENCODE_H_
#define CHUNKCACHE_SRC_INTERNAL_PERCENT_ENCODE_H_

#include <string>
#include <string_view>

namespace chunkcache::internal {

// RFC 3986's unreserved characters: ALPHA, DIGIT, '-', '.', '_', '~'.
constexpr bool IsUrlUnreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// `text` with every byte for which `plain(byte)` is false written as %XX (upper-case hex).
template <typename Plain>
std::string PercentEncode(std::string_view text, Plain plain) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (plain(byte)) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    }
  }
  return out;
}

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_PERCENT_ENCODE_H_
