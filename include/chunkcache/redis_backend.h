// chunkcache/redis_backend.h — a Backend on Redis, one node or a Redis Cluster (hiredis), over
// TCP, a unix socket or TLS (rediss://, OpenSSL; every bound below holds over TLS too).
//
// MultiGet is one MGET (one round trip); MultiSet pipelines SET ... PX and checks every reply;
// SetIfAbsent is SET ... NX PX. Connections are pooled, re-established after a failure and
// AUTH/SELECT are replayed on each new one. A pooled connection is reused only if every command
// sent on it was answered and nothing unread waits on it: one that failed or timed out, holds
// bytes nobody asked for (a broken or hostile server's extra reply, which would otherwise be read
// as the next call's reply: one key's value served for another), or was closed by the server is
// dropped; a call whose replies come with extra bytes fails (Internal). A connection opened by
// another process (the parent, before fork()) is never used: the child closes it unused and
// opens its own. In a cluster, keys are routed by their CRC16 slot, MOVED and ASK redirects are
// followed, and the slot map is refreshed on MOVED. ChunkedCache gives every item of one logical
// key the same hash tag, so each read of a Get is one pipeline on one node. Connection pools of
// nodes outside the slot map (ASK targets) are bounded: 32 at most, the least recently used dropped
// first.
//
// MultiGetEach pipelines one GET per key (one round trip) and hands each item over as soon as its
// reply is parsed, while the later replies are still arriving; an item's bytes are those of the
// hiredis reply itself (no copy), kept alive by its owner. Each reply is held to max_item_size
// like an MGET value, and the call's deadline covers the time spent in the sink. A connection left
// with replies unread (the sink stopped the call, a reply was refused, the deadline passed) is
// closed, never reused. The keys are on one node when they share a hash tag, as ChunkedCache's
// do; keys of several cluster nodes go through MultiGet. Until the first item is handed over, a
// redirect or a failed node is handled as for MultiGet; after that, a MOVED or ASK reply sends the
// keys not yet answered to their new node, and any other failure ends the call with its error.
// Either way each key's item is handed over once, in key order, none skipped.
//
// Cluster failover: a node that fails (connection refused or lost, a timeout) or a CLUSTERDOWN or
// TRYAGAIN reply makes the backend reload the slot map from any node that answers (the seed and
// every master and replica it knows, those that failed recently last), at most once per 200 ms
// per backend. A call whose node failed is sent once more, within its command_timeout, if the
// fresh map names a new owner; otherwise it fails at once (Unavailable). So while a dead master's
// replica is not yet promoted, calls for its slots fail fast, and within a fraction of a second
// after the promotion the same backend serves them again (docs/GUARANTEES.md gives the measured
// figures). A command whose node failed after it was sent may have run: MGET, SET, DEL and PTTL
// are sent again (running them twice is harmless: SET stores the same bytes, its TTL restarting a
// little later); SetIfAbsent (SET NX) is not, because a second attempt would find the first one's
// item and report it refused, and returns the error instead.
//
//   absl::StatusOr<std::shared_ptr<chunkcache::RedisBackend>> backend =
//       chunkcache::NewRedisBackend({.url = "redis://:secret@127.0.0.1:6379/0"});
//   if (!backend.ok()) return backend.status();
//   chunkcache::ChunkedCache cache(*backend);
//   std::uint64_t round_trips = (*backend)->Stats().round_trips;
//
// Deadlines: every command, connect and failover retry of a call is bounded by command_timeout
// (connect_timeout) and by the deadline of the ChunkedCache call being made (CallDeadline(),
// from CallOptions::deadline), whichever comes first; a call whose deadline has passed sends
// nothing. Either way the result is DeadlineExceeded.
//
// Errors: connection refused or reset → Unavailable; a command past its timeout or the call's
// deadline → DeadlineExceeded; NOAUTH/WRONGPASS/NOPERM → PermissionDenied; OOM →
// ResourceExhausted. A status quotes the server's error text, except for a refused AUTH: its
// reply may repeat the password (Redis echoes an unknown command's arguments, e.g. when AUTH is
// renamed), so the status names only the command and the error code ("ERR", "WRONGPASS"). In
// every other status, the password (or its first 16 bytes, wherever they appear) and the user
// name are replaced by "<redacted>".
//
// Thread safety: a RedisBackend is safe for concurrent use by any number of threads.

#ifndef CHUNKCACHE_REDIS_BACKEND_H_
#define CHUNKCACHE_REDIS_BACKEND_H_

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

struct RedisBackendOptions {
  // Where the server is: redis://[[user]:password@]host[:port][/db] (port 6379 and db 0 by
  // default; user and password percent-decoded; an IPv6 host in brackets), or
  // unix:///path/to/redis.sock[?db=N]. In cluster mode, any one node (a seed);
  // redis+cluster://[[user]:password@]host[:port] also sets `cluster`. Parsed as RFC 3986 says
  // (libcurl's URL parser): a '@', '/', '?' or '#' in a password is percent-encoded.
  // rediss://… and rediss+cluster://… are the same over TLS (port 6379 by default there too):
  // the server's certificate is always verified (chain and name; there is no switch to turn that
  // off), with the tls_* options below. The tls_* options are ignored for other schemes.
  // Default: "redis://127.0.0.1:6379".
  std::string url = "redis://127.0.0.1:6379";

  // Time allowed to open a connection: name lookup, TCP connect, TLS handshake, AUTH, SELECT (less
  // if the call's deadline comes sooner). An IP literal needs no lookup. A host name is looked up
  // (getaddrinfo) on a helper thread, because libc's lookup can be neither bounded nor cancelled: a
  // caller waits for it at most this long (DeadlineExceeded), and a hung lookup keeps only its one
  // thread per node busy until the resolver gives up, its answer reused by that node's connections
  // for one second. A name with several addresses is tried address by address, IPv4 first, within
  // this time. Default: 1 second.
  absl::Duration connect_timeout = absl::Seconds(1);

  // Time allowed for one backend call, from sending its commands to reading its last reply,
  // connecting and a cluster failover retry included; less if the deadline of the ChunkedCache
  // call being made comes sooner. A call past it fails with DeadlineExceeded and its connection
  // is closed.
  // Default: 1 second.
  absl::Duration command_timeout = absl::Seconds(1);

  // Idle connections kept per node for reuse, however long unused. A call takes an idle
  // connection or opens one, so as many are open at once as threads call at once; those beyond
  // pool_size are kept too, and closed once unused for 30 s (when the load has dropped). So
  // threads that outnumber pool_size do not open and close a connection per call (each close
  // leaves a TIME_WAIT socket); set pool_size to the number of threads calling at once to keep
  // them all for good. 0: none is kept, every call opens and closes its own.
  // Default: 8.
  int pool_size = 8;

  // Largest value accepted by MultiSet/SetIfAbsent (InvalidArgument above it), and the bound on
  // the bytes one reply may hold (per key asked, plus framing; the sum saturates at SIZE_MAX,
  // so any value up to SIZE_MAX is safe), whatever the server sends. An array reply may
  // also claim no more elements than keys asked (ResourceExhausted otherwise, before hiredis
  // allocates for them).
  // Default: 1 MiB (Redis itself allows 512 MB).
  std::size_t max_item_size = std::size_t{1} << 20;

  // Treat the server as a Redis Cluster from the start (discover the slot map with CLUSTER SLOTS).
  // A non-cluster backend switches to cluster mode by itself on its first MOVED or CROSSSLOT
  // reply; the call that met it is then routed by slot and served like any later one.
  // Default: false.
  bool cluster = false;

  // TLS (rediss:// URLs). A PEM file of the CA certificates to trust.
  // Default: empty, the system's CA store (OpenSSL's default paths, e.g. /etc/ssl/certs).
  std::string tls_ca_bundle_path;
  // PEM files of a client certificate (with its chain) and its private key, for a server that
  // requires mutual TLS (redis-server --tls-auth-clients yes). Both or neither.
  // Default: empty, no client certificate.
  std::string tls_client_cert_path;
  std::string tls_client_key_path;
  // The name the server's certificate must carry, also sent as SNI (unless an IP address). In a
  // cluster it verifies every node announced by IP address; a node announced by host name is
  // verified by that name. Default: empty, the URL's host.
  std::string tls_server_name;
};

// Counters of a RedisBackend since its creation.
struct RedisBackendStats {
  std::uint64_t calls = 0;                  // MultiGet/MultiGetEach/MultiSet/Delete/SetIfAbsent
                                            // calls
  std::uint64_t round_trips = 0;            // pipelines sent and answered (one per node per call)
  std::uint64_t commands = 0;               // commands sent (MultiGetEach: a GET per key)
  std::uint64_t connections_opened = 0;     // connections established (first or after a failure)
  std::uint64_t connection_failures = 0;    // connections dropped after an I/O error or timeout
  std::uint64_t connections_discarded = 0;  // pooled connections closed instead of reused:
                                            // unread input or closed by the server, opened by
                                            // another process (before fork()), or surplus idle
  std::uint64_t redirects = 0;              // MOVED and ASK replies followed
  std::uint64_t slot_map_refreshes = 0;     // CLUSTER SLOTS reloads
  std::uint64_t failover_retries = 0;       // calls sent again to a new owner after a node failure
                                            // or CLUSTERDOWN
  std::uint64_t errors = 0;                 // calls that returned an error (not those a
                                            // MultiGetEach sink stopped with its own)
  std::uint64_t node_pools = 0;             // now (not a counter): nodes with a connection pool
};

// A Backend on Redis, made by NewRedisBackend. The Backend calls are documented at the top of
// this file; these are the Redis-only ones.
class RedisBackend : public Backend {
 public:
  // Counters since the backend was made.
  virtual RedisBackendStats Stats() const = 0;

  // The remaining time to live of each key (PTTL): absl::InfiniteDuration() for a key without
  // expiry, empty for an absent key. For operators' tools.
  virtual absl::StatusOr<std::vector<std::optional<absl::Duration>>> TimeToLive(
      absl::Span<const std::string_view> keys) = 0;
};

// Checks the options, connects to the server (PING) and, for a cluster, loads the slot map.
// InvalidArgument for a bad URL or option (a CA bundle or
// client certificate or key file that cannot be loaded); the connection's error if the server
// cannot be used (Unavailable, DeadlineExceeded, PermissionDenied). Over TLS, a server that
// cannot be trusted is Unavailable naming the cause: "unknown issuer", "host name mismatch",
// "certificate expired", "the server does not speak TLS", "the server refused the client
// certificate".
absl::StatusOr<std::shared_ptr<RedisBackend>> NewRedisBackend(RedisBackendOptions options);

// The Redis Cluster slot of `key` (CRC16-XMODEM of its hash tag, mod 16384).
int RedisClusterSlot(std::string_view key);

}  // namespace chunkcache

#endif  // CHUNKCACHE_REDIS_BACKEND_H_
