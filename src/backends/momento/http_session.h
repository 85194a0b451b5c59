// The transfers of MomentoBackend's calls: each call borrows a session (a libcurl multi handle with
// its own connection cache and reusable easy handles) from a pool, runs its requests on it
// concurrently (at most max_concurrent_requests in flight), retries those that may succeed on
// another attempt (429, 5xx, transport errors, a request timeout) after a full-jitter backoff,
// and ends by the earlier of MomentoBackendOptions::deadline and CallDeadline(). DNS results and
// TLS sessions are shared by all sessions, so a new session resumes TLS.
//
//   absl::StatusOr<std::unique_ptr<momento::HttpClient>> http =
//       momento::HttpClient::Create(options, api_key);
//   std::vector<momento::Transfer> transfers = {requests.Get("k")};
//   absl::Status status = (*http)->Run(transfers);  // then transfers[0].found, .response
//
// A caller that wants each outcome as it comes (MultiGetEach) passes a TransferDone: it is told
// the index of every transfer that ended well, in the order they end, and may stop the call.
//
// Deadlines: each attempt's timeout is the request timeout, or the time left before the call's
// limit rounded up to a whole millisecond (so a call cut off by its limit returns no earlier than
// the limit). No retry starts that could not finish before the limit. A request libcurl has not
// ended 10 ms after the limit is abandoned.
//
// Thread safety: an HttpClient is safe for concurrent use by any number of threads; a session
// serves one call at a time.

#ifndef CHUNKCACHE_SRC_BACKENDS_MOMENTO_HTTP_SESSION_H_
#define CHUNKCACHE_SRC_BACKENDS_MOMENTO_HTTP_SESSION_H_

#include <curl/curl.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/momento/request.h"
#include "backends/momento/status_mapping.h"
#include "chunkcache/momento_backend.h"
#include "internal/object_pool.h"

namespace chunkcache::momento {

// Told, on the thread running the transfers, the index of a transfer that has just ended well
// (`done`, OK `status`): its `found` and `response` are final, and the caller may take the
// response. An error it returns ends the call as a failed transfer would (the transfers still
// running are abandoned), and Run returns it.
using TransferDone = std::function<absl::Status(std::size_t index)>;

class HttpClient {
 public:
  // Initializes libcurl (once per process) and the shared DNS and TLS cache. Uses the options'
  // request_timeout, deadline, max_attempts, backoff_base, backoff_cap, max_concurrent_requests,
  // pool_size, max_item_size, cache_name and ca_bundle_path, which the caller has checked.
  // `api_key` (not empty) is redacted from every message.
  static absl::StatusOr<std::unique_ptr<HttpClient>> Create(const MomentoBackendOptions& options,
                                                            std::string api_key);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Runs every transfer to an outcome: OK when all ended well (a GET's `found` and `response`
  // then hold what it read), else the first final error, which abandons the transfers still
  // running. `on_done` (if set) hears of each transfer as it ends well, until the call fails or
  // it returns an error, which is then the call's. Counts one call, and an error unless the
  // error came from `on_done`. Every handle is detached and the session reusable on return.
  absl::Status Run(std::vector<Transfer>& transfers, const TransferDone& on_done = nullptr);

  // The counters since creation.
  MomentoBackendStats Stats() const;

 private:
  class Session;
  struct ShareDeleter {
    void operator()(CURLSH* share) const { curl_share_cleanup(share); }
  };
  static constexpr std::size_t kShareLocks = CURL_LOCK_DATA_LAST;

  HttpClient(const MomentoBackendOptions& options, std::string api_key);
  absl::Status InitShare();
  // A new session, or null if libcurl cannot make one.
  std::unique_ptr<Session> NewSession();
  static void LockShare(CURL*, curl_lock_data data, curl_lock_access, void* user);
  static void UnlockShare(CURL*, curl_lock_data data, void* user);
  std::mutex& share_lock(curl_lock_data data);

  const MomentoBackendOptions options_;
  const StatusMapping mapping_;
  std::array<std::mutex, kShareLocks> share_locks_;
  std::unique_ptr<CURLSH, ShareDeleter> share_;  // after its locks: destroyed first
  internal::ObjectPool<Session> sessions_;       // after the share its handles use

  std::atomic<std::uint64_t> calls_{0}, requests_{0}, retries_{0}, throttled_{0}, server_errors_{0},
      transport_errors_{0}, connections_opened_{0}, bytes_sent_{0}, bytes_received_{0}, errors_{0};
};

}  // namespace chunkcache::momento

#endif  // CHUNKCACHE_SRC_BACKENDS_MOMENTO_HTTP_SESSION_H_
