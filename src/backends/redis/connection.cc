#include "backends/redis/connection.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace chunkcache::redis {
namespace {

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// hiredis writes with write(2), which raises SIGPIPE when the server has closed the connection:
// by default that kills the process. A library must not change the process's signal handling,
// so while it writes, the calling thread blocks SIGPIPE and then consumes one it caused (the
// approach of libpq's pq_block_sigpipe). The write itself fails with EPIPE, reported as usual.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&sigpipe_);
    sigaddset(&sigpipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe_, &old_mask_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeBlock() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec no_wait{0, 0};
      sigtimedwait(&sigpipe_, nullptr, &no_wait);
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t sigpipe_;
  sigset_t old_mask_;
  bool was_pending_ = false;
};

}  // namespace

std::size_t SaturatingAdd(std::size_t a, std::size_t b) {
  return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max()
                                                         : a + b;
}

std::string_view ReplyText(const redisReply& reply) { return {reply.str, reply.len}; }

absl::Status ReplyError(std::string_view text) {
  const std::string message = absl::StrCat("redis: ", AbslView(text));
  const absl::string_view t = AbslView(text);
  if (absl::StartsWith(t, "NOAUTH") || absl::StartsWith(t, "WRONGPASS") ||
      absl::StartsWith(t, "NOPERM") || absl::StartsWith(t, "ERR invalid password") ||
      absl::StartsWith(t, "ERR AUTH") || absl::StartsWith(t, "ERR Client sent AUTH")) {
    return absl::PermissionDeniedError(message);
  }
  if (absl::StartsWith(t, "OOM")) return absl::ResourceExhaustedError(message);
  if (absl::StartsWith(t, "LOADING") || absl::StartsWith(t, "BUSY") ||
      absl::StartsWith(t, "CLUSTERDOWN") || absl::StartsWith(t, "TRYAGAIN") ||
      absl::StartsWith(t, "MASTERDOWN") || absl::StartsWith(t, "READONLY")) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

absl::Status UnexpectedReply(const redisReply& reply, std::string_view command) {
  if (reply.type == REDIS_REPLY_ERROR) return ReplyError(ReplyText(reply));
  return absl::InternalError(
      absl::StrFormat("redis: unexpected reply of type %d to %s", reply.type, AbslView(command)));
}

// Redis quotes an unknown command's arguments, e.g. when AUTH is renamed: "ERR unknown command
// 'AUTH', with args beginning with: '<password>'".
absl::Status CredentialsRefused(std::string_view command, std::string_view text) {
  std::string_view word = text.substr(0, text.find(' '));
  if (word.empty() || word.size() > 32 ||
      !std::all_of(word.begin(), word.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    word = "error";
  }
  const bool unknown = absl::StartsWith(AbslView(text), "ERR unknown command");
  return absl::Status(
      ReplyError(text).code(),
      absl::StrCat("redis: the server refused ", AbslView(command), " (", AbslView(word),
                   unknown ? ", unknown command: renamed or disabled on the server?" : "",
                   "); the rest of its reply is withheld, as it may quote the credentials"));
}

void Redact(std::string& text, std::string_view secret, std::size_t prefix) {
  if (secret.empty()) return;
  const std::string_view head = secret.substr(0, std::min(prefix, secret.size()));
  constexpr std::string_view kRedacted = "<redacted>";
  for (std::size_t at = text.find(head); at != std::string::npos;
       at = text.find(head, at + kRedacted.size())) {
    std::size_t length = head.size();
    while (length < secret.size() && at + length < text.size() &&
           text[at + length] == secret[length]) {
      ++length;
    }
    text.replace(at, length, kRedacted);
  }
}

// hiredis 0.14 allocates the element pointers of an array reply (8 bytes each) as soon as it
// reads the header "*N", before any element arrives, and has no limit of its own: a 12-byte
// "*666666663" from a broken or hostile server costs a 5.3 GB calloc. Each connection's reader
// therefore builds arrays through GuardedCreateArray, which first asks the ArrayGuard of the
// reply being read. A claim is admitted when it is at most the command's max_array and when all
// the elements claimed in the reply so far could arrive within its reply_bound (no element takes
// fewer than 3 bytes on the wire), so the pointers of one reply never exceed 8/3 of its bound.
class ArrayGuard {
 public:
  static constexpr std::size_t kSmallestElement = 3;  // "+\r\n"

  // The reply to `command` is next.
  void Expect(const Command& command) {
    command_ = &command;
    claimed_ = 0;
    refusal_ = absl::OkStatus();
  }

  bool Admit(int elements) {
    if (command_ == nullptr) return true;
    const std::size_t wanted = elements < 0 ? 0 : static_cast<std::size_t>(elements);
    claimed_ += wanted;
    if (elements >= 0 && wanted <= command_->max_array &&
        claimed_ <= command_->reply_bound / kSmallestElement) {
      return true;
    }
    refusal_ = absl::ResourceExhaustedError(absl::StrFormat(
        "redis: the reply to %s claims an array of %d elements; at most %d were expected",
        AbslView(command_->args.front()), elements,
        std::min(command_->max_array, command_->reply_bound / kSmallestElement)));
    return false;
  }

  // Why the last claim was refused (after hiredis reports it as out of memory).
  const absl::Status& refusal() const { return refusal_; }

 private:
  const Command* command_ = nullptr;
  std::size_t claimed_ = 0;
  absl::Status refusal_;
};

namespace {

// hiredis' default reply builders, captured from the first reader made.
const redisReplyObjectFunctions* hiredis_functions = nullptr;

void* GuardedCreateArray(const redisReadTask* task, int elements) {
  auto* guard = static_cast<ArrayGuard*>(task->privdata);
  if (guard != nullptr && !guard->Admit(elements)) return nullptr;  // hiredis: out of memory
  return hiredis_functions->createArray(task, elements);
}

// Makes `reader` build arrays through GuardedCreateArray, asking `guard`.
void GuardReader(redisReader* reader, ArrayGuard* guard) {
  static redisReplyObjectFunctions guarded = [reader] {
    hiredis_functions = reader->fn;
    redisReplyObjectFunctions functions = *reader->fn;
    functions.createArray = &GuardedCreateArray;
    return functions;
  }();
  reader->fn = &guarded;
  reader->privdata = guard;
}

}  // namespace

namespace {

// A hiredis connection to `endpoint`, made non-blocking, or why there is none.
absl::StatusOr<redisContext*> ConnectPlain(const Endpoint& endpoint, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  redisContext* context = endpoint.unix_path.empty()
                              ? redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv)
                              : redisConnectUnixWithTimeout(endpoint.unix_path.c_str(), tv);
  if (context == nullptr) return absl::ResourceExhaustedError("redis: out of memory");
  if (context->err != 0) {
    const std::string what =
        absl::StrCat("redis: cannot connect to ", endpoint.Name(), ": ", context->errstr);
    const bool timed_out = absl::StrContains(context->errstr, "timed out");
    redisFree(context);
    return timed_out ? absl::DeadlineExceededError(what) : absl::UnavailableError(what);
  }
  // hiredis treats EAGAIN as an error only in blocking mode: clear it and drive the socket
  // with poll() ourselves.
  fcntl(context->fd, F_SETFL, fcntl(context->fd, F_GETFL) | O_NONBLOCK);
  context->flags &= ~REDIS_BLOCK;
  return context;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const Endpoint& endpoint,
                                                             const ServerUrl& server,
                                                             absl::Duration timeout,
                                                             const TlsTarget* tls) {
  const absl::Time deadline = absl::Now() + timeout;
  std::unique_ptr<Connection> connection;
  if (tls == nullptr) {
    absl::StatusOr<redisContext*> context = ConnectPlain(endpoint, timeout);
    if (!context.ok()) return context.status();
    connection.reset(new Connection(*context, nullptr, nullptr));
  } else {
    if (!endpoint.unix_path.empty()) {
      return absl::InvalidArgumentError("redis: TLS is for TCP connections, not a unix socket");
    }
    RespReader reader(redisReaderCreate());
    if (reader == nullptr) return absl::ResourceExhaustedError("redis: out of memory");
    absl::StatusOr<std::unique_ptr<TlsStream>> stream =
        TlsStream::Connect(tls->context, endpoint.host, endpoint.port, tls->verify_name, deadline);
    if (!stream.ok()) return stream.status();
    connection.reset(new Connection(nullptr, *std::move(stream), std::move(reader)));
  }
  GuardReader(connection->reader_, connection->guard_.get());
  std::vector<Command> setup;
  const bool auth = !server.password.empty();
  if (auth) {
    setup.push_back({server.user.empty()
                         ? std::vector<std::string_view>{"AUTH", server.password}
                         : std::vector<std::string_view>{"AUTH", server.user, server.password}});
  }
  const std::string db = absl::StrCat(server.db);
  if (server.db != 0) setup.push_back({{"SELECT", db}});
  if (setup.empty()) return connection;
  absl::StatusOr<std::vector<Reply>> replies = connection->Pipeline(setup, deadline);
  if (!replies.ok()) return replies.status();
  for (std::size_t i = 0; i < replies->size(); ++i) {
    const redisReply& reply = *(*replies)[i];
    if (reply.type != REDIS_REPLY_ERROR) continue;
    return auth && i == 0 ? CredentialsRefused("AUTH", ReplyText(reply))
                          : ReplyError(ReplyText(reply));
  }
  return connection;
}

Connection::Connection(redisContext* context, std::unique_ptr<TlsStream> stream,
                       RespReader tls_reader)
    : context_(context),
      stream_(std::move(stream)),
      tls_reader_(std::move(tls_reader)),
      reader_(context != nullptr ? context->reader : tls_reader_.get()),
      pid_(getpid()),
      guard_(std::make_unique<ArrayGuard>()) {}

Connection::~Connection() {
  if (context_ != nullptr) redisFree(context_);
}

bool Connection::FitForReuse() const {
  if (broken_ || pid_ != getpid()) return false;
  if (reader_->pos < reader_->len) return false;
  if (stream_ != nullptr) return stream_->FitForReuse();
  if (sdslen(context_->obuf) != 0) return false;
  pollfd fd{context_->fd, POLLIN | POLLRDHUP, 0};
  return poll(&fd, 1, 0) == 0;
}

absl::StatusOr<std::vector<Reply>> Connection::Pipeline(absl::Span<const Command> commands,
                                                        absl::Time deadline) {
  std::size_t reply_budget = 0;
  for (const Command& command : commands) {
    reply_budget = SaturatingAdd(reply_budget, command.reply_bound);
  }
  if (absl::Status s = Send(commands, deadline); !s.ok()) return Fail(s);

  std::vector<Reply> replies;
  replies.reserve(commands.size());
  std::size_t received = 0;
  if (!commands.empty()) guard_->Expect(commands.front());
  while (replies.size() < commands.size()) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
      if (!guard_->refusal().ok()) return Fail(guard_->refusal());
      return Fail(absl::UnavailableError(absl::StrCat("redis: ", reader_->errstr)));
    }
    if (reply != nullptr) {
      replies.emplace_back(static_cast<redisReply*>(reply));
      if (replies.size() < commands.size()) guard_->Expect(commands[replies.size()]);
      continue;
    }
    absl::StatusOr<std::size_t> got = Receive(deadline);
    if (!got.ok()) return Fail(got.status());
    received += *got;
    if (received > reply_budget) {
      return Fail(absl::ResourceExhaustedError(absl::StrFormat(
          "redis: the reply exceeds %d bytes, more than the values asked for can hold",
          reply_budget)));
    }
  }
  // Bytes beyond the last reply: the server sent a reply nobody asked for, before or after
  // these, and which of them answer this call cannot be told. Fail rather than risk serving
  // another command's reply.
  if (const std::size_t extra = reader_->len - reader_->pos; extra > 0) {
    return Fail(absl::InternalError(absl::StrFormat(
        "redis: the server sent %d bytes beyond the replies asked for; the connection is "
        "dropped",
        extra)));
  }
  return replies;
}

absl::Status Connection::Stream(absl::Span<const Command> commands, absl::Time deadline,
                                ReplyHandler on_reply) {
  if (absl::Status s = Send(commands, deadline); !s.ok()) return Fail(s);
  // Bytes read since the stream began (any left unread before it counted in), and how many of
  // them the replies handed over so far took: the rest belong to the reply being read.
  std::size_t received = reader_->len - reader_->pos;
  std::size_t consumed = 0;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    const Command& command = commands[i];
    if (i > 0 && absl::Now() >= deadline) {
      return Fail(absl::DeadlineExceededError(
          "redis: the deadline passed before every reply of the pipeline was read"));
    }
    const auto too_large = [&] {
      return Fail(absl::ResourceExhaustedError(absl::StrFormat(
          "redis: the reply to %s exceeds %d bytes, more than the value asked for can hold",
          AbslView(command.args.front()), command.reply_bound)));
    };
    guard_->Expect(command);
    void* parsed = nullptr;
    while (true) {
      if (redisReaderGetReply(reader_, &parsed) != REDIS_OK) {
        if (!guard_->refusal().ok()) return Fail(guard_->refusal());
        return Fail(absl::UnavailableError(absl::StrCat("redis: ", reader_->errstr)));
      }
      if (parsed != nullptr) break;
      // Incomplete: everything unparsed is this reply's.
      if (received - consumed > command.reply_bound) return too_large();
      absl::StatusOr<std::size_t> got = Receive(deadline);
      if (!got.ok()) return Fail(got.status());
      received += *got;
    }
    Reply reply(static_cast<redisReply*>(parsed));
    const std::size_t unparsed = reader_->len - reader_->pos;
    const std::size_t size = received - unparsed - consumed;  // this reply's, if whole
    if (size > command.reply_bound) return too_large();
    consumed += size;
    const bool last = i + 1 == commands.size();
    if (last && unparsed > 0) {  // as in Pipeline: which replies answer this call is unknown
      return Fail(absl::InternalError(absl::StrFormat(
          "redis: the server sent %d bytes beyond the replies asked for; the connection is "
          "dropped",
          unparsed)));
    }
    if (absl::Status s = on_reply(i, std::move(reply)); !s.ok()) return last ? s : Fail(s);
  }
  return absl::OkStatus();
}

absl::Status Connection::Fail(absl::Status status) {
  broken_ = true;
  return status;
}

absl::Status Connection::Send(absl::Span<const Command> commands, absl::Time deadline) {
  std::string tls_out;  // over TLS: every command, formatted, for one write
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const Command& command : commands) {
    argv.clear();
    lengths.clear();
    for (const std::string_view arg : command.args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    const int argc = static_cast<int>(argv.size());
    if (context_ != nullptr) {
      if (redisAppendCommandArgv(context_, argc, argv.data(), lengths.data()) != REDIS_OK) {
        return absl::ResourceExhaustedError("redis: cannot buffer a command");
      }
      continue;
    }
    char* formatted = nullptr;
    const int length = redisFormatCommandArgv(&formatted, argc, argv.data(), lengths.data());
    if (length < 0) return absl::ResourceExhaustedError("redis: cannot buffer a command");
    tls_out.append(formatted, static_cast<std::size_t>(length));
    redisFreeCommand(formatted);
  }
  return context_ != nullptr ? Flush(deadline) : stream_->Write(tls_out, deadline);
}

absl::Status Connection::Flush(absl::Time deadline) {
  SigpipeBlock no_sigpipe;  // a server dying mid-write must not kill the process
  int done = 0;
  while (true) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("redis: ", context_->errstr));
    }
    if (done) return absl::OkStatus();
    if (absl::Status s = Await(context_->fd, POLLOUT, deadline, "redis: the command"); !s.ok()) {
      return s;
    }
  }
}

absl::StatusOr<std::size_t> Connection::Receive(absl::Time deadline) {
  if (stream_ != nullptr) {
    char buffer[16 * 1024];
    absl::StatusOr<std::size_t> got = stream_->Read(buffer, sizeof(buffer), deadline);
    if (!got.ok()) return got.status();
    if (redisReaderFeed(reader_, buffer, *got) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("redis: ", reader_->errstr));
    }
    return *got;
  }
  if (absl::Status s = Await(context_->fd, POLLIN, deadline, "redis: the command"); !s.ok()) {
    return s;
  }
  const std::size_t before = reader_->len;
  if (redisBufferRead(context_) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("redis: ", context_->errstr));
  }
  return reader_->len - std::min(before, reader_->len);
}

}  // namespace chunkcache::redis
