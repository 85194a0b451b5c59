// fuzz_http_head — the HTTP request parsing of examples/service/catalogue_service.cc, the one
// self-written parser of remote bytes outside the library (its server reads requests from any
// client): ParseRequestHead (request line and headers) and AcceptsZstd (an Accept-Encoding
// value). The example's source is compiled into this target as it is (its main renamed), so the
// code under test is exactly the example's.
//
// Input: the bytes a client sent. As the server's ReadHead does, the head is what precedes the
// first "\r\n\r\n", at most 16 KiB (longer heads are answered 431 without being parsed). Then
// AcceptsZstd on every header value and on the whole input. Properties:
//   - ParseRequestHead answers nothing (a request) or 400 or 505, and 505 only for a version that
//     starts with "HTTP/" but is not 1.0 or 1.1;
//   - a request has the request line's method (non-empty, no space) and target up to its '?',
//     keep-alive by default exactly for HTTP/1.1, and one header per line after the first, named
//     in lower case by what precedes the line's first ':', with the rest trimmed as its value.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fuzz_util.h"

#define main catalogue_service_main
#include "../examples/service/catalogue_service.cc"
#undef main

namespace chunkcache::fuzz {
namespace http_head_target {

void CheckRequest(absl::string_view head, const Request& request) {
  const std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  const std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  FUZZ_CHECK(parts.size() == 3, "a request line without exactly two spaces was accepted");
  FUZZ_CHECK(!request.method.empty() && request.method == parts[0], "the method is wrong");
  FUZZ_CHECK(request.path == parts[1].substr(0, parts[1].find('?')), "the path is wrong");
  FUZZ_CHECK(parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0", "an unknown version was accepted");
  FUZZ_CHECK(request.headers.size() == lines.size() - 1, "a header line was dropped or added");
  bool keep_alive = parts[2] == "HTTP/1.1";
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const auto& [name, value] = request.headers[i - 1];
    const std::size_t colon = lines[i].find(':');
    FUZZ_CHECK(colon != absl::string_view::npos && colon > 0, "a header line without a name");
    FUZZ_CHECK(name == absl::AsciiStrToLower(lines[i].substr(0, colon)),
               absl::StrCat("header ", i, " has the wrong name"));
    FUZZ_CHECK(value == absl::StripAsciiWhitespace(lines[i].substr(colon + 1)),
               absl::StrCat("header ", i, " has the wrong value"));
    if (name == "connection") {
      for (absl::string_view option : absl::StrSplit(value, ',')) {
        option = absl::StripAsciiWhitespace(option);
        if (absl::EqualsIgnoreCase(option, "close")) keep_alive = false;
        if (absl::EqualsIgnoreCase(option, "keep-alive")) keep_alive = true;
      }
    }
  }
  FUZZ_CHECK(request.keep_alive == keep_alive, "keep-alive is wrong");
}

}  // namespace http_head_target

int FuzzHttpHead(const std::uint8_t* data, std::size_t size) {
  using namespace http_head_target;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::string_view head = bytes.substr(0, bytes.find("\r\n\r\n"));
  if (head.size() + 4 > kMaxHeaderBytes) return 0;  // 431 before parsing

  Request request;
  const std::optional<int> error = ParseRequestHead(head, request);
  Note(absl::StrCat("ParseRequestHead: ", error ? absl::StrCat(*error) : "a request"));
  if (error) {
    FUZZ_CHECK(*error == 400 || *error == 505, absl::StrCat("answered ", *error));
    if (*error == 505) {
      const std::vector<absl::string_view> parts =
          absl::StrSplit(head.substr(0, head.find("\r\n")), ' ');
      FUZZ_CHECK(parts.size() == 3 && absl::StartsWith(parts[2], "HTTP/"),
                 "505 for something that is not an HTTP version");
    }
  } else {
    CheckRequest(head, request);
    for (const auto& [name, value] : request.headers) AcceptsZstd(value);
  }
  AcceptsZstd(bytes);
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzHttpHead(data, size);
}
#endif
