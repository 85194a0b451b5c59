#include "backends/redis/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "internal/mutex.h"

namespace chunkcache::redis {
namespace {

using internal::UniqueFd;

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// A socket BIO that sends with MSG_NOSIGNAL: OpenSSL's own socket BIO writes with write(2), which
// raises SIGPIPE (by default fatal) when the server has closed the connection. The BIO's data is
// the UniqueFd of the TlsStream, which outlives the SSL and thereby the BIO.
int BioFd(BIO* bio) { return static_cast<const UniqueFd*>(BIO_get_data(bio))->get(); }

int BioWrite(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t sent = send(BioFd(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(sent);
}

int BioRead(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t got = recv(BioFd(bio), data, static_cast<std::size_t>(size), 0);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_read(bio);
  }
  return static_cast<int>(got);
}

long BioCtrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO* NewNoSigpipeBio(UniqueFd* fd) {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "chunkcache socket");
    BIO_meth_set_write(m, &BioWrite);
    BIO_meth_set_read(m, &BioRead);
    BIO_meth_set_ctrl(m, &BioCtrl);
    BIO_meth_set_create(m, &BioCreate);
    return m;
  }();
  BIO* bio = BIO_new(method);
  if (bio != nullptr) BIO_set_data(bio, fd);
  return bio;
}

// The index of the SSL ex_data holding the TlsStream's session key (a const std::string*).
int SessionKeyIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL's callback for a session the server gave (after the handshake in TLS 1.3, with the
// session tickets): kept in the TlsContext, which takes the reference (returns 1).
int KeepSession(SSL* ssl, SSL_SESSION* session) {
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, SessionKeyIndex()));
  const auto* context = static_cast<const TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (key == nullptr || context == nullptr || SSL_SESSION_is_resumable(session) != 1) return 0;
  context->Remember(*key, session);
  return 1;
}

// The cause of a failed certificate verification, in words an operator can act on.
std::string VerifyFailure(long result) {
  switch (result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_UNTRUSTED:
      return "unknown issuer: the server's certificate is not signed by a trusted CA (is "
             "ca_bundle_path the CA that issued it?)";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return "host name mismatch: the server's certificate does not name the server (set "
             "server_name to a name it carries?)";
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "certificate expired: the server's certificate (or one of its chain) has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "certificate not yet valid: check the clocks of client and server";
    default:
      return absl::StrCat("the server's certificate is not trusted: ",
                          X509_verify_cert_error_string(result));
  }
}

// The cause of an OpenSSL failure: SSL_get_error() gave `error` for `ssl` during `what`.
std::string SslFailure(SSL* ssl, int error, std::string_view what) {
  const std::string prefix = absl::StrCat("tls: ", AbslView(what), ": ");
  if (!SSL_is_init_finished(ssl)) {
    if (const long result = SSL_get_verify_result(ssl); result != X509_V_OK) {
      return prefix + VerifyFailure(result);
    }
  }
  const unsigned long code = ERR_peek_last_error();
  if (error == SSL_ERROR_ZERO_RETURN ||
      (ERR_GET_LIB(code) == ERR_LIB_SSL &&
       ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
      (error == SSL_ERROR_SYSCALL && code == 0 && errno == 0)) {
    return prefix + "the server closed the connection";
  }
  if (error == SSL_ERROR_SYSCALL && code == 0) return prefix + std::strerror(errno);
  if (ERR_GET_LIB(code) == ERR_LIB_SSL) {
    switch (ERR_GET_REASON(code)) {
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
      case SSL_R_HTTP_REQUEST:
        return prefix + "the server does not speak TLS (a plain-TCP port?)";
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return prefix +
               "the server refused the client certificate (none configured, expired, or not "
               "signed by a CA the server trusts)";
      default:
        break;
    }
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return prefix + text;
}

bool IsIpAddress(const std::string& name) {
  in6_addr address;
  return inet_pton(AF_INET, name.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, name.c_str(), &address) == 1;
}

// A non-blocking TCP connection to ip:port, established before `deadline`.
absl::StatusOr<UniqueFd> ConnectTcp(const std::string& ip, int port, const std::string& peer,
                                    absl::Time deadline) {
  sockaddr_storage address{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    length = sizeof(*v4);
  } else if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    length = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("tls: not an IP address: ", ip));
  }
  UniqueFd fd(socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::UnavailableError(absl::StrCat("tls: socket: ", strerror(errno)));
  const int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS) {
      return absl::UnavailableError(
          absl::StrCat("tls: cannot connect to ", peer, ": ", std::strerror(errno)));
    }
    if (absl::Status s =
            Await(fd.get(), POLLOUT, deadline, absl::StrCat("tls: connecting to ", peer));
        !s.ok()) {
      return s;
    }
    int error = 0;
    socklen_t size = sizeof(error);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      return absl::UnavailableError(
          absl::StrCat("tls: cannot connect to ", peer, ": ", std::strerror(error)));
    }
  }
  return fd;
}

}  // namespace

absl::Status Await(int fd, short events, absl::Time deadline, std::string_view what) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    pollfd p{fd, events, 0};
    const int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready > 0) return absl::OkStatus();
    if (ready < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(AbslView(what), ": poll: ", std::strerror(errno)));
    }
  }
  return absl::DeadlineExceededError(absl::StrCat(AbslView(what), " timed out"));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::Create(const TlsOptions& options) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return absl::ResourceExhaustedError("tls: cannot create an SSL_CTX");
  std::shared_ptr<const TlsContext> context(new TlsContext(ctx, options.server_name));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_app_data(ctx, const_cast<TlsContext*>(context.get()));
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &KeepSession);
  const int loaded =
      options.ca_bundle_path.empty()
          ? SSL_CTX_set_default_verify_paths(ctx)
          : SSL_CTX_load_verify_locations(ctx, options.ca_bundle_path.c_str(), nullptr);
  if (loaded != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "tls: cannot load the CA bundle ",
        options.ca_bundle_path.empty() ? "(the system's default)" : options.ca_bundle_path));
  }
  if (options.client_cert_path.empty() != options.client_key_path.empty()) {
    return absl::InvalidArgumentError(
        "tls: a client certificate needs its key, and a key its certificate");
  }
  if (!options.client_cert_path.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.client_cert_path.c_str()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("tls: cannot load the client certificate ", options.client_cert_path));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.client_key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("tls: cannot load the client key ", options.client_key_path,
                       " (or it does not match the client certificate)"));
    }
  }
  return context;
}

TlsContext::~TlsContext() {
  for (const auto& [key, session] : sessions_) SSL_SESSION_free(session);
  SSL_CTX_free(ctx_);
}

void TlsContext::Remember(const std::string& key, SSL_SESSION* session) const {
  SSL_SESSION* replaced = nullptr;
  {
    internal::MutexLock lock(&mu_);
    if (sessions_.size() >= kMaxSessions && !sessions_.contains(key)) {
      for (const auto& [other, kept] : sessions_) SSL_SESSION_free(kept);
      sessions_.clear();
    }
    SSL_SESSION*& slot = sessions_[key];
    replaced = std::exchange(slot, session);
  }
  if (replaced != nullptr) SSL_SESSION_free(replaced);
}

SSL_SESSION* TlsContext::Recall(const std::string& key) const {
  internal::MutexLock lock(&mu_);
  const auto found = sessions_.find(key);
  if (found == sessions_.end()) return nullptr;
  SSL_SESSION_up_ref(found->second);
  return found->second;
}

absl::StatusOr<std::unique_ptr<TlsStream>> TlsStream::Connect(
    std::shared_ptr<const TlsContext> context, std::string_view ip, int port,
    std::string_view verify_name, absl::Time deadline) {
  const std::string host(ip);
  const std::string peer =
      absl::StrCat(host.find(':') == std::string::npos ? host : "[" + host + "]", ":", port);
  absl::StatusOr<UniqueFd> fd = ConnectTcp(host, port, peer, deadline);
  if (!fd.ok()) return fd.status();

  const std::string name = !context->server_name().empty() ? context->server_name()
                           : verify_name.empty()           ? host
                                                           : std::string(verify_name);
  SSL* ssl = SSL_new(context->ssl_ctx());
  if (ssl == nullptr) return absl::ResourceExhaustedError("tls: cannot create a connection");
  auto stream = std::unique_ptr<TlsStream>(
      new TlsStream(std::move(context), *std::move(fd), ssl, peer, absl::StrCat(name, "@", peer)));
  BIO* bio = NewNoSigpipeBio(&stream->fd_);
  if (bio == nullptr) return absl::ResourceExhaustedError("tls: cannot create a connection");
  SSL_set_bio(ssl, bio, bio);
  SSL_set_ex_data(ssl, SessionKeyIndex(), const_cast<std::string*>(&stream->session_key_));
  if (SSL_SESSION* session = stream->context_->Recall(stream->session_key_); session != nullptr) {
    SSL_set_session(ssl, session);
    SSL_SESSION_free(session);
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const bool named = IsIpAddress(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1
                                       : SSL_set1_host(ssl, name.c_str()) == 1 &&
                                             SSL_set_tlsext_host_name(ssl, name.c_str()) == 1;
  if (!named) {
    return absl::InvalidArgumentError(absl::StrCat("tls: cannot verify the server as ", name));
  }
  absl::StatusOr<int> done = stream->Drive(absl::StrCat("handshake with ", peer), deadline,
                                           [ssl] { return SSL_connect(ssl); });
  // A plain-TCP server may wait for the end of a line that a ClientHello does not hold.
  if (absl::IsDeadlineExceeded(done.status()) && BIO_number_read(SSL_get_rbio(ssl)) == 0) {
    return absl::DeadlineExceededError(
        absl::StrCat(done.status().message(),
                     ": the server sent nothing back (a plain-TCP port, or a stalled server?)"));
  }
  if (!done.ok()) return done.status();
  return stream;
}

TlsStream::TlsStream(std::shared_ptr<const TlsContext> context, UniqueFd fd, SSL* ssl,
                     std::string peer, std::string session_key)
    : context_(std::move(context)),
      fd_(std::move(fd)),
      ssl_(ssl),
      peer_(std::move(peer)),
      session_key_(std::move(session_key)),
      pid_(getpid()) {}

bool TlsStream::resumed() const { return SSL_session_reused(ssl_) == 1; }

TlsStream::~TlsStream() {
  // Marked as shut down, without sending close_notify: SSL_free would otherwise mark the session
  // it holds (the last one the server gave, kept in the TlsContext) as not resumable.
  if (!broken_) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);
}

template <typename Op>
absl::StatusOr<int> TlsStream::Drive(std::string_view what, absl::Time deadline, Op op) {
  while (true) {
    ERR_clear_error();
    errno = 0;
    const int result = op();
    if (result > 0) return result;
    const int error = SSL_get_error(ssl_, result);
    short events = 0;
    if (error == SSL_ERROR_WANT_READ) events = POLLIN;
    if (error == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    if (events == 0) return Fail(absl::UnavailableError(SslFailure(ssl_, error, what)));
    const std::string waiting = absl::StrCat("tls: ", AbslView(what));
    if (absl::Status s = Await(fd_.get(), events, deadline, waiting); !s.ok()) return Fail(s);
  }
}

absl::Status TlsStream::Write(std::string_view bytes, absl::Time deadline) {
  const std::string what = absl::StrCat("writing to ", peer_);
  while (!bytes.empty()) {
    std::size_t written = 0;
    absl::StatusOr<int> done = Drive(
        what, deadline, [&] { return SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written); });
    if (!done.ok()) return Explain(done.status());
    bytes.remove_prefix(written);
  }
  return absl::OkStatus();
}

// A server refusing the client certificate after a TLS 1.3 handshake sends an alert and closes:
// the next write may fail with ECONNRESET while the alert still waits in the socket.
absl::Status TlsStream::Explain(absl::Status status) {
  if (!absl::IsUnavailable(status)) return status;
  char byte;
  std::size_t got = 0;
  ERR_clear_error();
  const int result = SSL_read_ex(ssl_, &byte, 1, &got);
  const int error = SSL_get_error(ssl_, result);
  const unsigned long code = ERR_peek_last_error();
  std::string cause;
  if (result <= 0 && error == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) != SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    cause = SslFailure(ssl_, error, absl::StrCat("writing to ", peer_));
  }
  ERR_clear_error();
  return cause.empty() ? status : absl::UnavailableError(cause);
}

absl::StatusOr<std::size_t> TlsStream::Read(char* buffer, std::size_t size, absl::Time deadline) {
  std::size_t read = 0;
  absl::StatusOr<int> done = Drive(absl::StrCat("reading from ", peer_), deadline,
                                   [&] { return SSL_read_ex(ssl_, buffer, size, &read); });
  if (!done.ok()) return done.status();
  return read;
}

bool TlsStream::FitForReuse() {
  if (broken_ || pid_ != getpid()) return false;
  if (SSL_pending(ssl_) > 0) return false;
  pollfd p{fd_.get(), POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) == 0) return true;
  if ((p.revents & ~POLLIN) != 0) return false;
  // Bytes that are no application data (TLS 1.3 session tickets) are consumed here; anything
  // else, or the server closing, makes the stream unfit.
  char byte;
  std::size_t got = 0;
  ERR_clear_error();
  const int result = SSL_peek_ex(ssl_, &byte, 1, &got);
  const bool fit = result <= 0 && SSL_get_error(ssl_, result) == SSL_ERROR_WANT_READ;
  ERR_clear_error();
  return fit;
}

absl::Status TlsStream::Fail(absl::Status status) {
  broken_ = true;
  return status;
}

}  // namespace chunkcache::redis
