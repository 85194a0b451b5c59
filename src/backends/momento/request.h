// The HTTP requests of MomentoBackend: the endpoint check (with libcurl's URL parser, the one
// libcurl connects with), the request URLs and the header lists, and Transfer, which carries one
// request through its attempts to its outcome.
//
//   absl::StatusOr<momento::Requests> requests =
//       momento::Requests::Create("https://api.cache.example.com", "catalogue", api_key);
//   std::vector<momento::Transfer> transfers;
//   transfers.push_back(requests->Get("cc:{k}:m"));  // GET {endpoint}/cache/catalogue?key=cc%3A…
//
// URLs: PUT {endpoint}/cache/{cache}?key=…&ttl_seconds=N, GET and DELETE {endpoint}/cache/{cache}?
// key=…. A key that is printable UTF-8 is percent-encoded as key=; any other key is sent as
// key_base64= (base64url without padding). Headers: the bare API key as Authorization and a
// chunkcache User-Agent; a PUT also sends "Content-Type: application/octet-stream" and an empty
// "Expect:" (no 100-continue round trip before a large body).
//
// Thread safety: a Requests is immutable after Create, so safe for concurrent use; its header
// lists live as long as it does, and every Transfer it makes points to them.

#ifndef CHUNKCACHE_SRC_BACKENDS_MOMENTO_REQUEST_H_
#define CHUNKCACHE_SRC_BACKENDS_MOMENTO_REQUEST_H_

#include <curl/curl.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "internal/curl_handles.h"

namespace chunkcache::momento {

enum class Method { kGet, kPut, kDelete };

// "GET", "PUT" or "DELETE".
const char* MethodName(Method method);

// True for a host, as libcurl's URL parser writes it, that can only be this machine: an IPv4
// literal in 127.0.0.0/8, "[::1]" (any spelling of ::1, in brackets) or exactly "localhost" (any
// case). No prefix or suffix matching: "127.0.0.1.example.com" is refused.
bool IsLoopbackHost(std::string_view host);

// `endpoint` as "scheme://host[:port][/path]", scheme and host lowercased, without a trailing
// slash. InvalidArgument for anything but an https URL, or an http URL to a loopback host, or for
// one with user info, a query, a fragment or an IPv6 zone id. Messages quote nothing of the
// endpoint: its user info, or a host, may hold a secret.
absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint);

// `text` with every byte but RFC 3986's unreserved ones (A-Z a-z 0-9 - . _ ~) as %XX.
std::string PercentEncode(std::string_view text);

// The query parameter naming `key`: "key=<percent-encoded>" for printable UTF-8 (no control
// character), "key_base64=<base64url, unpadded>" for anything else.
std::string KeyParameter(std::string_view key);

// One HTTP request, the state of its attempt in flight and its outcome. Made by Requests; the
// transfer session (http_session.h) fills in the rest.
struct Transfer {
  Method method = Method::kGet;
  std::string url;
  std::string_view body;          // PUT only; the caller's bytes, not copied
  curl_slist* headers = nullptr;  // owned by the Requests that made the transfer

  int attempts = 0;
  bool active = false;
  bool done = false;
  absl::Time not_before = absl::InfinitePast();

  // The attempt in flight.
  CURL* easy = nullptr;
  std::string response;
  std::size_t response_limit = 0;  // bytes of a GET's 200 body accepted
  bool response_too_large = false;
  std::size_t error_limit = 0;   // bytes of any other body kept, for a message
  bool error_truncated = false;  // some were dropped, and the reply was not read further
  std::size_t header_bytes = 0;  // of every response in this attempt, 1xx included
  bool headers_too_large = false;
  absl::Time started;                             // this attempt
  absl::Duration timeout = absl::ZeroDuration();  // this attempt's
  bool timeout_is_deadline = false;               // cut short to end at the call's limit
  std::array<char, CURL_ERROR_SIZE> error{};

  // The outcome.
  absl::Status status;
  bool found = false;  // GET answered 200
};

// Builds the requests of one cache on one endpoint.
class Requests {
 public:
  // Checks `endpoint` (see NormalizeEndpoint) and builds the header lists. `api_key` must hold no
  // control character (MomentoBackend checks it first).
  static absl::StatusOr<Requests> Create(const std::string& endpoint, std::string_view cache_name,
                                         std::string_view api_key);

  Transfer Get(std::string_view key) const;
  // `value` must outlive the transfer.
  Transfer Put(std::string_view key, std::string_view value, std::int64_t ttl_seconds) const;
  Transfer Delete(std::string_view key) const;

 private:
  using HeaderList = internal::CurlHeaders;

  Requests() = default;
  static absl::Status AppendHeader(HeaderList& list, const std::string& header);
  Transfer Make(Method method, std::string url, const HeaderList& headers) const;

  std::string url_prefix_;  // endpoint + "/cache/{cache}?"
  HeaderList get_headers_;  // for GET and DELETE
  HeaderList put_headers_;
};

}  // namespace chunkcache::momento

#endif  // CHUNKCACHE_SRC_BACKENDS_MOMENTO_REQUEST_H_
