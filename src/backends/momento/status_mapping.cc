#include "backends/momento/status_mapping.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace chunkcache::momento {
namespace {

// Bytes of an error reply kept for its message (plus the API key's length), and the most of them
// a message quotes.
constexpr std::size_t kErrorBodyBytes = 512;
constexpr std::size_t kExcerptBytes = 200;

}  // namespace

std::string CallLimit::Name() const {
  return callers ? std::string("the call's deadline (CallOptions::deadline)")
                 : absl::StrCat("MomentoBackendOptions::deadline of ", absl::FormatDuration(own));
}

std::string Took(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

absl::Status WithAttempts(const absl::Status& status, int attempts, std::string_view why) {
  return absl::Status(status.code(),
                      absl::StrFormat("%s (%d attempt%s%s%s)", status.message(), attempts,
                                      attempts == 1 ? "" : "s", why.empty() ? "" : "; ", why));
}

StatusMapping::StatusMapping(std::string cache_name, std::string api_key, std::size_t max_item_size)
    : cache_name_(std::move(cache_name)),
      api_key_(std::move(api_key)),
      max_item_size_(max_item_size) {}

std::size_t StatusMapping::error_body_limit() const { return kErrorBodyBytes + api_key_.size(); }

Verdict StatusMapping::Judge(const Transfer& t, CURLcode result,
                             long code,  // NOLINT(runtime/int)
                             const CallLimit& limit) const {
  const char* method = MethodName(t.method);
  // An error reply whose body was cut short on purpose is judged by its status code.
  const bool cut_on_purpose = result == CURLE_WRITE_ERROR && t.error_truncated &&
                              !t.headers_too_large && !t.response_too_large;
  if (result != CURLE_OK && !cut_on_purpose) return JudgeTransport(t, result, limit);
  if (code == 200 || code == 204) {
    return {.status = absl::OkStatus(), .found = t.method == Method::kGet && code == 200};
  }
  const std::string detail = Excerpt(t.response, t.error_truncated);
  switch (code) {
    case 404:
      if (absl::StrContains(absl::AsciiStrToLower(t.response), "cache not found")) {
        return {.status = absl::NotFoundError(absl::StrCat(
                    "momento: cache \"", cache_name_,
                    "\" not found (create it, or check cache_name and the endpoint's region)"))};
      }
      if (t.method == Method::kPut) {
        return {.status = absl::NotFoundError(absl::StrCat("momento: PUT answered 404", detail))};
      }
      return {.status = absl::OkStatus()};  // a miss, or an absent key deleted
    case 400:
      return {.status = absl::InvalidArgumentError(
                  absl::StrCat("momento: ", method, " rejected as a bad request", detail))};
    case 401:
      return {.status = absl::UnauthenticatedError(absl::StrCat(
                  "momento: ", method, " unauthenticated: check the API key", detail))};
    case 403:
      return {.status = absl::PermissionDeniedError(absl::StrCat(
                  "momento: ", method, " forbidden: the API key lacks permission on cache \"",
                  cache_name_, "\"", detail))};
    case 413:
      return {.status = absl::InvalidArgumentError(
                  absl::StrCat("momento: item too large for the cache", detail))};
    case 429:
      return {.retryable = true,
              .status = absl::ResourceExhaustedError(
                  absl::StrCat("momento: ", method, " throttled (HTTP 429)")),
              .failure = Failure::kThrottled};
    default:
      break;
  }
  if (code >= 500 && code <= 599) {  // only these are server errors, worth another try
    return {.retryable = true,
            .status = absl::UnavailableError(
                absl::StrCat("momento: ", method, " failed with HTTP ", code, detail)),
            .failure = Failure::kServerError};
  }
  if (code >= 300 && code <= 399) {
    return {.status = absl::UnknownError(absl::StrCat(
                "momento: ", method, " answered HTTP ", code,
                ", a redirect, which is not followed (check MomentoBackendOptions::endpoint)",
                detail))};
  }
  // Anything else is no reply Momento gives: say so, and do not retry it.
  return {.status = absl::UnknownError(absl::StrCat("momento: ", method, " answered HTTP ", code,
                                                    ", which Momento does not send; not retried",
                                                    detail))};
}

Verdict StatusMapping::JudgeTransport(const Transfer& t, CURLcode result,
                                      const CallLimit& limit) const {
  const char* method = MethodName(t.method);
  if (t.response_too_large || result == CURLE_FILESIZE_EXCEEDED) {
    return {.status = absl::ResourceExhaustedError(absl::StrFormat(
                "momento: a GET reply exceeds max_item_size (%d bytes)", max_item_size_))};
  }
  if (t.headers_too_large) {
    return {.status = absl::UnavailableError(absl::StrFormat(
                "momento: %s reply headers exceed %d bytes (1xx responses included); not a "
                "Momento reply, not retried",
                method, kMaxHeaderBytes)),
            .failure = Failure::kTransport};
  }
  const std::string why = Redact(t.error[0] != '\0' ? std::string(t.error.data())
                                                    : std::string(curl_easy_strerror(result)));
  const absl::Time now = absl::Now();
  switch (result) {
    case CURLE_OPERATION_TIMEDOUT:
      if (t.timeout_is_deadline) {  // the attempt ran into the call's limit: no retry
        return {.status = absl::DeadlineExceededError(absl::StrFormat(
                    "momento: %s not done by %s: gave up after %s (%d attempt%s; the last waited "
                    "%s): %s",
                    method, limit.Name(), Took(now - limit.start), t.attempts,
                    t.attempts == 1 ? "" : "s", Took(now - t.started), why)),
                .failure = Failure::kTransport};
      }
      return {.retryable = true,
              .status = absl::DeadlineExceededError(absl::StrFormat(
                  "momento: %s timed out after %s (request_timeout of %s): %s", method,
                  Took(now - t.started), absl::FormatDuration(t.timeout), why)),
              .failure = Failure::kTransport};
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
      return {.retryable = true,
              .status = absl::UnavailableError(absl::StrCat("momento: ", method, ": ", why)),
              .failure = Failure::kTransport};
    case CURLE_OUT_OF_MEMORY:
      if (t.error[0] == '\0') {
        // libcurl 7.x says no more when it refuses a header line over its 100 KiB limit.
        return {.status = absl::UnavailableError(absl::StrCat(
                    "momento: ", method,
                    ": libcurl gave up on the reply: a header line over its 100 KiB limit (not a "
                    "Momento reply), or out of memory; not retried"))};
      }
      return {.status = absl::UnavailableError(absl::StrCat("momento: ", method, ": ", why))};
    default:
      return {.status = absl::UnavailableError(absl::StrCat("momento: ", method, ": ", why))};
  }
}

std::string StatusMapping::Excerpt(std::string_view body, bool truncated) const {
  if (body.empty()) return "";
  std::string text = Redact(std::string(body));
  if (truncated) {
    for (std::size_t n = std::min(text.size(), api_key_.size() - 1); n > 0; --n) {
      if (absl::EndsWith(text, absl::string_view(api_key_).substr(0, n))) {
        text.resize(text.size() - n);
        break;
      }
    }
  }
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = ' ';
  }
  const absl::string_view shown = absl::StripAsciiWhitespace(text);
  return absl::StrCat(": ", shown.substr(0, kExcerptBytes));
}

std::string StatusMapping::Redact(std::string_view text) const {
  return absl::StrReplaceAll(absl::string_view(text.data(), text.size()),
                             {{api_key_, "<api key>"}});
}

}  // namespace chunkcache::momento
