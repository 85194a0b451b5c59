// What a finished HTTP attempt to Momento means: an absl::Status (see chunkcache/momento_backend.h
// for the table of codes), whether another attempt may help, and which failure counter it adds
// to. Every message is free of the API key: reply bodies and libcurl's error text are redacted
// before they are quoted, and an error reply is quoted from its first bytes only.
//
//   const momento::StatusMapping mapping(options.cache_name, api_key, options.max_item_size);
//   transfer.error_limit = mapping.error_body_limit();  // before the attempt
//   momento::Verdict verdict = mapping.Judge(transfer, result, http_code, limit);
//   if (verdict.retryable) ...
//
// Thread safety: a StatusMapping is immutable, so safe for concurrent use.

#ifndef CHUNKCACHE_SRC_BACKENDS_MOMENTO_STATUS_MAPPING_H_
#define CHUNKCACHE_SRC_BACKENDS_MOMENTO_STATUS_MAPPING_H_

#include <curl/curl.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "backends/momento/request.h"

namespace chunkcache::momento {

// Most bytes of response headers one attempt accepts, 1xx responses included. Momento's are a few
// hundred bytes; the cap stops a flood of headers or of "100 Continue" responses at once, before
// libcurl has buffered more than this.
inline constexpr std::size_t kMaxHeaderBytes = 64 << 10;

// When a call must end, and whose limit that is, for messages.
struct CallLimit {
  absl::Time start;
  absl::Time end;
  // The end is CallDeadline(), the chunkcache call's, rather than MomentoBackendOptions::deadline.
  bool callers = false;
  absl::Duration own = absl::ZeroDuration();  // MomentoBackendOptions::deadline

  // "the call's deadline (CallOptions::deadline)" or "MomentoBackendOptions::deadline of 5s".
  std::string Name() const;
};

// The failure counter of MomentoBackendStats that an attempt adds to, if any.
enum class Failure { kNone, kThrottled, kServerError, kTransport };

// What one finished attempt means.
struct Verdict {
  bool retryable = false;
  absl::Status status;  // final status if not retryable, or if no attempt is left
  bool found = false;   // a GET answered 200: Transfer::response holds the value
  Failure failure = Failure::kNone;
};

// A time taken, for a message: whole milliseconds ("477ms", "1.1s").
std::string Took(absl::Duration d);

// `status` with its message followed by " (N attempt[s][; `why`])".
absl::Status WithAttempts(const absl::Status& status, int attempts, std::string_view why = "");

class StatusMapping {
 public:
  // `cache_name` is named in NotFound and PermissionDenied messages; `max_item_size` in the
  // message of a GET reply over it; `api_key` (not empty) is never shown.
  StatusMapping(std::string cache_name, std::string api_key, std::size_t max_item_size);

  // Bytes of an error reply to keep for its message: 512 plus the API key's length, so that a key
  // starting within the 512 is kept whole and so redacted.
  std::size_t error_body_limit() const;

  // Classifies the attempt `t` just finished: `result` is libcurl's, `http_code` the response
  // code (0 if none arrived), `limit` the call's. Reads t.method, t.attempts, t.response and the
  // flags and timings of the attempt.
  Verdict Judge(const Transfer& t, CURLcode result, long http_code,  // NOLINT(runtime/int)
                const CallLimit& limit) const;

  // `text` with every occurrence of the API key replaced by "<api key>".
  std::string Redact(std::string_view text) const;

  // ": <start of the reply body>" for a message (empty for an empty body): printable ASCII, at most
  // 200 bytes, and without the API key. The key is redacted from the whole of `body` before
  // anything is replaced or cut; when `truncated` (the body was cut at error_body_limit()), a start
  // of the key at its very end is dropped too.
  std::string Excerpt(std::string_view body, bool truncated) const;

 private:
  Verdict JudgeTransport(const Transfer& t, CURLcode result, const CallLimit& limit) const;

  const std::string cache_name_;
  const std::string api_key_;
  const std::size_t max_item_size_;
};

}  // namespace chunkcache::momento

#endif  // CHUNKCACHE_SRC_BACKENDS_MOMENTO_STATUS_MAPPING_H_
