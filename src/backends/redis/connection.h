// backends/redis/connection.h — one connection to a Redis server, its commands and replies, and
// the Status of what a server answers.
//
// A Connection is opened (AUTH and SELECT replayed), sends pipelines of Commands and reads one
// Reply per command, each step bounded by a deadline. It is either plain (TCP or a unix socket:
// hiredis drives the socket in non-blocking mode and poll() waits) or TLS (a TlsStream carries
// the bytes; hiredis formats the commands and its redisReader parses the replies). Either way a
// reply may claim no more than its Command allows (reply_bound bytes, max_array elements per
// array) before hiredis allocates for it. A plain write blocks SIGPIPE on the calling thread
// only and a TLS write sends with MSG_NOSIGNAL, so a server that dies mid-write fails the call
// instead of the process.
//
//   absl::StatusOr<std::unique_ptr<Connection>> connection =
//       Connection::Open(server.seed, server, absl::Seconds(1));  // plain; TLS: pass a TlsTarget
//   const Command ping{{"PING"}};
//   absl::StatusOr<std::vector<Reply>> replies =
//       (*connection)->Pipeline({&ping, 1}, absl::Now() + absl::Seconds(1));
//
// Stream sends a pipeline the same way and hands each reply over as soon as it is whole, so that
// the first replies can be used while the later ones are still on their way.
//
// Errors: connection refused or lost, a TLS server that cannot be trusted (tls.h) → Unavailable;
// past the deadline → DeadlineExceeded; a reply larger than allowed → ResourceExhausted; bytes
// nobody asked for → Internal. A refused AUTH names the command and the error code only
// (CredentialsRefused): the server's text may quote the password.
//
// Thread safety: a Connection is used by one thread at a time (a pool hands it out); the free
// functions are thread-safe.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_CONNECTION_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_CONNECTION_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/redis/tls.h"
#include "backends/redis/url.h"
#include "hiredis/hiredis.h"

namespace chunkcache::redis {

// Reply bytes allowed per command beyond the values themselves (RESP framing, error text).
inline constexpr std::size_t kReplyOverhead = 256;

// a + b, or SIZE_MAX if that overflows (max_item_size may be anything up to SIZE_MAX).
std::size_t SaturatingAdd(std::size_t a, std::size_t b);

// One command and the limits of its reply.
struct Command {
  std::vector<std::string_view> args;
  int slot = -1;                             // cluster routing; -1 outside a cluster
  std::size_t reply_bound = kReplyOverhead;  // most reply bytes it may legitimately produce
  std::size_t max_array = 0;                 // most elements one array in its reply may claim
};

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct RespReaderDeleter {
  void operator()(redisReader* reader) const { redisReaderFree(reader); }
};
using RespReader = std::unique_ptr<redisReader, RespReaderDeleter>;

// How a connection reaches its server over TLS.
struct TlsTarget {
  std::shared_ptr<const TlsContext> context;  // the backend's settings and session store
  std::string verify_name;  // the name the certificate must carry (tls.h); empty: the address
};

// The text of a string, status or error reply.
std::string_view ReplyText(const redisReply& reply);

// The Status for an error reply, by the Redis error code that starts its text: NOAUTH, WRONGPASS,
// NOPERM → PermissionDenied; OOM → ResourceExhausted; LOADING, BUSY, CLUSTERDOWN, TRYAGAIN,
// MASTERDOWN, READONLY → Unavailable; anything else → Internal. The message quotes the text.
absl::Status ReplyError(std::string_view text);

// ReplyError for an error reply, Internal naming `command` for any other unexpected reply.
absl::Status UnexpectedReply(const redisReply& reply, std::string_view command);

// The Status for an error reply to AUTH (or HELLO): ReplyError's code, and a fixed text naming
// `command` and the reply's error code word; the rest of the reply is withheld, as a server may
// quote the command's arguments (the password among them) in it.
absl::Status CredentialsRefused(std::string_view command, std::string_view text);

// Replaces every appearance of `secret` in `text` by "<redacted>"; for a secret of more than
// `prefix` bytes, every appearance of its first `prefix` bytes (and as much more of it as
// follows) too.
void Redact(std::string& text, std::string_view secret, std::size_t prefix);

// What a reply being read may claim (connection.cc).
class ArrayGuard;

// A connection driven in non-blocking mode, so that every call is bounded by a deadline.
class Connection {
 public:
  // Connects to `endpoint` (an IP address or a unix socket: no name lookup), over TLS if `tls`
  // is given (TCP only; the handshake and verification included), and sends AUTH and SELECT as
  // `server` asks, all within `timeout`.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const Endpoint& endpoint,
                                                          const ServerUrl& server,
                                                          absl::Duration timeout,
                                                          const TlsTarget* tls = nullptr);

  // Closes the socket without sending anything (hiredis' redisFree sends no QUIT, a TlsStream no
  // close_notify): harmless in a forked child whose parent still uses the same connection.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Whether the connection may serve another call: it has not failed, belongs to this process
  // (a connection inherited through fork() is shared with the parent: both would read each
  // other's replies), and holds nothing unread, neither in hiredis' buffer nor in the socket. A
  // well-behaved server sends nothing unasked; bytes waiting now are a reply nobody asked for
  // (or the server closing), and reading them as the next call's reply would serve one key's
  // value for another. Every command sent on it has been answered, or it is broken. Over TLS,
  // records that carry no application data (session tickets) are consumed here.
  bool FitForReuse() const;

  // Sends `commands` in one write and reads one reply each. Any failure leaves the connection
  // broken (its stream position is unknown).
  absl::StatusOr<std::vector<Reply>> Pipeline(absl::Span<const Command> commands,
                                              absl::Time deadline);

  // Receives the replies of Stream: the index of the command answered and its reply. An error
  // stops the stream.
  using ReplyHandler = absl::FunctionRef<absl::Status(std::size_t index, Reply reply)>;

  // Sends `commands` in one write, then reads their replies one at a time and hands each to
  // `on_reply` as soon as it is whole, in order, on the calling thread. Each reply may take no
  // more than its own command's reply_bound bytes (ResourceExhausted); `deadline` bounds the
  // whole stream, the time spent in `on_reply` included (DeadlineExceeded). Stops at the first
  // error, the connection's or the one `on_reply` returns, and returns it; the connection is
  // then broken if a reply is left unread (and after any failure of its own), so it is never
  // reused with replies in flight. Bytes beyond the last reply fail the stream (Internal) before
  // that reply is handed over.
  absl::Status Stream(absl::Span<const Command> commands, absl::Time deadline,
                      ReplyHandler on_reply);

 private:
  Connection(redisContext* context, std::unique_ptr<TlsStream> stream, RespReader tls_reader);

  absl::Status Fail(absl::Status status);
  // Sends `commands` in one write.
  absl::Status Send(absl::Span<const Command> commands, absl::Time deadline);
  absl::Status Flush(absl::Time deadline);
  // Waits for more reply bytes and hands them to reader_; how many came.
  absl::StatusOr<std::size_t> Receive(absl::Time deadline);

  redisContext* const context_;              // plain; nullptr over TLS
  const std::unique_ptr<TlsStream> stream_;  // TLS; nullptr when plain
  const RespReader tls_reader_;              // TLS; nullptr when plain
  redisReader* const reader_;                // the replies' parser: hiredis' or tls_reader_
  const pid_t pid_;                          // the process that opened it
  std::unique_ptr<ArrayGuard> guard_;        // the reader's privdata
  bool broken_ = false;
};

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_CONNECTION_H_
