// The parts of the Momento backend that need no server: request building (request.h) and the
// meaning of a finished attempt (status_mapping.h).

#include <curl/curl.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backends/momento/request.h"
#include "backends/momento/status_mapping.h"
#include "catch2/catch.hpp"
#include "chunkcache/version.h"

namespace chunkcache::momento {
namespace {

constexpr char kApiKey[] = "secret-api-key-0123456789";

std::vector<std::string> HeaderLines(const curl_slist* list) {
  std::vector<std::string> lines;
  for (; list != nullptr; list = list->next) lines.emplace_back(list->data);
  return lines;
}

TEST_CASE("Momento keys travel as key= when printable UTF-8, else as key_base64=") {
  CHECK(KeyParameter("plain") == "key=plain");
  CHECK(KeyParameter("cc:{a b}/1") == "key=cc%3A%7Ba%20b%7D%2F1");
  CHECK(KeyParameter("A-z.0_9~") == "key=A-z.0_9~");
  CHECK(KeyParameter("\xd0\xba") == "key=%D0%BA");  // UTF-8 "к", percent-encoded byte by byte
  CHECK(KeyParameter("") == "key=");

  const std::string control("a\nb", 3);
  const std::string invalid_utf8("\xff\xfe", 2);
  const std::string del("x\x7f", 2);
  for (const std::string& key : {control, invalid_utf8, del}) {
    CAPTURE(key);
    const std::string parameter = KeyParameter(key);
    REQUIRE(absl::StartsWith(parameter, "key_base64="));
    const std::string encoded = parameter.substr(std::string("key_base64=").size());
    CHECK_FALSE(absl::StrContains(encoded, "="));  // unpadded
    std::string decoded;
    REQUIRE(absl::WebSafeBase64Unescape(encoded, &decoded));
    CHECK(decoded == key);
  }
}

TEST_CASE("a Momento endpoint is normalized as libcurl reads it, or refused without quoting it") {
  CHECK(*NormalizeEndpoint("HTTPS://API.Cache.Example.COM") == "https://api.cache.example.com");
  CHECK(*NormalizeEndpoint("https://api.example.com:8443/base//") ==
        "https://api.example.com:8443/base");
  CHECK(*NormalizeEndpoint("http://127.1:9") == "http://127.0.0.1:9");
  CHECK(*NormalizeEndpoint("http://[::1]:8080/x") == "http://[::1]:8080/x");

  for (const char* refused : {"", "not a url", "ftp://host.example", "https://user:pw@h.example",
                              "https://h.example/?q=1", "https://h.example/#f", "http://10.0.0.1",
                              "http://localhost.example"}) {
    CAPTURE(refused);
    const absl::StatusOr<std::string> normalized = NormalizeEndpoint(refused);
    CHECK(normalized.status().code() == absl::StatusCode::kInvalidArgument);
    for (const char* part : {"pw@", "h.example", "10.0.0.1", "localhost.example"}) {
      CHECK_FALSE(absl::StrContains(normalized.status().message(), part));
    }
  }

  CHECK(IsLoopbackHost("127.0.0.1"));
  CHECK(IsLoopbackHost("127.255.0.9"));
  CHECK(IsLoopbackHost("LOCALHOST"));
  CHECK(IsLoopbackHost("[::1]"));
  CHECK(IsLoopbackHost("[0:0:0:0:0:0:0:1]"));
  CHECK_FALSE(IsLoopbackHost("128.0.0.1"));
  CHECK_FALSE(IsLoopbackHost("127.0.0.1.example.com"));
  CHECK_FALSE(IsLoopbackHost("[::ffff:127.0.0.1]"));
  CHECK_FALSE(IsLoopbackHost("::1"));  // libcurl writes IPv6 hosts in brackets
}

TEST_CASE("Momento requests carry the URL, method, headers and body of the HTTP API") {
  absl::StatusOr<Requests> requests =
      Requests::Create("https://h.example/v1/", "my cache", kApiKey);
  REQUIRE(requests.ok());

  const Transfer get = requests->Get("k:1");
  CHECK(get.method == Method::kGet);
  CHECK(get.url == "https://h.example/v1/cache/my%20cache?key=k%3A1");
  CHECK(get.body.empty());
  CHECK(
      HeaderLines(get.headers) ==
      std::vector<std::string>{std::string("Authorization: ") + kApiKey,
                               std::string("User-Agent: chunkcache/") + CHUNKCACHE_VERSION_STRING});

  const Transfer del = requests->Delete("k");
  CHECK(del.method == Method::kDelete);
  CHECK(del.url == "https://h.example/v1/cache/my%20cache?key=k");
  CHECK(del.headers == get.headers);

  const std::string value = "the value";
  const Transfer put = requests->Put("k", value, 61);
  CHECK(put.method == Method::kPut);
  CHECK(put.url == "https://h.example/v1/cache/my%20cache?key=k&ttl_seconds=61");
  CHECK(put.body.data() == value.data());  // the caller's bytes, not a copy
  CHECK(put.body.size() == value.size());
  const std::vector<std::string> put_headers = HeaderLines(put.headers);
  REQUIRE(put_headers.size() == 4);
  CHECK(put_headers[2] == "Content-Type: application/octet-stream");
  CHECK(put_headers[3] == "Expect:");

  CHECK(MethodName(Method::kGet) == std::string("GET"));
  CHECK(MethodName(Method::kPut) == std::string("PUT"));
  CHECK(MethodName(Method::kDelete) == std::string("DELETE"));
}

// A transfer of `method` whose attempt ended with `body` received.
Transfer Finished(Method method, std::string body = "") {
  Transfer t;
  t.method = method;
  t.response = std::move(body);
  t.attempts = 1;
  t.started = absl::Now();
  t.timeout = absl::Seconds(1);
  return t;
}

TEST_CASE("each HTTP status maps to the documented status, retryable or not, and counter") {
  const StatusMapping mapping("the-cache", kApiKey, 1000);
  const absl::Time now = absl::Now();
  const CallLimit limit{.start = now, .end = now + absl::Seconds(5), .own = absl::Seconds(5)};
  const auto judge = [&](Method method, long code, std::string body = "") {  // NOLINT(runtime/int)
    return mapping.Judge(Finished(method, std::move(body)), CURLE_OK, code, limit);
  };

  Verdict v = judge(Method::kGet, 200, "value");
  CHECK((v.status.ok() && v.found && !v.retryable && v.failure == Failure::kNone));
  v = judge(Method::kPut, 200);
  CHECK((v.status.ok() && !v.found));
  v = judge(Method::kDelete, 204);
  CHECK((v.status.ok() && !v.found));

  // 404: a miss for a key, an error for a PUT, NotFound naming the cache for a missing cache.
  v = judge(Method::kGet, 404);
  CHECK((v.status.ok() && !v.found));
  CHECK(judge(Method::kDelete, 404).status.ok());
  CHECK(absl::IsNotFound(judge(Method::kPut, 404).status));
  v = judge(Method::kGet, 404, "Cache Not Found");
  CHECK(absl::IsNotFound(v.status));
  CHECK(absl::StrContains(v.status.message(), "\"the-cache\""));

  CHECK(absl::IsInvalidArgument(judge(Method::kGet, 400).status));
  CHECK(absl::IsUnauthenticated(judge(Method::kGet, 401).status));
  v = judge(Method::kPut, 403);
  CHECK(absl::IsPermissionDenied(v.status));
  CHECK(absl::StrContains(v.status.message(), "\"the-cache\""));
  CHECK(absl::IsInvalidArgument(judge(Method::kPut, 413).status));

  v = judge(Method::kGet, 429);
  CHECK((absl::IsResourceExhausted(v.status) && v.retryable && v.failure == Failure::kThrottled));
  for (const long code : {500, 503, 599}) {  // NOLINT(runtime/int)
    CAPTURE(code);
    v = judge(Method::kGet, code, "busy");
    CHECK((absl::IsUnavailable(v.status) && v.retryable && v.failure == Failure::kServerError));
    CHECK(absl::StrContains(v.status.message(), ": busy"));
  }
  for (const long code : {302, 600, 999, 418}) {  // NOLINT(runtime/int)
    CAPTURE(code);
    v = judge(Method::kGet, code);
    CHECK((absl::IsUnknown(v.status) && !v.retryable && v.failure == Failure::kNone));
  }
}

TEST_CASE("transport failures map by libcurl's code; a timeout at the call's limit is final") {
  const StatusMapping mapping("c", kApiKey, 1000);
  const absl::Time now = absl::Now();
  const CallLimit limit{.start = now, .end = now + absl::Seconds(5), .own = absl::Seconds(5)};

  Transfer t = Finished(Method::kGet);
  std::snprintf(t.error.data(), t.error.size(), "Failed to connect with %s", kApiKey);
  Verdict v = mapping.Judge(t, CURLE_COULDNT_CONNECT, 0, limit);
  CHECK((absl::IsUnavailable(v.status) && v.retryable && v.failure == Failure::kTransport));
  CHECK(absl::StrContains(v.status.message(), "<api key>"));
  CHECK_FALSE(absl::StrContains(v.status.message(), kApiKey));

  t = Finished(Method::kGet);
  v = mapping.Judge(t, CURLE_OPERATION_TIMEDOUT, 0, limit);
  CHECK((absl::IsDeadlineExceeded(v.status) && v.retryable && v.failure == Failure::kTransport));
  CHECK(absl::StrContains(v.status.message(), "request_timeout of 1s"));
  t.timeout_is_deadline = true;
  v = mapping.Judge(t, CURLE_OPERATION_TIMEDOUT, 0, limit);
  CHECK((absl::IsDeadlineExceeded(v.status) && !v.retryable && v.failure == Failure::kTransport));
  CHECK(absl::StrContains(v.status.message(), "MomentoBackendOptions::deadline of 5s"));

  t = Finished(Method::kGet);
  t.response_too_large = true;
  v = mapping.Judge(t, CURLE_WRITE_ERROR, 200, limit);
  CHECK((absl::IsResourceExhausted(v.status) && !v.retryable));
  CHECK(absl::StrContains(v.status.message(), "max_item_size (1000 bytes)"));

  t = Finished(Method::kGet);
  t.headers_too_large = true;
  v = mapping.Judge(t, CURLE_WRITE_ERROR, 200, limit);
  CHECK((absl::IsUnavailable(v.status) && !v.retryable && v.failure == Failure::kTransport));

  // An error reply cut short on purpose is judged by its status code.
  t = Finished(Method::kGet, "bad");
  t.error_truncated = true;
  CHECK(absl::IsInvalidArgument(mapping.Judge(t, CURLE_WRITE_ERROR, 400, limit).status));

  t = Finished(Method::kGet);
  v = mapping.Judge(t, CURLE_OUT_OF_MEMORY, 0, limit);
  CHECK((absl::IsUnavailable(v.status) && !v.retryable && v.failure == Failure::kNone));
  CHECK(absl::StrContains(v.status.message(), "100 KiB"));
}

TEST_CASE("a reply excerpt is short, printable and free of the API key, even cut mid-key") {
  const StatusMapping mapping("c", kApiKey, 1000);
  const std::string key = kApiKey;
  CHECK(mapping.error_body_limit() == 512 + key.size());
  CHECK(mapping.Excerpt("", false).empty());
  CHECK(mapping.Excerpt("  oops\n", false) == ": oops");
  CHECK(mapping.Excerpt("a\x01"
                        "b\xff",
                        false) == ": a b");
  CHECK(mapping.Excerpt("key " + key + " echoed", false) == ": key <api key> echoed");
  CHECK(mapping.Excerpt(std::string(300, 'x'), false) == ": " + std::string(200, 'x'));
  // Cut at the limit inside the key: the start of the key that was kept goes too.
  for (std::size_t kept = 1; kept < key.size(); ++kept) {
    CAPTURE(kept);
    CHECK(mapping.Excerpt("body " + key.substr(0, kept), true) == ": body");
  }
  CHECK(mapping.Redact(key + key) == "<api key><api key>");
}

TEST_CASE("a final status says how many attempts were made and why no more") {
  const absl::Status failed = absl::UnavailableError("momento: GET: down");
  CHECK(WithAttempts(failed, 1).message() == "momento: GET: down (1 attempt)");
  const absl::Status annotated = WithAttempts(failed, 3, "no time for another");
  CHECK(annotated.code() == absl::StatusCode::kUnavailable);
  CHECK(annotated.message() == "momento: GET: down (3 attempts; no time for another)");

  CHECK(CallLimit{.callers = true}.Name() == "the call's deadline (CallOptions::deadline)");
  CHECK(CallLimit{.own = absl::Milliseconds(1500)}.Name() ==
        "MomentoBackendOptions::deadline of 1.5s");
  CHECK(Took(absl::Microseconds(477'900)) == "477ms");
}

}  // namespace
}  // namespace chunkcache::momento
