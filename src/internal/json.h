// JSON text helpers shared by the exporters, the Lambda runtime client, the tools and the tests.
//
//   std::string line = "{\"error\":" + chunkcache::internal::JsonString(message) + "}";

#ifndef CHUNKCACHE_SRC_INTERNAL_JSON_H_
#define CHUNKCACHE_SRC_INTERNAL_JSON_H_

#include <string>
#include <string_view>

namespace chunkcache::internal {

// Appends `text` to `out` as a quoted JSON string: '"' and '\\' escaped, control characters as
// \u00XX. Other bytes pass as they are (the caller's text is UTF-8, or is quoted for a log).
inline void AppendJsonString(std::string* out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20) {
      out->append("\\u00");
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 0xf]);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

// `text` as a quoted JSON string (see AppendJsonString).
inline std::string JsonString(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  AppendJsonString(&out, text);
  return out;
}

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_JSON_H_
