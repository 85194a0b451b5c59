// chunkcache/momento_backend.h — a Backend on Momento's HTTP API (libcurl).
//
// Momento is a serverless cache: items of at most 5 MB (key + value), no batch read and no
// set-if-absent over HTTP, billed per KiB transferred. MomentoBackend turns a MultiGet/MultiSet/
// Delete of N keys into N HTTP requests run concurrently (libcurl multi interface, HTTP/2
// multiplexing when the server offers it, at most max_concurrent_requests in flight), retries the
// ones answered 429 (throttled), 5xx or lost to a transport error with exponential backoff and full
// jitter, and never past the call's deadline. SetIfAbsent is Unimplemented (the default), so the
// cross-process lease is not available on this backend. MultiGetEach runs the same requests as
// MultiGet and hands item i over as soon as it and every item before it have arrived (a later one
// that arrives first waits), without copying the reply body; a sink error abandons the requests
// still in flight.
//
//   absl::StatusOr<std::shared_ptr<chunkcache::MomentoBackend>> backend =
//       chunkcache::NewMomentoBackend(
//           {.endpoint = "https://api.cache.cell-4-us-west-2-1.prod.a.momentohq.com",
//            .cache_name = "catalogue"});  // the API key from MOMENTO_API_KEY
//   if (!backend.ok()) return backend.status();
//   chunkcache::ChunkedCache cache(*backend);
//   ...
//   std::uint64_t throttled = (*backend)->Stats().throttled;
//
// Requests: PUT /cache/{cache}?key=…&ttl_seconds=N, GET and DELETE /cache/{cache}?key=…, with the
// bare API key in the Authorization header. A key that is not printable UTF-8 is sent as
// key_base64= (base64url without padding). TTLs are rounded up to whole seconds.
//
// Errors: 400 and 413 → InvalidArgument; 401 → Unauthenticated; 403 → PermissionDenied; 404 "Cache
// Not Found" → NotFound (a 404 for a key is a miss, not an error); 429 on every attempt →
// ResourceExhausted; 500–599 or transport errors on every attempt → Unavailable; a request timing
// out on every attempt, or the deadline reached → DeadlineExceeded; a GET reply over
// max_item_size → ResourceExhausted. Any other status (a redirect, which is never followed, or a
// code Momento does not send, such as 999) → Unknown, not retried. Reply headers over 64 KiB (1xx
// responses included) → Unavailable, not retried. When retries stop because the deadline leaves
// no time for another attempt, the status is the last failure's, saying so. An error reply is read
// no further than its first 512 bytes; messages quote at most 200 of them, with the API key
// redacted from the body before it is cut, so no part of the key appears in a Status.
//
// Deadlines: a call ends by the earlier of MomentoBackendOptions::deadline and CallDeadline() (the
// CallOptions::deadline of the ChunkedCache call it serves, see chunkcache/backend.h). Each
// request's timeout is cut to the time left, no retry starts that could not, and a call that runs
// into either limit returns DeadlineExceeded naming it and the time waited, no earlier than the
// limit (so a caller checking its deadline on return finds it passed) and normally within a few
// milliseconds after it.
//
// Reads are eventually consistent: a Get may see a manifest before one of its chunks; ChunkedCache
// then treats the entry as a miss. Every byte of every chunk is billed: a 10 MB catalogue that
// compresses to 3 MB costs 3 MB of transfer per uncached Get, which is what an L1 near cache saves.
//
// Thread safety: a MomentoBackend is safe for concurrent use by any number of threads. Each call
// borrows a transfer session (a libcurl multi handle with its own connection cache and reusable
// easy handles) from a pool, so connections and TLS sessions are reused across calls.

#ifndef CHUNKCACHE_MOMENTO_BACKEND_H_
#define CHUNKCACHE_MOMENTO_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "chunkcache/backend.h"

namespace chunkcache {

// Momento's hard limit on one item, key and value together, in bytes.
inline constexpr std::size_t kMomentoMaxItemBytes = 5'000'000;

// Bytes of kMomentoMaxItemBytes kept for the key. ChunkedCache's longest stored key is a chunk
// key: the escaped prefix and logical key (each byte 1 or 3 bytes, see docs/FORMAT.md), two
// braces, ':', 16 hex digits, ':' and up to 10 digits. With a kMaxKeySize (1,024-byte) logical
// key that is at most 3,105 bytes under the default "cc:" prefix and 6,174 under any prefix of
// up to 1 KiB, so a full chunk fits under every key ChunkedCache writes with such a prefix.
inline constexpr std::size_t kMomentoKeyAllowance = 8192;

// Largest MomentoBackendOptions::max_item_size, and so the largest chunk on Momento: 4,991,808.
inline constexpr std::size_t kMomentoMaxValueBytes = kMomentoMaxItemBytes - kMomentoKeyAllowance;

// The time to live an item stored with absl::InfiniteDuration() gets: Momento items always expire,
// and a day is the longest TTL a Momento cache takes unless its limit was raised. A longer finite
// ttl is sent as given.
inline constexpr absl::Duration kMomentoMaxTtl = absl::Hours(24);

struct MomentoBackendOptions {
  // Base URL of the cache's HTTP API, e.g. "https://api.cache.<cell>.prod.a.momentohq.com". No
  // user info, query, fragment or IPv6 zone id. Plain http:// (which sends the API key in clear
  // text) is accepted only, for local tests, when the host libcurl parses from the URL is an IPv4
  // address in 127.0.0.0/8, [::1] or exactly "localhost" (any case); "127.0.0.1.example.com",
  // "localhost.example.com" and "[::ffff:127.0.0.1]" are refused. libcurl writes the IPv4 short
  // forms ("127.1", "0x7f.1") as 127.0.0.1 and connects there, so those are accepted.
  // Default: empty (required).
  std::string endpoint;

  // Name of the Momento cache that holds the items. It must exist: a missing cache makes every call
  // fail with NotFound. Default: empty (required).
  std::string cache_name;

  // The API key, sent as the Authorization header. Empty means: read MOMENTO_API_KEY from the
  // environment. Never logged nor put in a Status. Default: empty.
  std::string api_key;

  // Time allowed for one HTTP request (connect, send, receive), as Momento's Lambda preset; less
  // when the call's deadline is nearer. Default: 1.1 seconds.
  absl::Duration request_timeout = absl::Milliseconds(1100);

  // Time allowed for one backend call (all its requests and their retries), or less: the call
  // also ends at CallDeadline() when that comes first. No retry starts past it, and no request
  // runs beyond it. Default: 5 seconds.
  absl::Duration deadline = absl::Seconds(5);

  // Attempts per request, the first included, for requests answered 429 or 5xx or lost to a
  // transport error or timeout. Other errors are not retried. Default: 5.
  int max_attempts = 5;

  // Backoff before retry n (1-based) is uniformly random in [0, min(backoff_cap, backoff_base *
  // 2^(n-1))] ("full jitter"). Defaults: 20 ms and 500 ms.
  absl::Duration backoff_base = absl::Milliseconds(20);
  absl::Duration backoff_cap = absl::Milliseconds(500);

  // Requests of one call in flight at once (and connections one session may open). 1 transfers
  // chunks one after another. Default: 16.
  int max_concurrent_requests = 16;

  // Idle transfer sessions kept for reuse; more are created under load and closed when released.
  // Default: 8.
  int pool_size = 8;

  // Largest value accepted by MultiSet (InvalidArgument above it), the most bytes one GET reply
  // may deliver whatever the server sends, and what max_item_size() reports (so ChunkedCache's
  // largest chunk). Within 1..kMomentoMaxValueBytes: Momento's limit is on key + value, and
  // kMomentoKeyAllowance is kept for the key. MultiSet also refuses any item whose key + value
  // exceeds kMomentoMaxItemBytes. Default: 1 MiB.
  std::size_t max_item_size = std::size_t{1} << 20;

  // A PEM file of CA certificates to verify the server with, instead of the system's. TLS peer and
  // host verification are always on for https. Default: empty (the system CA store).
  std::string ca_bundle_path;
};

// Counters of a MomentoBackend since its creation.
struct MomentoBackendStats {
  std::uint64_t calls = 0;               // MultiGet/MultiGetEach/MultiSet/Delete calls
  std::uint64_t requests = 0;            // HTTP requests completed, retries included
  std::uint64_t retries = 0;             // requests sent again after a retryable failure
  std::uint64_t throttled = 0;           // 429 replies
  std::uint64_t server_errors = 0;       // 5xx replies
  std::uint64_t transport_errors = 0;    // connection failures, resets, truncated replies, timeouts
  std::uint64_t connections_opened = 0;  // new connections (the rest reused an open one)
  std::uint64_t bytes_sent = 0;          // request bodies uploaded
  std::uint64_t bytes_received = 0;      // response bodies downloaded
  std::uint64_t errors = 0;              // calls that returned an error (not a sink's own)
};

// The Backend described at the top of this file; made by NewMomentoBackend only. Safe for
// concurrent use. MultiSet stores an item with an infinite ttl for kMomentoMaxTtl (Momento items
// always expire).
class MomentoBackend : public Backend {
 public:
  // Counters since the backend was made.
  virtual MomentoBackendStats Stats() const = 0;
};

// Checks the options (InvalidArgument: no endpoint, cache name or API key, plain http to a
// non-loopback host, max_item_size above kMomentoMaxValueBytes, bad limits; messages never quote
// the endpoint nor the key). Does not contact the server: a wrong key or cache shows on the
// first call.
absl::StatusOr<std::shared_ptr<MomentoBackend>> NewMomentoBackend(
    const MomentoBackendOptions& options);

}  // namespace chunkcache

#endif  // CHUNKCACHE_MOMENTO_BACKEND_H_
