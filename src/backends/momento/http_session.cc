#include "backends/momento/http_session.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "chunkcache/backend.h"
#include "internal/backoff.h"
#include "internal/curl_handles.h"

namespace chunkcache::momento {
namespace {

// Longest wait in curl_multi_poll, so a scheduled retry is never late by much.
constexpr absl::Duration kMaxPollWait = absl::Milliseconds(100);
// How late after its deadline a call may find a request still running before it abandons it
// itself: libcurl's own timer (CURLOPT_TIMEOUT_MS, set to end at the deadline) normally ends it
// first, with its own message.
constexpr absl::Duration kDeadlineGrace = absl::Milliseconds(10);

using EasyHandle = internal::CurlEasy;
using MultiHandle = internal::CurlMulti;

// libcurl requires one process-wide initialization before any handle is made.
void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

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

// Options of a pool of objects that are made by the caller, keeping up to `max_idle` of them.
template <typename T>
typename internal::ObjectPool<T>::Options KeepIdle(std::size_t max_idle) {
  typename internal::ObjectPool<T>::Options options;
  options.max_idle = max_idle;
  return options;
}

}  // namespace

// A libcurl multi handle with its connection cache and reusable easy handles; used by one call
// at a time.
class HttpClient::Session {
 public:
  Session(HttpClient& client, MultiHandle multi) : client_(client), multi_(std::move(multi)) {}
  ~Session() {
    multi_.reset();  // closes the cached connections; the easy handles are detached
    idle_.clear();
  }

  // Runs every transfer to an outcome, telling `on_done` of those that end well. The first error
  // that is final, or that `on_done` returns (then *stopped_by_caller is set), aborts the rest.
  absl::Status Run(std::vector<Transfer>& transfers, const CallLimit& limit,
                   const TransferDone& on_done, bool* stopped_by_caller) {
    // Detaches what is still running however this ends, an exception from `on_done` included.
    absl::Cleanup abort_active = [&] { AbortActive(transfers); };
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
        if (active_ == client_.options_.max_concurrent_requests) continue;  // until one ends
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
        if (!failure.ok()) continue;  // the call is over: tell `on_done` of nothing more
        if (!t.status.ok()) {
          failure = t.status;
        } else if (on_done) {
          failure = on_done(static_cast<std::size_t>(&t - transfers.data()));
          *stopped_by_caller = !failure.ok();
        }
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
    return failure;
  }

 private:
  absl::Status Start(Transfer& t, absl::Time now, const CallLimit& limit) {
    const absl::Duration left = limit.end - now;
    if (left < absl::Milliseconds(1)) {
      t.done = true;
      if (t.status.ok()) {  // never sent, e.g. waiting for a free slot
        t.status = absl::DeadlineExceededError(
            absl::StrFormat("momento: %s not sent: %s had passed (%s after the backend call began)",
                            MethodName(t.method), limit.Name(), Took(now - limit.start)));
      } else {  // a retry that the deadline came before: the last failure says what is wrong
        t.status = WithAttempts(t.status, t.attempts, limit.Name() + " came before the next");
      }
      return t.status;
    }
    EasyHandle easy = TakeEasy();
    if (easy == nullptr) return absl::ResourceExhaustedError("momento: cannot create a handle");
    const MomentoBackendOptions& options = client_.options_;
    t.response.clear();
    t.response_too_large = false;
    t.error_limit = client_.mapping_.error_body_limit();
    t.error_truncated = false;
    t.header_bytes = 0;
    t.headers_too_large = false;
    t.error[0] = '\0';
    t.response_limit = options.max_item_size;
    t.easy = easy.get();
    // The request timeout, or what is left before the call's limit: rounded up to a whole
    // millisecond then, so that an attempt cut short ends at the limit, not just before it (a
    // caller checking its deadline on return must find it passed).
    t.started = now;
    t.timeout_is_deadline = left < options.request_timeout;
    t.timeout = std::min(options.request_timeout, left);
    const long timeout_ms = static_cast<long>(  // NOLINT(runtime/int)
        std::max<std::int64_t>(
            1, absl::ToInt64Milliseconds(t.timeout_is_deadline
                                             ? absl::Ceil(t.timeout, absl::Milliseconds(1))
                                             : t.timeout)));
    Configure(easy.get(), t, timeout_ms);
    if (curl_multi_add_handle(multi_.get(), easy.get()) != CURLM_OK) {
      return absl::InternalError("momento: curl_multi_add_handle failed");
    }
    static_cast<void>(easy.release());  // owned by the multi handle until the transfer ends
    t.active = true;
    ++t.attempts;
    ++active_;
    return absl::OkStatus();
  }

  void Configure(CURL* easy, Transfer& t, long timeout_ms) const {  // NOLINT(runtime/int)
    const MomentoBackendOptions& options = client_.options_;
    curl_easy_setopt(easy, CURLOPT_URL, t.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(easy, CURLOPT_SHARE, client_.share_.get());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options.ca_bundle_path.empty()) {
      curl_easy_setopt(easy, CURLOPT_CAINFO, options.ca_bundle_path.c_str());
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
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t.headers);
    switch (t.method) {
      case Method::kGet:
        curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                         static_cast<curl_off_t>(options.max_item_size));
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
        break;
      case Method::kDelete:
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
        break;
      case Method::kPut:
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t.body.data());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t.body.size()));
        break;
    }
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

    client_.requests_.fetch_add(1, std::memory_order_relaxed);
    client_.connections_opened_.fetch_add(static_cast<std::uint64_t>(connects),
                                          std::memory_order_relaxed);
    if (result == CURLE_OK) {
      client_.bytes_sent_.fetch_add(t->body.size(), std::memory_order_relaxed);
      client_.bytes_received_.fetch_add(t->response.size(), std::memory_order_relaxed);
    }
    Verdict verdict = client_.mapping_.Judge(*t, result, code, limit);
    CountFailure(verdict.failure);
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
    const MomentoBackendOptions& options = client_.options_;
    const absl::Duration backoff = internal::FullJitter(
        internal::ExponentialCeiling(t->attempts, options.backoff_base, options.backoff_cap),
        bitgen_);
    const absl::Time now = absl::Now();
    if (t->attempts >= options.max_attempts) {
      t->done = true;
      t->status = WithAttempts(t->status, t->attempts);
      return *t;
    }
    if (now + backoff + absl::Milliseconds(1) >= limit.end) {
      // No time for another attempt: the last failure says what is wrong.
      t->done = true;
      t->status =
          WithAttempts(t->status, t->attempts, "no time for another before " + limit.Name());
      return *t;
    }
    client_.retries_.fetch_add(1, std::memory_order_relaxed);
    t->not_before = now + backoff;
    return *t;
  }

  void CountFailure(Failure failure) {
    std::atomic<std::uint64_t>* counter = nullptr;
    switch (failure) {
      case Failure::kNone:
        return;
      case Failure::kThrottled:
        counter = &client_.throttled_;
        break;
      case Failure::kServerError:
        counter = &client_.server_errors_;
        break;
      case Failure::kTransport:
        counter = &client_.transport_errors_;
        break;
    }
    counter->fetch_add(1, std::memory_order_relaxed);
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

  HttpClient& client_;
  MultiHandle multi_;
  std::vector<EasyHandle> idle_;
  std::vector<CURL*> in_use_;  // attached to multi_, owned by it until removed
  int active_ = 0;
  absl::BitGen bitgen_;  // backoff jitter; one call at a time uses the session
};

HttpClient::HttpClient(const MomentoBackendOptions& options, std::string api_key)
    : options_(options),
      mapping_(options.cache_name, std::move(api_key), options.max_item_size),
      sessions_(KeepIdle<Session>(static_cast<std::size_t>(options.pool_size))) {}

HttpClient::~HttpClient() = default;

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::Create(const MomentoBackendOptions& options,
                                                               std::string api_key) {
  InitCurlOnce();
  std::unique_ptr<HttpClient> client(new HttpClient(options, std::move(api_key)));
  if (absl::Status s = client->InitShare(); !s.ok()) return s;
  return client;
}

absl::Status HttpClient::Run(std::vector<Transfer>& transfers, const TransferDone& on_done) {
  calls_.fetch_add(1, std::memory_order_relaxed);
  if (transfers.empty()) return absl::OkStatus();
  // The backend's own deadline, or the chunkcache call's if that comes first.
  const absl::Time start = absl::Now();
  CallLimit limit{.start = start, .end = start + options_.deadline, .own = options_.deadline};
  if (const absl::Time caller = CallDeadline(); caller < limit.end) {
    limit.end = caller;
    limit.callers = true;
  }
  std::unique_ptr<Session> session = sessions_.TakeIdle();
  if (session == nullptr) session = NewSession();
  absl::Status status = absl::ResourceExhaustedError("momento: cannot create a session");
  bool stopped_by_caller = false;
  if (session != nullptr) {
    status = session->Run(transfers, limit, on_done, &stopped_by_caller);
    sessions_.Put(std::move(session));
  }
  if (!status.ok() && !stopped_by_caller) errors_.fetch_add(1, std::memory_order_relaxed);
  return status;
}

MomentoBackendStats HttpClient::Stats() const {
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

std::unique_ptr<HttpClient::Session> HttpClient::NewSession() {
  MultiHandle multi(curl_multi_init());
  if (multi == nullptr) return nullptr;
  const long limit = options_.max_concurrent_requests;  // NOLINT(runtime/int)
  curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, limit);
  curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, limit);
  curl_multi_setopt(multi.get(), CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
  return std::make_unique<Session>(*this, std::move(multi));
}

absl::Status HttpClient::InitShare() {
  share_.reset(curl_share_init());
  if (share_ == nullptr) return absl::ResourceExhaustedError("momento: out of memory");
  curl_share_setopt(share_.get(), CURLSHOPT_LOCKFUNC, &LockShare);
  curl_share_setopt(share_.get(), CURLSHOPT_UNLOCKFUNC, &UnlockShare);
  curl_share_setopt(share_.get(), CURLSHOPT_USERDATA, this);
  curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return absl::OkStatus();
}

void HttpClient::LockShare(CURL*, curl_lock_data data, curl_lock_access, void* user) {
  static_cast<HttpClient*>(user)->share_lock(data).lock();
}

void HttpClient::UnlockShare(CURL*, curl_lock_data data, void* user) {
  static_cast<HttpClient*>(user)->share_lock(data).unlock();
}

std::mutex& HttpClient::share_lock(curl_lock_data data) {
  return share_locks_[std::min<std::size_t>(static_cast<std::size_t>(data), kShareLocks - 1)];
}

}  // namespace chunkcache::momento
