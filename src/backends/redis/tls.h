// backends/redis/tls.h — a TLS connection to a server (OpenSSL), every step bounded by a deadline.
//
// hiredis 0.14 has no TLS, so a Redis connection over TLS carries RESP through a TlsStream:
// commands are formatted with hiredis (redisFormatCommandArgv) and written with Write(); replies
// are read with Read() and fed to a hiredis redisReader (see resp_over_tls.h).
//
// A TlsContext holds the settings of one backend (CA bundle, client certificate) in an SSL_CTX
// that every connection of that backend shares, and the last TLS session each server gave it: a
// new connection to the same server resumes that session (an abbreviated handshake, no
// certificate to send and verify again). The server is always verified: its certificate
// must chain to a trusted CA and name the server (TlsOptions::server_name, default: the host
// connected to). A name that is an IP address is checked against the certificate's IP addresses
// and sent without SNI (RFC 6066 allows no IP address there); a host name is checked against its
// DNS names and sent as SNI. There is no option that turns verification off.
//
//   absl::StatusOr<std::shared_ptr<const TlsContext>> context =
//       TlsContext::Create({.ca_bundle_path = "/etc/ssl/my-ca.pem"});
//   absl::StatusOr<std::unique_ptr<TlsStream>> stream = TlsStream::Connect(
//       *context, "10.0.0.7", 6380, "cache.example.com", absl::Now() + absl::Seconds(1));
//   (*stream)->Write("*1\r\n$4\r\nPING\r\n", deadline);
//   char buffer[4096];
//   absl::StatusOr<std::size_t> got = (*stream)->Read(buffer, sizeof(buffer), deadline);
//
// Errors: every failure to connect, to agree on TLS or to trust the server is Unavailable and its
// message names the cause: "unknown issuer" (ca_bundle_path does not hold the CA that signed the
// server's certificate), "host name mismatch", "certificate expired", "the server does not speak
// TLS", "the server refused the client certificate". Unavailable, not FailedPrecondition: to the
// cache a server it cannot trust is a server it cannot reach (it serves from the origin, its
// circuit breaker opens, a cluster client tries another node), and most of these causes are
// fixed on the server (a renewed certificate) without touching the client. Past the deadline →
// DeadlineExceeded; a certificate or key file that cannot be loaded → InvalidArgument (from
// TlsContext::Create). Messages never quote data sent over the stream (such as a password).
//
// SIGPIPE: the stream writes with send(MSG_NOSIGNAL) through its own BIO, so a server closing the
// connection mid-write fails the call with Unavailable and raises no signal.
//
// Thread safety: a TlsContext may be shared by any number of threads and streams (its settings
// are fixed by Create; its session store is guarded by a mutex). A TlsStream is used by one thread
// at a time.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_TLS_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_TLS_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "internal/mutex.h"
#include "internal/unique_fd.h"

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;
using SSL_SESSION = struct ssl_session_st;

namespace chunkcache::redis {

// Waits until `fd` is ready for `events` (poll(2), EINTR retried): DeadlineExceeded "<what> timed
// out" once `deadline` passes, Unavailable "<what>: poll: <error>" if poll fails.
absl::Status Await(int fd, short events, absl::Time deadline, std::string_view what);

// How to trust a server and how to present ourselves to it.
struct TlsOptions {
  // PEM file of the CA certificates to trust. Default: empty, the system's default verify paths
  // (OpenSSL's, e.g. /etc/ssl/certs on Debian).
  std::string ca_bundle_path;
  // PEM files of a client certificate (with its chain) and its private key, for servers that
  // require mutual TLS (redis-server --tls-auth-clients yes). Both or neither. Default: none.
  std::string client_cert_path;
  std::string client_key_path;
  // The name the server's certificate must carry, also sent as SNI (unless an IP address).
  // Default: empty, the host connected to.
  std::string server_name;
};

// The SSL_CTX of one backend: its trusted CAs, its client certificate, TLS 1.2 or later.
class TlsContext {
 public:
  // Loads the CA bundle and the client certificate and key. InvalidArgument, naming the file,
  // when one cannot be loaded or the key does not match the certificate.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> Create(const TlsOptions& options);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* ssl_ctx() const { return ctx_; }
  const std::string& server_name() const { return server_name_; }

  // Keeps `session` (taking its reference) as the one to resume with the server `key` names.
  void Remember(const std::string& key, SSL_SESSION* session) const;
  // The session to resume with `key`'s server (a new reference), or nullptr.
  SSL_SESSION* Recall(const std::string& key) const;

 private:
  // Servers whose sessions are kept; beyond that many, the store starts over.
  static constexpr std::size_t kMaxSessions = 1024;

  TlsContext(SSL_CTX* ctx, std::string server_name)
      : ctx_(ctx), server_name_(std::move(server_name)) {}

  SSL_CTX* const ctx_;
  const std::string server_name_;
  mutable internal::Mutex mu_;
  mutable absl::flat_hash_map<std::string, SSL_SESSION*> sessions_ ABSL_GUARDED_BY(mu_);
};

// One TLS connection over TCP.
class TlsStream {
 public:
  // Connects to `ip`:`port` (an IPv4 or IPv6 address: no name lookup) and completes the TLS
  // handshake, verifying the server as `verify_name` (the context's server_name when that is
  // set; an empty `verify_name` means `ip`), all before `deadline`. Resumes the last session
  // `context` holds for this server and name, if any. The stream keeps `context` alive.
  static absl::StatusOr<std::unique_ptr<TlsStream>> Connect(
      std::shared_ptr<const TlsContext> context, std::string_view ip, int port,
      std::string_view verify_name, absl::Time deadline);

  // Closes the socket without sending close_notify: harmless in a forked child whose parent
  // still uses the same connection.
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Writes all of `bytes`. Any failure leaves the stream broken.
  absl::Status Write(std::string_view bytes, absl::Time deadline);

  // Reads at least one byte and at most `size` (> 0) into `buffer`; the number read. The server
  // closing the connection is Unavailable. Any failure leaves the stream broken.
  absl::StatusOr<std::size_t> Read(char* buffer, std::size_t size, absl::Time deadline);

  // Whether the stream may serve another call: it has not failed, belongs to this process, and
  // holds no unread bytes, neither decrypted in OpenSSL nor waiting in the socket. Not const:
  // TLS records that carry no application data (TLS 1.3 session tickets, which a server sends
  // after the handshake) are consumed here.
  bool FitForReuse();

  // "ip:port", for messages.
  const std::string& peer() const { return peer_; }

  // Whether the handshake resumed a session of an earlier connection.
  bool resumed() const;

 private:
  TlsStream(std::shared_ptr<const TlsContext> context, internal::UniqueFd fd, SSL* ssl,
            std::string peer, std::string session_key);

  // Retries one SSL_* call (`op` returns its result) until it succeeds, polling for what OpenSSL
  // asks for, or fails.
  template <typename Op>
  absl::StatusOr<int> Drive(std::string_view what, absl::Time deadline, Op op);
  absl::Status Fail(absl::Status status);
  // `status` of a failed write, or the cause the server gave for it in an alert still unread.
  absl::Status Explain(absl::Status status);

  const std::shared_ptr<const TlsContext> context_;  // holds the session store
  internal::UniqueFd fd_;
  SSL* const ssl_;
  const std::string peer_;
  const std::string session_key_;  // the server, for TlsContext's session store
  const pid_t pid_;                // the process that connected
  bool broken_ = false;
};

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_TLS_H_
