// MomentoBackend: one HTTP request per item, run concurrently on a libcurl multi handle, with
// per-request retries under throttling. See chunkcache/momento_backend.h for the contract.

#include "chunkcache/momento_backend.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "chunkcache/version.h"
#include "internal/mutex.h"
#include "simdjson.h"

namespace chunkcache {
namespace {

// Bytes of an error reply kept for its message (plus the API key's length, so that a key starting
// within them is whole and redacted), and the most of them a message quotes.
constexpr std::size_t kErrorBodyBytes = 512;
constexpr std::size_t kExcerptBytes = 200;
// Longest wait in curl_multi_poll, so a scheduled retry is never late by much.
constexpr absl::Duration kMaxPollWait = absl::Milliseconds(100);
// Most bytes of response headers one attempt accepts, 1xx responses included. Momento's are a few
// hundred bytes; the cap stops a flood of headers or of "100 Continue" responses at once, before
// libcurl has buffered more than this.
constexpr std::size_t kMaxHeaderBytes = 64 << 10;
// How late after its deadline a call may find a request still running before it abandons it
// itself: libcurl's own timer (CURLOPT_TIMEOUT_MS, set to end at the deadline) normally ends it
// first, with its own message.
constexpr absl::Duration kDeadlineGrace = absl::Milliseconds(10);

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---- Small RAII owners of libcurl handles ------------------------------------------------------

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct ShareDeleter {
  void operator()(CURLSH* share) const { curl_share_cleanup(share); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;
using MultiHandle = std::unique_ptr<CURLM, MultiDeleter>;
using ShareHandle = std::unique_ptr<CURLSH, ShareDeleter>;
using HeaderList = std::unique_ptr<curl_slist, SlistDeleter>;

absl::Status AppendHeader(HeaderList& list, const std::string& header) {
  curl_slist* appended = curl_slist_append(list.get(), header.c_str());
  if (appended == nullptr) return absl::ResourceExhaustedError("momento: out of memory");
  list.release();
  list.reset(appended);
  return absl::OkStatus();
}

// libcurl requires one process-wide initialization before any handle is made.
void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// ---- Endpoint and key encoding
// -------------------------------------------------------------------

// True for a host, as libcurl's URL parser gives it (and as libcurl will connect to it), that
// can only be this machine: an IPv4 literal in 127.0.0.0/8, the IPv6 literal ::1 (in brackets),
// or exactly "localhost" (which libcurl resolves to loopback itself, without DNS). No prefix or
// suffix matching: "127.0.0.1.example.com" and "localhost.example.com" are names anyone can
// point anywhere. libcurl has already rewritten IPv4 short and hex forms ("127.1", "0x7f.1") to
// dotted decimal, so inet_pton's strict syntax checks the address libcurl will use.
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

std::string UrlPartOf(CURLU* url, CURLUPart part) {
  char* text = nullptr;
  if (curl_url_get(url, part, &text, 0) != CURLUE_OK || text == nullptr) return "";
  std::string result(text);
  curl_free(text);
  return result;
}

using UrlHandle = std::unique_ptr<CURLU, decltype(&curl_url_cleanup)>;

// `text` parsed by libcurl's URL parser, the one that libcurl itself uses for CURLOPT_URL.
absl::StatusOr<UrlHandle> ParseUrl(const std::string& text) {
  UrlHandle url(curl_url(), &curl_url_cleanup);
  if (url == nullptr) return absl::ResourceExhaustedError("momento: out of memory");
  if (text.empty() || curl_url_set(url.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK) {
    // Not quoted back: what was given may hold credentials.
    return absl::InvalidArgumentError(
        "chunkcache: MomentoBackendOptions::endpoint must be a URL such as "
        "https://api.cache.<cell>.prod.a.momentohq.com");
  }
  return url;
}

// The scheme and host libcurl will use for `url`, lowercased.
std::pair<std::string, std::string> SchemeAndHost(CURLU* url) {
  return {absl::AsciiStrToLower(UrlPartOf(url, CURLUPART_SCHEME)),
          absl::AsciiStrToLower(UrlPartOf(url, CURLUPART_HOST))};
}

// "https://host[:port][/path]" without a trailing slash; plain http only to a loopback host.
// Messages quote nothing of the endpoint: its user info, or a host, may hold a secret.
absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint) {
  absl::StatusOr<UrlHandle> url = ParseUrl(endpoint);
  if (!url.ok()) return url.status();
  if (!UrlPartOf(url->get(), CURLUPART_USER).empty() ||
      !UrlPartOf(url->get(), CURLUPART_PASSWORD).empty() ||
      !UrlPartOf(url->get(), CURLUPART_OPTIONS).empty() ||
      !UrlPartOf(url->get(), CURLUPART_QUERY).empty() ||
      !UrlPartOf(url->get(), CURLUPART_FRAGMENT).empty() ||
      !UrlPartOf(url->get(), CURLUPART_ZONEID).empty()) {
    return absl::InvalidArgumentError(
        "chunkcache: the Momento endpoint must not carry credentials, a query, a fragment or a "
        "zone id");
  }
  const auto [scheme, host] = SchemeAndHost(url->get());
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
  if (const std::string port = UrlPartOf(url->get(), CURLUPART_PORT); !port.empty()) {
    absl::StrAppend(&normalized, ":", port);
  }
  std::string path = UrlPartOf(url->get(), CURLUPART_PATH);
  while (!path.empty() && path.back() == '/') path.pop_back();
  absl::StrAppend(&normalized, path);

  // What libcurl will connect to is what the requests' URLs say: parse one back and check that
  // it names the scheme and host just checked.
  absl::StatusOr<UrlHandle> again = ParseUrl(absl::StrCat(normalized, "/cache/c?key=k"));
  if (!again.ok() || SchemeAndHost(again->get()) != std::make_pair(scheme, host)) {
    return absl::InvalidArgumentError(
        "chunkcache: the Momento endpoint does not read back as the same host");
  }
  return normalized;
}

bool IsUnreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

// The query parameter naming `key`: key= for printable UTF-8, key_base64= for anything else.
std::string KeyParameter(std::string_view key) {
  const bool printable = std::none_of(key.begin(), key.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7F;
  });
  if (printable && simdjson::validate_utf8(key.data(), key.size())) {
    return absl::StrCat("key=", PercentEncode(key));
  }
  return absl::StrCat("key_base64=", absl::WebSafeBase64Escape(AbslView(key)));
}

// ---- One HTTP request and its retries ----------------------------------------------------------

enum class Method { kGet, kPut, kDelete };

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

// A time taken, for a message: whole milliseconds ("477ms", "1.1s").
std::string Took(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

// When a call must end, and whose limit that is, for messages.
struct CallLimit {
  absl::Time start;
  absl::Time end;
  // The end is CallDeadline(), the chunkcache call's, rather than MomentoBackendOptions::deadline.
  bool callers = false;
  absl::Duration own = absl::ZeroDuration();  // MomentoBackendOptions::deadline

  // "the call's deadline" or "MomentoBackendOptions::deadline of 5s".
  std::string Name() const {
    return callers ? std::string("the call's deadline (CallOptions::deadline)")
                   : absl::StrCat("MomentoBackendOptions::deadline of ", absl::FormatDuration(own));
  }
};

struct Transfer {
  Method method = Method::kGet;
  std::string url;
  std::string_view body;  // PUT only

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

// What one finished attempt means.
struct Verdict {
  bool retryable = false;
  absl::Status status;  // final status if not retryable, or if no attempt is left
  bool found = false;
};

std::size_t OnBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  long code = 0;  // NOLINT(runtime/int): libcurl's type
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  if (t->method != Method::kGet || code != 200) {  // an error reply: keep its start for a message
    const std::size_t room = t->error_limit - std::min(t->error_limit, t->response.size());
    t->response.append(data, std::min(n, room));
    if (n <= room) return n;
    // Stop reading: the status code says what happened, and the rest of the body (which may be
    // endless) would only take time. The transfer ends with CURLE_WRITE_ERROR.
    t->error_truncated = true;
    return 0;
  }
  if (t->response.size() + n > t->response_limit) {
    t->response_too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  if (t->response.empty()) {  // size the buffer once, as far as the limit allows
    curl_off_t length = -1;
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (length > 0) t->response.reserve(std::min<std::size_t>(length, t->response_limit));
  }
  t->response.append(data, n);
  return n;
}

// Counts the bytes of every header line received; aborts the attempt beyond kMaxHeaderBytes.
std::size_t OnHeader(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<void>(data);
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  t->header_bytes += n;
  if (t->header_bytes > kMaxHeaderBytes) {
    t->headers_too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  return n;
}

}  // namespace

// ---- The backend -------------------------------------------------------------------------------

class MomentoBackend::Impl {
 public:
  explicit Impl(MomentoBackendOptions options) : options_(std::move(options)) {}

  absl::Status Init() {
    const MomentoBackendOptions& o = options_;
    if (o.cache_name.empty()) {
      return absl::InvalidArgumentError("chunkcache: MomentoBackendOptions::cache_name is empty");
    }
    if (o.request_timeout <= absl::ZeroDuration() || o.deadline <= absl::ZeroDuration() ||
        o.max_attempts < 1 || o.backoff_base < absl::ZeroDuration() ||
        o.backoff_cap < o.backoff_base || o.max_concurrent_requests < 1 || o.pool_size < 0) {
      return absl::InvalidArgumentError(
          "chunkcache: MomentoBackendOptions need positive timeouts, max_attempts and "
          "max_concurrent_requests, 0 <= backoff_base <= backoff_cap and pool_size >= 0");
    }
    if (o.max_item_size == 0 || o.max_item_size > kMomentoMaxValueBytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chunkcache: MomentoBackendOptions::max_item_size must be within 1..%d: Momento's "
          "%d-byte item limit counts the key as well as the value, and %d bytes are kept for "
          "the key (kMomentoKeyAllowance)",
          kMomentoMaxValueBytes, kMomentoMaxItemBytes, kMomentoKeyAllowance));
    }
    api_key_ = o.api_key;
    if (api_key_.empty()) {
      const char* from_env = std::getenv("MOMENTO_API_KEY");
      if (from_env != nullptr) api_key_ = from_env;
    }
    if (api_key_.empty()) {
      return absl::InvalidArgumentError(
          "chunkcache: Momento needs an API key: set MomentoBackendOptions::api_key or "
          "MOMENTO_API_KEY");
    }
    if (std::any_of(api_key_.begin(), api_key_.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; })) {
      return absl::InvalidArgumentError(
          "chunkcache: the Momento API key contains control characters");
    }
    InitCurlOnce();
    absl::StatusOr<std::string> endpoint = NormalizeEndpoint(o.endpoint);
    if (!endpoint.ok()) return endpoint.status();
    url_prefix_ = absl::StrCat(*endpoint, "/cache/", PercentEncode(o.cache_name), "?");

    const std::string auth = absl::StrCat("Authorization: ", api_key_);
    for (HeaderList* list : {&get_headers_, &put_headers_}) {
      if (absl::Status s = AppendHeader(*list, auth); !s.ok()) return s;
      if (absl::Status s = AppendHeader(
              *list, std::string("User-Agent: chunkcache/") + CHUNKCACHE_VERSION_STRING);
          !s.ok()) {
        return s;
      }
    }
    // Raw bytes, and no "Expect: 100-continue" round trip before a large body.
    for (const char* header : {"Content-Type: application/octet-stream", "Expect:"}) {
      if (absl::Status s = AppendHeader(put_headers_, header); !s.ok()) return s;
    }
    return InitShare();
  }

  std::size_t max_item_size() const { return options_.max_item_size; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) {
    std::vector<Transfer> transfers(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      transfers[i].method = Method::kGet;
      transfers[i].url = url_prefix_ + KeyParameter(keys[i]);
    }
    if (absl::Status s = Run(transfers); !s.ok()) return s;
    std::vector<std::optional<std::string>> values(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (transfers[i].found) values[i] = std::move(transfers[i].response);
    }
    return values;
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
    if (ttl <= absl::ZeroDuration() || ttl == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(
          "chunkcache: Momento items need a positive, finite time to live");
    }
    const std::int64_t ttl_seconds = absl::ToInt64Seconds(absl::Ceil(ttl, absl::Seconds(1)));
    std::vector<Transfer> transfers(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      const KeyValue& item = items[i];
      if (item.value.size() > options_.max_item_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("chunkcache: a %d-byte value exceeds the Momento max_item_size of %d",
                            item.value.size(), options_.max_item_size));
      }
      if (item.key.size() + item.value.size() > kMomentoMaxItemBytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chunkcache: a %d-byte key and a %d-byte value exceed Momento's item limit of %d "
            "bytes for key and value together (a key prefix longer than 1 KiB leaves full chunks "
            "no room)",
            item.key.size(), item.value.size(), kMomentoMaxItemBytes));
      }
      transfers[i].method = Method::kPut;
      transfers[i].url =
          absl::StrCat(url_prefix_, KeyParameter(item.key), "&ttl_seconds=", ttl_seconds);
      transfers[i].body = item.value;
    }
    return Run(transfers);
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) {
    std::vector<Transfer> transfers(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      transfers[i].method = Method::kDelete;
      transfers[i].url = url_prefix_ + KeyParameter(keys[i]);
    }
    return Run(transfers);
  }

  MomentoBackendStats Stats() const {
    MomentoBackendStats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.requests = requests_.load(std::memory_order_relaxed);
    s.retries = retries_.load(std::memory_order_relaxed);
    s.throttled = throttled_.load(std::memory_order_relaxed);
    s.server_errors = server_errors_.load(std::memory_order_relaxed);
    s.transport_errors = transport_errors_.load(std::memory_order_relaxed);
    s.connections_opened = connections_opened_.load(std::memory_order_relaxed);
    s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
    s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
    s.errors = errors_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  // A libcurl multi handle with its connection cache and reusable easy handles; used by one call
  // at a time.
  class Session {
   public:
    Session(Impl& backend, MultiHandle multi)
        : backend_(backend), multi_(std::move(multi)), random_(std::random_device{}()) {}
    ~Session() {
      multi_.reset();  // closes the cached connections; the easy handles are detached
      idle_.clear();
    }

    // Runs every transfer to an outcome. The first error that is final aborts the rest.
    absl::Status Run(std::vector<Transfer>& transfers, const CallLimit& limit) {
      absl::Status failure = absl::OkStatus();
      std::size_t unfinished = transfers.size();
      while (unfinished > 0 && failure.ok()) {
        absl::Time now = absl::Now();
        absl::Time next_start = absl::InfiniteFuture();
        for (Transfer& t : transfers) {
          if (t.done || t.active) continue;
          if (t.not_before > now) {  // a retry waiting out its backoff
            next_start = std::min(next_start, t.not_before);
            continue;
          }
          if (active_ == backend_.options_.max_concurrent_requests) continue;  // until one ends
          if (absl::Status s = Start(t, now, limit); !s.ok()) {
            failure = s;
            break;
          }
          if (t.done) --unfinished;  // the deadline had passed
        }
        if (!failure.ok()) break;
        int running = 0;
        if (curl_multi_perform(multi_.get(), &running) != CURLM_OK) {
          failure = absl::InternalError("momento: curl_multi_perform failed");
          break;
        }
        int queued = 0;
        bool slot_freed = false;
        while (CURLMsg* message = curl_multi_info_read(multi_.get(), &queued)) {
          if (message->msg != CURLMSG_DONE) continue;
          Transfer& t = Finish(message->easy_handle, message->data.result, limit);
          slot_freed = true;
          if (!t.done) continue;
          --unfinished;
          if (!t.status.ok() && failure.ok()) failure = t.status;
        }
        if (unfinished == 0 || !failure.ok()) break;
        if (slot_freed) continue;  // start what waited for a slot before waiting on sockets
        now = absl::Now();
        if (active_ > 0 && now > limit.end + kDeadlineGrace) {
          // libcurl should have ended these at the deadline; do not wait on it any longer.
          failure = absl::DeadlineExceededError(
              absl::StrFormat("momento: %d request%s not done by %s: gave up after %s", active_,
                              active_ == 1 ? "" : "s", limit.Name(), Took(now - limit.start)));
          break;
        }
        absl::Duration wait = kMaxPollWait;
        if (active_ == 0 || next_start != absl::InfiniteFuture()) {
          wait = std::clamp(next_start - now, absl::ZeroDuration(), kMaxPollWait);
        }
        // Wake up at the deadline (plus the grace) at the latest. libcurl's own timers shorten
        // the wait further whenever one of its transfers needs attention.
        wait = std::clamp(limit.end + kDeadlineGrace - now, absl::ZeroDuration(), wait);
        curl_multi_poll(
            multi_.get(), nullptr, 0,
            static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1)))),
            nullptr);
      }
      AbortActive(transfers);
      return failure;
    }

   private:
    absl::Status Start(Transfer& t, absl::Time now, const CallLimit& limit) {
      const absl::Duration left = limit.end - now;
      if (left < absl::Milliseconds(1)) {
        t.done = true;
        if (t.status.ok()) {  // never sent, e.g. waiting for a free slot
          t.status = absl::DeadlineExceededError(absl::StrFormat(
              "momento: %s not sent: %s had passed (%s after the backend call began)",
              MethodName(t.method), limit.Name(), Took(now - limit.start)));
        } else {  // a retry that the deadline came before: the last failure says what is wrong
          t.status = absl::Status(
              t.status.code(),
              absl::StrFormat("%s (%d attempt%s; %s came before the next)", t.status.message(),
                              t.attempts, t.attempts == 1 ? "" : "s", limit.Name()));
        }
        return t.status;
      }
      EasyHandle easy = TakeEasy();
      if (easy == nullptr) return absl::ResourceExhaustedError("momento: cannot create a handle");
      t.response.clear();
      t.response_too_large = false;
      t.error_limit = kErrorBodyBytes + backend_.api_key_.size();
      t.error_truncated = false;
      t.header_bytes = 0;
      t.headers_too_large = false;
      t.error[0] = '\0';
      t.response_limit = backend_.options_.max_item_size;
      t.easy = easy.get();
      // The request timeout, or what is left before the call's limit: rounded up to a whole
      // millisecond then, so that an attempt cut short ends at the limit, not just before it (a
      // caller checking its deadline on return must find it passed).
      t.started = now;
      t.timeout_is_deadline = left < backend_.options_.request_timeout;
      t.timeout = std::min(backend_.options_.request_timeout, left);
      const long timeout_ms = static_cast<long>(  // NOLINT(runtime/int)
          std::max<std::int64_t>(
              1, absl::ToInt64Milliseconds(t.timeout_is_deadline
                                               ? absl::Ceil(t.timeout, absl::Milliseconds(1))
                                               : t.timeout)));
      backend_.Configure(easy.get(), t, timeout_ms);
      if (curl_multi_add_handle(multi_.get(), easy.get()) != CURLM_OK) {
        return absl::InternalError("momento: curl_multi_add_handle failed");
      }
      easy.release();
      t.active = true;
      ++t.attempts;
      ++active_;
      return absl::OkStatus();
    }

    Transfer& Finish(CURL* easy, CURLcode result, const CallLimit& limit) {
      Transfer* t = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      long code = 0;  // NOLINT(runtime/int): libcurl's type
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
      long connects = 0;  // NOLINT(runtime/int)
      curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
      curl_multi_remove_handle(multi_.get(), easy);
      ReturnEasy(EasyHandle(easy));
      --active_;
      t->active = false;

      backend_.requests_.fetch_add(1, std::memory_order_relaxed);
      backend_.connections_opened_.fetch_add(static_cast<std::uint64_t>(connects),
                                             std::memory_order_relaxed);
      if (result == CURLE_OK) {
        backend_.bytes_sent_.fetch_add(t->body.size(), std::memory_order_relaxed);
        backend_.bytes_received_.fetch_add(t->response.size(), std::memory_order_relaxed);
      }
      Verdict verdict = backend_.Judge(*t, result, code, limit);
      if (absl::IsDeadlineExceeded(verdict.status) && t->timeout_is_deadline) {
        // Cut off at the call's limit: return no earlier than it (libcurl's clock and ours may
        // differ by a little), so that the caller sees its deadline passed, not time to spare.
        const absl::Duration early = limit.end - absl::Now();
        if (early > absl::ZeroDuration()) absl::SleepFor(std::min(early, kDeadlineGrace));
      }
      if (!verdict.retryable) {
        t->done = true;
        t->status = std::move(verdict.status);
        t->found = verdict.found;
        return *t;
      }
      t->status = std::move(verdict.status);  // what the caller gets if this was the last try
      const absl::Duration backoff = Backoff(t->attempts);
      const absl::Time now = absl::Now();
      if (t->attempts >= backend_.options_.max_attempts) {
        t->done = true;
        t->status = absl::Status(
            t->status.code(), absl::StrFormat("%s (%d attempt%s)", t->status.message(), t->attempts,
                                              t->attempts == 1 ? "" : "s"));
        return *t;
      }
      if (now + backoff + absl::Milliseconds(1) >= limit.end) {
        // No time for another attempt: the last failure says what is wrong.
        t->done = true;
        t->status = absl::Status(
            t->status.code(),
            absl::StrFormat("%s (%d attempt%s; no time for another before %s)", t->status.message(),
                            t->attempts, t->attempts == 1 ? "" : "s", limit.Name()));
        return *t;
      }
      backend_.retries_.fetch_add(1, std::memory_order_relaxed);
      t->not_before = now + backoff;
      return *t;
    }

    // Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].
    absl::Duration Backoff(int attempt) {
      const MomentoBackendOptions& o = backend_.options_;
      absl::Duration ceiling = o.backoff_base;
      for (int i = 1; i < attempt && ceiling < o.backoff_cap; ++i) ceiling *= 2;
      ceiling = std::min(ceiling, o.backoff_cap);
      std::uniform_int_distribution<std::int64_t> pick(0, absl::ToInt64Microseconds(ceiling));
      return absl::Microseconds(pick(random_));
    }

    void AbortActive(std::vector<Transfer>& transfers) {
      if (active_ == 0) return;
      for (Transfer& t : transfers) t.active = false;
      // The handles still attached are the aborted ones; their connections are not reused.
      std::vector<CURL*> attached;
      attached.reserve(active_);
      for (CURL* h : in_use_) attached.push_back(h);
      for (CURL* h : attached) {
        curl_multi_remove_handle(multi_.get(), h);
        ReturnEasy(EasyHandle(h));
      }
      active_ = 0;
    }

    EasyHandle TakeEasy() {
      EasyHandle easy;
      if (!idle_.empty()) {
        easy = std::move(idle_.back());
        idle_.pop_back();
        curl_easy_reset(easy.get());
      } else {
        easy.reset(curl_easy_init());
      }
      if (easy != nullptr) in_use_.push_back(easy.get());
      return easy;
    }

    void ReturnEasy(EasyHandle easy) {
      in_use_.erase(std::remove(in_use_.begin(), in_use_.end(), easy.get()), in_use_.end());
      idle_.push_back(std::move(easy));
    }

    Impl& backend_;
    MultiHandle multi_;
    std::vector<EasyHandle> idle_;
    std::vector<CURL*> in_use_;  // attached to multi_, owned by it until removed
    int active_ = 0;
    std::mt19937_64 random_;
  };

  absl::Status Run(std::vector<Transfer>& transfers) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    if (transfers.empty()) return absl::OkStatus();
    // The backend's own deadline, or the chunkcache call's if that comes first.
    const absl::Time start = absl::Now();
    CallLimit limit{.start = start, .end = start + options_.deadline, .own = options_.deadline};
    if (const absl::Time caller = CallDeadline(); caller < limit.end) {
      limit.end = caller;
      limit.callers = true;
    }
    absl::StatusOr<std::unique_ptr<Session>> session = TakeSession();
    absl::Status status = session.ok() ? (*session)->Run(transfers, limit) : session.status();
    if (session.ok()) ReturnSession(*std::move(session));
    if (!status.ok()) errors_.fetch_add(1, std::memory_order_relaxed);
    return status;
  }

  absl::StatusOr<std::unique_ptr<Session>> TakeSession() {
    {
      internal::MutexLock lock(&mu_);
      if (!idle_sessions_.empty()) {
        std::unique_ptr<Session> session = std::move(idle_sessions_.back());
        idle_sessions_.pop_back();
        return session;
      }
    }
    MultiHandle multi(curl_multi_init());
    if (multi == nullptr) return absl::ResourceExhaustedError("momento: cannot create a session");
    const long limit = options_.max_concurrent_requests;  // NOLINT(runtime/int)
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, limit);
    curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, limit);
    curl_multi_setopt(multi.get(), CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
    return std::make_unique<Session>(*this, std::move(multi));
  }

  void ReturnSession(std::unique_ptr<Session> session) {
    internal::MutexLock lock(&mu_);
    if (idle_sessions_.size() < static_cast<std::size_t>(options_.pool_size)) {
      idle_sessions_.push_back(std::move(session));
    }
  }

  void Configure(CURL* easy, Transfer& t, long timeout_ms) const {  // NOLINT(runtime/int)
    curl_easy_setopt(easy, CURLOPT_URL, t.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(easy, CURLOPT_SHARE, share_.get());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_bundle_path.empty()) {
      curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_bundle_path.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t.error.data());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
    if (t.method == Method::kGet) {
      curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                       static_cast<curl_off_t>(options_.max_item_size));
    }
    switch (t.method) {
      case Method::kGet:
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, get_headers_.get());
        break;
      case Method::kDelete:
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, get_headers_.get());
        break;
      case Method::kPut:
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t.body.data());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t.body.size()));
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, put_headers_.get());
        break;
    }
  }

  // Classifies one finished attempt. Messages carry the method and status, never the API key.
  Verdict Judge(const Transfer& t, CURLcode result, long code,  // NOLINT(runtime/int)
                const CallLimit& limit) {
    const char* method = MethodName(t.method);
    // An error reply whose body was cut short on purpose is judged by its status code.
    const bool cut_on_purpose = result == CURLE_WRITE_ERROR && t.error_truncated &&
                                !t.headers_too_large && !t.response_too_large;
    if (result != CURLE_OK && !cut_on_purpose) return JudgeTransport(t, result, limit);
    if (code == 200 || code == 204) {
      return {.status = absl::OkStatus(), .found = t.method == Method::kGet && code == 200};
    }
    const std::string detail = Excerpt(t);
    switch (code) {
      case 404:
        if (absl::StrContains(absl::AsciiStrToLower(t.response), "cache not found")) {
          return {.status = absl::NotFoundError(absl::StrCat(
                      "momento: cache \"", options_.cache_name,
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
                    options_.cache_name, "\"", detail))};
      case 413:
        return {.status = absl::InvalidArgumentError(
                    absl::StrCat("momento: item too large for the cache", detail))};
      case 429:
        throttled_.fetch_add(1, std::memory_order_relaxed);
        return {.retryable = true,
                .status = absl::ResourceExhaustedError(
                    absl::StrCat("momento: ", method, " throttled (HTTP 429)"))};
      default:
        break;
    }
    if (code >= 500 && code <= 599) {  // only these are server errors, worth another try
      server_errors_.fetch_add(1, std::memory_order_relaxed);
      return {.retryable = true,
              .status = absl::UnavailableError(
                  absl::StrCat("momento: ", method, " failed with HTTP ", code, detail))};
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

  Verdict JudgeTransport(const Transfer& t, CURLcode result, const CallLimit& limit) {
    const char* method = MethodName(t.method);
    if (t.response_too_large || result == CURLE_FILESIZE_EXCEEDED) {
      return {
          .status = absl::ResourceExhaustedError(absl::StrFormat(
              "momento: a GET reply exceeds max_item_size (%d bytes)", options_.max_item_size))};
    }
    if (t.headers_too_large) {
      transport_errors_.fetch_add(1, std::memory_order_relaxed);
      return {.status = absl::UnavailableError(absl::StrFormat(
                  "momento: %s reply headers exceed %d bytes (1xx responses included); not a "
                  "Momento reply, not retried",
                  method, kMaxHeaderBytes))};
    }
    const std::string why = Redact(t.error[0] != '\0' ? std::string(t.error.data())
                                                      : std::string(curl_easy_strerror(result)));
    const absl::Time now = absl::Now();
    switch (result) {
      case CURLE_OPERATION_TIMEDOUT:
        transport_errors_.fetch_add(1, std::memory_order_relaxed);
        if (t.timeout_is_deadline) {  // the attempt ran into the call's limit: no retry
          return {.status = absl::DeadlineExceededError(
                      absl::StrFormat("momento: %s not done by %s: gave up after %s (%d "
                                      "attempt%s; the last waited %s): %s",
                                      method, limit.Name(), Took(now - limit.start), t.attempts,
                                      t.attempts == 1 ? "" : "s", Took(now - t.started), why))};
        }
        return {.retryable = true,
                .status = absl::DeadlineExceededError(absl::StrFormat(
                    "momento: %s timed out after %s (request_timeout of %s): %s", method,
                    Took(now - t.started), absl::FormatDuration(t.timeout), why))};
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
        transport_errors_.fetch_add(1, std::memory_order_relaxed);
        return {.retryable = true,
                .status = absl::UnavailableError(absl::StrCat("momento: ", method, ": ", why))};
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

  // ": <start of the reply body>" for a message, printable and without the API key. The key is
  // redacted from all that was kept before anything is replaced or cut, so no cut or replaced
  // byte can split it; a start of the key cut off at the end of what was kept goes too.
  std::string Excerpt(const Transfer& t) const {
    if (t.response.empty()) return "";
    std::string text = Redact(t.response);
    if (t.error_truncated) {
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

  std::string Redact(std::string text) const {
    return absl::StrReplaceAll(text, {{api_key_, "<api key>"}});
  }

  // DNS results and TLS sessions are shared by all sessions, so a new session resumes TLS.
  absl::Status InitShare() {
    share_.reset(curl_share_init());
    if (share_ == nullptr) return absl::ResourceExhaustedError("momento: out of memory");
    curl_share_setopt(share_.get(), CURLSHOPT_LOCKFUNC, &LockShare);
    curl_share_setopt(share_.get(), CURLSHOPT_UNLOCKFUNC, &UnlockShare);
    curl_share_setopt(share_.get(), CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    return absl::OkStatus();
  }

  static void LockShare(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<Impl*>(user)->share_locks_[ShareSlot(data)].lock();
  }
  static void UnlockShare(CURL*, curl_lock_data data, void* user) {
    static_cast<Impl*>(user)->share_locks_[ShareSlot(data)].unlock();
  }
  static std::size_t ShareSlot(curl_lock_data data) {
    return std::min<std::size_t>(static_cast<std::size_t>(data), kShareLocks - 1);
  }

  static constexpr std::size_t kShareLocks = CURL_LOCK_DATA_LAST;

  const MomentoBackendOptions options_;
  std::string api_key_;
  std::string url_prefix_;  // endpoint + "/cache/{cache}?"
  HeaderList get_headers_;  // for GET and DELETE
  HeaderList put_headers_;
  std::array<std::mutex, kShareLocks> share_locks_;
  ShareHandle share_;  // after its locks: destroyed first

  internal::Mutex mu_;
  std::vector<std::unique_ptr<Session>> idle_sessions_ ABSL_GUARDED_BY(mu_);

  std::atomic<std::uint64_t> calls_{0}, requests_{0}, retries_{0}, throttled_{0}, server_errors_{0},
      transport_errors_{0}, connections_opened_{0}, bytes_sent_{0}, bytes_received_{0}, errors_{0};
};

MomentoBackend::MomentoBackend(MomentoBackendOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
MomentoBackend::~MomentoBackend() = default;

absl::Status MomentoBackend::Init() { return impl_->Init(); }
std::size_t MomentoBackend::max_item_size() const { return impl_->max_item_size(); }

absl::StatusOr<std::vector<std::optional<std::string>>> MomentoBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  return impl_->MultiGet(keys);
}

absl::Status MomentoBackend::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
  return impl_->MultiSet(items, ttl);
}

absl::Status MomentoBackend::Delete(absl::Span<const std::string_view> keys) {
  return impl_->Delete(keys);
}

MomentoBackendStats MomentoBackend::Stats() const { return impl_->Stats(); }

absl::StatusOr<std::shared_ptr<Backend>> NewMomentoBackend(MomentoBackendOptions options) {
  auto backend = std::make_shared<MomentoBackend>(std::move(options));
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return backend;
}

}  // namespace chunkcache
