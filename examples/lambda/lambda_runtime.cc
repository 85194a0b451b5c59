#include "lambda_runtime.h"

#include <curl/curl.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "internal/curl_handles.h"
#include "internal/json.h"
#include "internal/percent_encode.h"

namespace lambda {
namespace {

constexpr char kApiVersion[] = "/2018-06-01";
// The Runtime API is local: a connection it has not accepted by then will not be.
constexpr long kConnectTimeoutMs = 5000;  // NOLINT(runtime/int): libcurl's type
// Most bytes of a failed /next's body quoted in its error.
constexpr std::size_t kQuotedBody = 256;

using ::chunkcache::internal::JsonString;

std::string_view StdView(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// `text` for a log line: bytes outside printable ASCII as \xNN.
std::string Printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out.push_back(c);
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    }
  }
  return out;
}

std::string ErrorBody(const absl::Status& status) {
  return absl::StrCat("{\"errorMessage\":", JsonString(StdView(status.message())),
                      ",\"errorType\":", JsonString(ErrorType(status)), ",\"stackTrace\":[]}");
}

using EasyHandle = ::chunkcache::internal::CurlEasy;
using HeaderList = ::chunkcache::internal::CurlHeaders;

HeaderList Headers(std::initializer_list<std::string> lines) {
  curl_slist* list = nullptr;
  for (const std::string& line : lines) list = curl_slist_append(list, line.c_str());
  return HeaderList(list);
}

// What an HTTP exchange with the Runtime API brought back.
struct Reply {
  long status = 0;  // NOLINT(runtime/int): libcurl's type
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  bool too_large = false;
  std::size_t limit = 0;

  std::string Header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) return value;
    }
    return "";
  }
};

std::size_t OnBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* reply = static_cast<Reply*>(user);
  const std::size_t n = size * count;
  if (reply->body.size() + n > reply->limit) {
    reply->too_large = true;
    return 0;
  }
  reply->body.append(data, n);
  return n;
}

std::size_t OnHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* reply = static_cast<Reply*>(user);
  const std::size_t n = size * count;
  const absl::string_view line(data, n);
  const std::size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    reply->headers.emplace_back(absl::AsciiStrToLower(line.substr(0, colon)),
                                std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  return n;
}

// Feeds a streamed response to libcurl piece by piece, and its error trailers at the end.
class StreamSource {
 public:
  StreamSource(const Response& response, std::size_t piece) : response_(response), piece_(piece) {}

  static std::size_t Read(char* buffer, std::size_t size, std::size_t count, void* user) {
    return static_cast<StreamSource*>(user)->Fill(buffer, size * count);
  }

  static int Trailers(curl_slist** list, void* user) {
    auto* self = static_cast<StreamSource*>(user);
    if (self->error_.ok()) return CURL_TRAILERFUNC_OK;
    *list = curl_slist_append(
        *list,
        absl::StrCat("Lambda-Runtime-Function-Error-Type: ", ErrorType(self->error_)).c_str());
    *list = curl_slist_append(*list, absl::StrCat("Lambda-Runtime-Function-Error-Body: ",
                                                  absl::Base64Escape(ErrorBody(self->error_)))
                                         .c_str());
    return CURL_TRAILERFUNC_OK;
  }

  const absl::Status& error() const { return error_; }
  std::size_t sent() const { return sent_; }
  // When libcurl took the body's first byte; InfiniteFuture() before.
  absl::Time first_byte() const { return first_byte_; }

 private:
  std::size_t Fill(char* buffer, std::size_t room) {
    while (current_.empty() && !done_) Advance();
    const std::size_t n = std::min(room, current_.size());
    std::copy_n(current_.data(), n, buffer);
    current_.remove_prefix(n);
    if (sent_ == 0 && n > 0) first_byte_ = absl::Now();
    sent_ += n;
    return n;  // 0 ends the body
  }

  void Advance() {
    if (!response_.next_piece) {  // stream the shared body in pieces
      const std::string& body = response_.body != nullptr ? *response_.body : empty_;
      current_ = std::string_view(body).substr(offset_, piece_);
      offset_ += current_.size();
      done_ = current_.empty();
      return;
    }
    absl::StatusOr<std::string_view> next = [&]() -> absl::StatusOr<std::string_view> {
      try {
        return response_.next_piece();
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("the stream producer threw: ", e.what()));
      }
    }();
    if (!next.ok()) {
      error_ = next.status();
      done_ = true;
      return;
    }
    current_ = *next;
    done_ = current_.empty();
  }

  const Response& response_;
  const std::size_t piece_;
  const std::string empty_;
  std::string_view current_;
  std::size_t offset_ = 0;
  std::size_t sent_ = 0;
  absl::Time first_byte_ = absl::InfiniteFuture();
  bool done_ = false;
  absl::Status error_;
};

}  // namespace

std::string EscapePathSegment(std::string_view request_id) {
  return chunkcache::internal::PercentEncode(request_id, [](unsigned char c) {
    return c != '.' && chunkcache::internal::IsUrlUnreserved(c);
  });
}

std::string ErrorType(const absl::Status& status) {
  std::string out;
  bool upper = true;
  for (const char c : absl::StatusCodeToString(status.code())) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper ? c : absl::ascii_tolower(static_cast<unsigned char>(c)));
    upper = false;
  }
  return out;
}

Response Response::Buffered(std::string body, std::string content_type) {
  Response response;
  response.body = std::make_shared<const std::string>(std::move(body));
  response.content_type = std::move(content_type);
  return response;
}

Response Response::Streamed(std::shared_ptr<const std::string> body, std::string content_type) {
  Response response;
  response.body = std::move(body);
  response.content_type = std::move(content_type);
  response.streaming = true;
  return response;
}

class Runtime::Impl {
 public:
  explicit Impl(RuntimeOptions options) : options_(std::move(options)) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (options_.api.empty()) {
      const char* api = getenv("AWS_LAMBDA_RUNTIME_API");
      options_.api = api != nullptr ? api : "";
    }
    base_ = absl::StrCat("http://", options_.api, kApiVersion);
  }

  absl::Status ReportInitError(const absl::Status& error) {
    if (options_.api.empty()) return absl::FailedPreconditionError("AWS_LAMBDA_RUNTIME_API unset");
    EasyHandle easy(curl_easy_init());
    const std::string body = ErrorBody(error);
    HeaderList headers = Headers({"Content-Type: application/json",
                                  "Lambda-Runtime-Function-Error-Type: " + ErrorType(error)});
    Reply reply;
    return Post(easy.get(), base_ + "/runtime/init/error", body, headers.get(), reply);
  }

  absl::Status Run(const Handler& handler) {
    if (options_.api.empty()) {
      return absl::FailedPreconditionError("lambda: AWS_LAMBDA_RUNTIME_API is not set");
    }
    const int threads = std::max(1, options_.threads);
    const auto body = [&] {
      absl::Status status;
      try {
        status = Loop(handler, threads == 1);
      } catch (const std::exception& e) {
        status = absl::InternalError(absl::StrCat("lambda: a runtime thread threw: ", e.what()));
      } catch (...) {
        status = absl::InternalError("lambda: a runtime thread threw a non-standard exception");
      }
      if (!status.ok()) Stop(status);
    };
    {
      std::vector<std::jthread> workers;
      for (int t = 1; t < threads; ++t) workers.emplace_back(body);
      body();
    }
    std::lock_guard<std::mutex> lock(stop_mu_);
    return stop_status_;
  }

 private:
  // Ends every thread's loop (the first error is the one Run returns): a thread that cannot go on
  // takes the others with it, so the process exits instead of serving with fewer threads.
  void Stop(const absl::Status& why) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      if (stopping_.load()) return;
      stop_status_ = why;
      stopping_.store(true);
    }
    stop_cv_.notify_all();
    Log(absl::StrCat("lambda: stopping every runtime thread: ", why.message()));
  }

  void Log(const std::string& line) {
    if (options_.log) {
      options_.log(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

  // libcurl's progress callback: aborts a transfer (a long poll, typically) once Stop was called.
  // libcurl calls it about once a second while a transfer waits.
  static int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<Impl*>(user)->stopping_.load() ? 1 : 0;
  }

  // One thread's loop: next → handler → response or error.
  absl::Status Loop(const Handler& handler, bool single_thread) {
    EasyHandle easy(curl_easy_init());  // one connection per thread, kept alive
    if (easy == nullptr) return absl::ResourceExhaustedError("lambda: cannot create a handle");
    while (!stopping_.load()) {
      if (options_.max_invocations > 0 &&
          claimed_.fetch_add(1, std::memory_order_relaxed) >= options_.max_invocations) {
        return absl::OkStatus();
      }
      bool oversize_event = false;
      absl::StatusOr<Invocation> invocation = NextWithRetries(easy.get(), oversize_event);
      if (!invocation.ok()) return invocation.status();
      if (single_thread) {
        // The X-Ray trace header for code that reads it from the environment. With several
        // threads the environment cannot hold one per invocation: use Invocation::trace_id.
        setenv("_X_AMZN_TRACE_ID", invocation->trace_id.c_str(), 1);
      }
      const absl::Time start = absl::Now();
      Outcome outcome = Serve(easy.get(), handler, *invocation, oversize_event, start);
      outcome.duration = absl::Now() - start;
      if (options_.after_invocation) options_.after_invocation(*invocation, outcome);
    }
    return absl::OkStatus();  // another thread stopped the runtime; Run returns its error
  }

  // The next event, retrying a failed /next with backoff until give_up_after. An error means
  // give up (or the runtime is stopping).
  absl::StatusOr<Invocation> NextWithRetries(CURL* easy, bool& oversize) {
    absl::Duration backoff = options_.next_retry_initial;
    absl::Time first_failure;
    int failures = 0;
    while (true) {
      absl::StatusOr<Invocation> invocation = Next(easy, oversize);
      if (stopping_.load()) return absl::CancelledError("lambda: the runtime is stopping");
      if (invocation.ok()) {
        if (failures > 0) {
          Log(absl::StrFormat("lambda: GET /next succeeded again after %d failure%s over %d ms",
                              failures, failures == 1 ? "" : "s",
                              absl::ToInt64Milliseconds(absl::Now() - first_failure)));
        }
        return invocation;
      }
      const absl::Time now = absl::Now();
      if (failures++ == 0) first_failure = now;
      const absl::Duration failing = now - first_failure;
      const absl::Duration left = options_.give_up_after - failing;
      const std::string what =
          absl::StrFormat("%s (failure %d in a row, for %d ms)", invocation.status().message(),
                          failures, absl::ToInt64Milliseconds(failing));
      if (left <= absl::ZeroDuration()) {  // Stop() logs it
        return absl::UnavailableError(absl::StrCat(what, ": giving up"));
      }
      const absl::Duration wait = std::min(backoff, left);
      Log(absl::StrFormat("%s: retrying in %d ms", what, absl::ToInt64Milliseconds(wait)));
      {
        std::unique_lock<std::mutex> lock(stop_mu_);
        stop_cv_.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return stopping_.load(); });
      }
      if (stopping_.load()) return absl::CancelledError("lambda: the runtime is stopping");
      backoff =
          std::min(backoff * 2, std::max(options_.next_retry_max, options_.next_retry_initial));
    }
  }

  // The next event. `oversize` says its payload exceeded max_event_size (and was dropped).
  absl::StatusOr<Invocation> Next(CURL* easy, bool& oversize) {
    Reply reply;
    reply.limit = options_.max_event_size;
    curl_easy_reset(easy);
    const std::string url = base_ + "/runtime/invocation/next";
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 0L);  // a long poll: no timeout
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, this);
    const CURLcode code = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &reply.status);
    Invocation invocation;
    invocation.request_id = reply.Header("lambda-runtime-aws-request-id");
    if (code != CURLE_OK && !reply.too_large) {
      return absl::UnavailableError(absl::StrCat("lambda: GET /next: ", curl_easy_strerror(code)));
    }
    if (reply.status != 200) {
      return absl::UnavailableError(
          absl::StrCat("lambda: GET /next: HTTP ", reply.status, ": ",
                       Printable(std::string_view(reply.body).substr(0, kQuotedBody))));
    }
    if (invocation.request_id.empty()) {
      return absl::UnavailableError("lambda: GET /next: HTTP 200 without a request id");
    }
    invocation.payload = std::move(reply.body);
    invocation.trace_id = reply.Header("lambda-runtime-trace-id");
    invocation.function_arn = reply.Header("lambda-runtime-invoked-function-arn");
    std::int64_t deadline_ms = 0;
    invocation.deadline = absl::SimpleAtoi(reply.Header("lambda-runtime-deadline-ms"), &deadline_ms)
                              ? absl::FromUnixMillis(deadline_ms)
                              : absl::InfiniteFuture();
    if (reply.too_large) {
      invocation.payload.clear();
      oversize = true;
    }
    return invocation;
  }

  // `start`: when /next answered, for Outcome::time_to_first_byte.
  Outcome Serve(CURL* easy, const Handler& handler, const Invocation& invocation,
                bool oversize_event, absl::Time start) {
    Outcome outcome;
    absl::StatusOr<Response> response = [&]() -> absl::StatusOr<Response> {
      if (oversize_event) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "the event exceeds %d bytes, this runtime's max_event_size", options_.max_event_size));
      }
      try {
        return handler(invocation);
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("the handler threw: ", e.what()));
      } catch (...) {
        return absl::InternalError("the handler threw a non-standard exception");
      }
    }();
    if (response.ok() && !response->streaming && response->body != nullptr &&
        response->body->size() > kMaxBufferedResponse) {
      response = absl::ResourceExhaustedError(
          absl::StrFormat("a %d-byte response exceeds Lambda's %d-byte buffered limit; stream it",
                          response->body->size(), kMaxBufferedResponse));
    }
    const std::string prefix =
        absl::StrCat(base_, "/runtime/invocation/", EscapePathSegment(invocation.request_id));
    if (!response.ok()) {
      outcome.status = response.status();
      const std::string body = ErrorBody(response.status());
      HeaderList headers =
          Headers({"Content-Type: application/json",
                   "Lambda-Runtime-Function-Error-Type: " + ErrorType(response.status())});
      Reply reply;
      if (absl::Status s = Post(easy, prefix + "/error", body, headers.get(), reply); !s.ok()) {
        outcome.status = s;
      }
      return outcome;
    }
    outcome.streamed = response->streaming;
    Reply reply;
    absl::Status posted;
    if (response->streaming) {
      // A fresh handle per stream: libcurl 7.88 corrupts memory when a handle that already sent a
      // chunked upload sends another (seen under valgrind), so the connection is not reused here.
      EasyHandle stream_easy(curl_easy_init());
      if (stream_easy == nullptr) {
        outcome.status = absl::ResourceExhaustedError("lambda: cannot create a handle");
        return outcome;
      }
      StreamSource source(*response, options_.stream_piece);
      posted = PostStream(stream_easy.get(), prefix + "/response", *response, source, reply);
      outcome.response_bytes = source.sent();
      if (source.sent() > 0) outcome.time_to_first_byte = source.first_byte() - start;
      if (posted.ok()) posted = source.error();
    } else {
      const std::string_view body =
          response->body != nullptr ? std::string_view(*response->body) : std::string_view();
      HeaderList headers = Headers({"Content-Type: " + response->content_type});
      if (!body.empty()) outcome.time_to_first_byte = absl::Now() - start;
      posted = Post(easy, prefix + "/response", body, headers.get(), reply);
      outcome.response_bytes = body.size();
    }
    outcome.status = posted;
    return outcome;
  }

  absl::Status Post(CURL* easy, const std::string& url, std::string_view body, curl_slist* headers,
                    Reply& reply) {
    reply.limit = 64 * 1024;
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    return Perform(easy, url, reply);
  }

  absl::Status PostStream(CURL* easy, const std::string& url, const Response& response,
                          StreamSource& source, Reply& reply) {
    reply.limit = 64 * 1024;
    HeaderList headers =
        Headers({"Content-Type: " + response.content_type,
                 "Lambda-Runtime-Function-Response-Mode: streaming", "Transfer-Encoding: chunked",
                 "Trailer: Lambda-Runtime-Function-Error-Type, "
                 "Lambda-Runtime-Function-Error-Body",
                 "Expect:"});
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_READFUNCTION, &StreamSource::Read);
    curl_easy_setopt(easy, CURLOPT_READDATA, &source);
    curl_easy_setopt(easy, CURLOPT_TRAILERFUNCTION, &StreamSource::Trailers);
    curl_easy_setopt(easy, CURLOPT_TRAILERDATA, &source);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());
    return Perform(easy, url, reply);
  }

  absl::Status Perform(CURL* easy, const std::string& url, Reply& reply) {
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 60'000L);
    const CURLcode code = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &reply.status);
    if (code != CURLE_OK) {
      return absl::UnavailableError(
          absl::StrCat("lambda: POST ", url, " failed: ", curl_easy_strerror(code)));
    }
    if (reply.status != 202) {
      return absl::UnavailableError(
          absl::StrCat("lambda: POST ", url, " answered ", reply.status, ": ", reply.body));
    }
    return absl::OkStatus();
  }

  RuntimeOptions options_;
  std::string base_;  // http://host:port/2018-06-01
  std::atomic<int> claimed_{0};
  // Set once by Stop(); every loop, backoff wait and long poll ends when it is.
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  absl::Status stop_status_;  // guarded by stop_mu_
};

Runtime::Runtime(RuntimeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Runtime::~Runtime() = default;

absl::Status Runtime::ReportInitError(const absl::Status& error) {
  return impl_->ReportInitError(error);
}

absl::Status Runtime::Run(const Handler& handler) { return impl_->Run(handler); }

}  // namespace lambda
