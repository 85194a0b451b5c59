// A small AWS Lambda custom-runtime loop over libcurl, no AWS SDK: the Runtime API
// (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) spoken directly.
//
//   lambda::Runtime runtime({.threads = 1});
//   absl::Status done = runtime.Run([&](const lambda::Invocation& invocation) {
//     return lambda::Response::Buffered(R"({"hello":"world"})");
//   });
//
// Each thread loops: GET /runtime/invocation/next (long poll) → handler → POST the response
// (buffered, at most 6 MB, or streamed with chunked transfer encoding beyond that) or POST /error
// with {"errorMessage","errorType"}. A handler that returns an error status or throws becomes an
// invocation error; the process keeps serving. Several threads may run the loop at once (Lambda
// managed instances allow up to AWS_LAMBDA_MAX_CONCURRENCY concurrent /next calls).
//
// A failed /next (an error status, a broken connection) is logged and retried with backoff. If a
// thread's /next keeps failing for RuntimeOptions::give_up_after, or a thread cannot go on for any
// other reason, every thread stops and Run returns that error, so the process can exit and the
// platform start a fresh environment: never fewer threads serving without a word. The request id
// is percent-encoded in the /response and /error URLs, so no id can name another path.
//
// Thread safety: Run may be called once; the handler is called from the runtime's threads
// concurrently and must be thread-safe when threads > 1.

#ifndef CHUNKCACHE_EXAMPLES_LAMBDA_LAMBDA_RUNTIME_H_
#define CHUNKCACHE_EXAMPLES_LAMBDA_LAMBDA_RUNTIME_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lambda {

// Lambda's limit on a buffered response: 6 MB.
inline constexpr std::size_t kMaxBufferedResponse = 6 * 1024 * 1024;

struct Invocation {
  std::string request_id;    // Lambda-Runtime-Aws-Request-Id
  std::string payload;       // the event, as sent
  absl::Time deadline;       // Lambda-Runtime-Deadline-Ms
  std::string trace_id;      // Lambda-Runtime-Trace-Id (also in _X_AMZN_TRACE_ID with one thread)
  std::string function_arn;  // Lambda-Runtime-Invoked-Function-Arn
};

struct Response {
  // The body, shared so that a cached payload is sent without a copy.
  std::shared_ptr<const std::string> body;
  std::string content_type = "application/json";
  // Send with response streaming (chunked transfer encoding, up to Lambda's 200 MB soft limit)
  // instead of buffered (6 MB at most).
  bool streaming = false;
  // For streaming: pieces of the body produced on the fly, until an empty view (the end); a piece
  // must stay valid until the next call. An error ends the stream and is reported in the
  // Lambda-Runtime-Function-Error-Type/-Body trailers, so the invocation fails even after part of
  // the body went out. Empty: `body` is streamed.
  std::function<absl::StatusOr<std::string_view>()> next_piece;

  static Response Buffered(std::string body, std::string content_type = "application/json");
  static Response Streamed(std::shared_ptr<const std::string> body,
                           std::string content_type = "application/json");
};

using Handler = std::function<absl::StatusOr<Response>(const Invocation&)>;

// What became of one invocation, for logging and metrics.
struct Outcome {
  absl::Status status;    // the handler's error, or a failure to post the response
  bool streamed = false;  // sent with response streaming
  std::size_t response_bytes = 0;
  absl::Duration duration;  // from /next's answer to the response posted
  // From /next's answer to the first byte of the body handed to the Runtime API connection: a
  // streamed body's first piece read by libcurl, a buffered body's POST starting. Infinite if no
  // body byte went out (an /error, an empty body).
  absl::Duration time_to_first_byte = absl::InfiniteDuration();
};

struct RuntimeOptions {
  // host:port of the Runtime API. Default: empty, meaning AWS_LAMBDA_RUNTIME_API.
  std::string api;
  // Threads running the loop. Default: 1.
  int threads = 1;
  // Bytes sent per chunk of a streamed response. Default: 256 KiB.
  std::size_t stream_piece = 256 * 1024;
  // Largest event accepted from /next (memory bound); a larger one is answered with an error.
  // Default: 8 MiB (Lambda's synchronous payload limit is 6 MB).
  std::size_t max_event_size = 8 * 1024 * 1024;
  // Stop after this many invocations (all threads together); 0 = serve forever. For tests.
  int max_invocations = 0;
  // Called after each invocation, from the thread that served it.
  std::function<void(const Invocation&, const Outcome&)> after_invocation;

  // Wait before retrying a failed /next; doubled after each further failure in a row, up to
  // next_retry_max. Defaults: 10 ms and 1 s.
  absl::Duration next_retry_initial = absl::Milliseconds(10);
  absl::Duration next_retry_max = absl::Seconds(1);
  // How long one thread's /next may keep failing (from the first failure in a row) before the
  // runtime gives up: every thread stops (a long poll in progress within about a second) and Run
  // returns the last error. Zero gives up at the first failure. Default: 10 s.
  absl::Duration give_up_after = absl::Seconds(10);
  // Where the runtime's own log lines go (one call per line, no newline; from any thread): each
  // failed /next, /next working again, giving up. The backoff bounds them to about 17 per thread
  // in a failing run at the defaults. Default (empty): a line on stderr.
  std::function<void(std::string_view line)> log;
};

class Runtime {
 public:
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Reports a failed initialization (POST /runtime/init/error); the process should then exit.
  absl::Status ReportInitError(const absl::Status& error);

  // Serves invocations until max_invocations (OK) or until a thread cannot go on: /next failing
  // for give_up_after, a handle that cannot be created, an exception from after_invocation. Then
  // every thread stops and the first such error is returned.
  absl::Status Run(const Handler& handler);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// "INVALID_ARGUMENT" → "InvalidArgument": the errorType reported for a handler status.
std::string ErrorType(const absl::Status& status);

// `request_id` as one URL path segment: every byte except ASCII letters, digits, '-', '_' and '~'
// percent-encoded ('.' too, so that "." and ".." cannot be dot segments).
std::string EscapePathSegment(std::string_view request_id);

}  // namespace lambda

#endif  // CHUNKCACHE_EXAMPLES_LAMBDA_LAMBDA_RUNTIME_H_
