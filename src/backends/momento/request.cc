#include "backends/momento/request.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/version.h"
#include "internal/curl_url.h"
#include "internal/percent_encode.h"
#include "simdjson.h"

namespace chunkcache::momento {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

using internal::CurlUrl;

// `text` parsed by libcurl's URL parser, the one that libcurl itself uses for CURLOPT_URL.
absl::Status ParseUrl(const std::string& text, CurlUrl& url) {
  if (text.empty() || url.Set(text) != CURLUE_OK) {
    // Not quoted back: what was given may hold credentials.
    return absl::InvalidArgumentError(
        "chunkcache: MomentoBackendOptions::endpoint must be a URL such as "
        "https://api.cache.<cell>.prod.a.momentohq.com");
  }
  return absl::OkStatus();
}

// The scheme and host libcurl will use for `url`, lowercased.
std::pair<std::string, std::string> SchemeAndHost(const CurlUrl& url) {
  return {absl::AsciiStrToLower(url.Part(CURLUPART_SCHEME).value_or("")),
          absl::AsciiStrToLower(url.Part(CURLUPART_HOST).value_or(""))};
}

}  // namespace

const char* MethodName(Method method) {
  switch (method) {
    case Method::kGet:
      return "GET";
    case Method::kPut:
      return "PUT";
    case Method::kDelete:
      return "DELETE";
  }
  return "?";
}

// libcurl has already rewritten IPv4 short and hex forms ("127.1", "0x7f.1") to dotted decimal,
// so inet_pton's strict syntax checks the address libcurl will use. "localhost" libcurl resolves
// to loopback itself, without DNS.
bool IsLoopbackHost(std::string_view host) {
  if (absl::EqualsIgnoreCase(AbslView(host), "localhost")) return true;
  const std::string text(host);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    in6_addr address{};
    const std::string inner = text.substr(1, text.size() - 2);
    // Only ::1 itself: an IPv4-mapped ::ffff:127.x reaches loopback only on some stacks.
    return inet_pton(AF_INET6, inner.c_str(), &address) == 1 && IN6_IS_ADDR_LOOPBACK(&address);
  }
  in_addr address{};
  return inet_pton(AF_INET, text.c_str(), &address) == 1 && (ntohl(address.s_addr) >> 24) == 127;
}

absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint) {
  CurlUrl url;
  if (absl::Status s = ParseUrl(endpoint, url); !s.ok()) return s;
  const auto present = [&url](CURLUPart part) { return !url.Part(part).value_or("").empty(); };
  if (present(CURLUPART_USER) || present(CURLUPART_PASSWORD) || present(CURLUPART_OPTIONS) ||
      present(CURLUPART_QUERY) || present(CURLUPART_FRAGMENT) || present(CURLUPART_ZONEID)) {
    return absl::InvalidArgumentError(
        "chunkcache: the Momento endpoint must not carry credentials, a query, a fragment or a "
        "zone id");
  }
  const auto [scheme, host] = SchemeAndHost(url);
  if (scheme != "https" && scheme != "http") {
    return absl::InvalidArgumentError("chunkcache: the Momento endpoint must use https");
  }
  if (scheme == "http" && !IsLoopbackHost(host)) {
    return absl::InvalidArgumentError(
        "chunkcache: plain http sends the Momento API key in clear text, so it is accepted only "
        "for a loopback endpoint (an IPv4 address in 127.0.0.0/8, [::1] or localhost); use "
        "https");
  }
  std::string normalized = absl::StrCat(scheme, "://", host);
  if (const std::string port = url.Part(CURLUPART_PORT).value_or(""); !port.empty()) {
    absl::StrAppend(&normalized, ":", port);
  }
  std::string path = url.Part(CURLUPART_PATH).value_or("");
  while (!path.empty() && path.back() == '/') path.pop_back();
  absl::StrAppend(&normalized, path);

  // What libcurl will connect to is what the requests' URLs say: parse one back and check that
  // it names the scheme and host just checked.
  CurlUrl again;
  if (!ParseUrl(absl::StrCat(normalized, "/cache/c?key=k"), again).ok() ||
      SchemeAndHost(again) != std::make_pair(scheme, host)) {
    return absl::InvalidArgumentError(
        "chunkcache: the Momento endpoint does not read back as the same host");
  }
  return normalized;
}

std::string PercentEncode(std::string_view text) {
  return internal::PercentEncode(text, internal::IsUrlUnreserved);
}

std::string KeyParameter(std::string_view key) {
  const bool printable = std::none_of(key.begin(), key.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7F;
  });
  if (printable && simdjson::validate_utf8(key.data(), key.size())) {
    return absl::StrCat("key=", PercentEncode(key));
  }
  return absl::StrCat("key_base64=", absl::WebSafeBase64Escape(AbslView(key)));
}

absl::StatusOr<Requests> Requests::Create(const std::string& endpoint, std::string_view cache_name,
                                          std::string_view api_key) {
  absl::StatusOr<std::string> normalized = NormalizeEndpoint(endpoint);
  if (!normalized.ok()) return normalized.status();
  Requests requests;
  requests.url_prefix_ = absl::StrCat(*normalized, "/cache/", PercentEncode(cache_name), "?");

  const std::string auth = absl::StrCat("Authorization: ", AbslView(api_key));
  for (HeaderList* list : {&requests.get_headers_, &requests.put_headers_}) {
    if (absl::Status s = AppendHeader(*list, auth); !s.ok()) return s;
    if (absl::Status s =
            AppendHeader(*list, std::string("User-Agent: chunkcache/") + CHUNKCACHE_VERSION_STRING);
        !s.ok()) {
      return s;
    }
  }
  // Raw bytes, and no "Expect: 100-continue" round trip before a large body.
  for (const char* header : {"Content-Type: application/octet-stream", "Expect:"}) {
    if (absl::Status s = AppendHeader(requests.put_headers_, header); !s.ok()) return s;
  }
  return requests;
}

absl::Status Requests::AppendHeader(HeaderList& list, const std::string& header) {
  curl_slist* appended = curl_slist_append(list.get(), header.c_str());
  if (appended == nullptr) return absl::ResourceExhaustedError("momento: out of memory");
  static_cast<void>(list.release());  // `appended` is the same list, or a new one
  list.reset(appended);
  return absl::OkStatus();
}

Transfer Requests::Make(Method method, std::string url, const HeaderList& headers) const {
  Transfer transfer;
  transfer.method = method;
  transfer.url = std::move(url);
  transfer.headers = headers.get();
  return transfer;
}

Transfer Requests::Get(std::string_view key) const {
  return Make(Method::kGet, url_prefix_ + KeyParameter(key), get_headers_);
}

Transfer Requests::Put(std::string_view key, std::string_view value,
                       std::int64_t ttl_seconds) const {
  Transfer transfer =
      Make(Method::kPut, absl::StrCat(url_prefix_, KeyParameter(key), "&ttl_seconds=", ttl_seconds),
           put_headers_);
  transfer.body = value;
  return transfer;
}

Transfer Requests::Delete(std::string_view key) const {
  return Make(Method::kDelete, url_prefix_ + KeyParameter(key), get_headers_);
}

}  // namespace chunkcache::momento
