#include "chunkcache/redis_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "hiredis/hiredis.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

using internal::CondVar;
using internal::Mutex;
using internal::MutexLock;

constexpr int kSlots = 16384;
constexpr int kMaxRedirects = 5;
// Reply bytes allowed per command beyond the values themselves (RESP framing, error text).
constexpr std::size_t kReplyOverhead = 256;
constexpr absl::Duration kTryAgainPause = absl::Milliseconds(10);
// Slot-map refreshes after a node failure, CLUSTERDOWN or TRYAGAIN start at most this often per
// backend: often enough to follow a failover within a fraction of a second, rare enough that a
// dead master does not turn every failing call into a CLUSTER SLOTS on the survivors.
constexpr absl::Duration kMinRefreshInterval = absl::Milliseconds(200);
// A node that failed less than this long ago is asked for the slot map only after the others.
constexpr absl::Duration kFailedNodeMemory = absl::Seconds(10);
// A finished name lookup is reused for new connections this long (a reconnect storm does not
// become a lookup storm); after that the next connection looks the name up again.
constexpr absl::Duration kLookupReuse = absl::Seconds(1);
// Connections beyond pool_size (opened while more callers than pool_size called at once) stay
// pooled until unused this long: threads that outnumber the pool keep their connections instead
// of opening and closing one per call (each close leaves a TIME_WAIT socket behind).
constexpr absl::Duration kSurplusIdle = absl::Seconds(30);
// Node pools kept for nodes outside the slot map (ASK targets, nodes that left the cluster),
// beyond those of the seed and the map's masters and replicas; the least recently used go first.
constexpr std::size_t kMaxSparePools = 32;
// Failed nodes remembered for ordering slot-map refreshes; past it, stale entries are dropped.
constexpr std::size_t kMaxFailedNodes = 256;
// A password is redacted wherever its first this many bytes appear (servers quote a truncated
// prefix of long arguments), or the whole password if it is shorter.
constexpr std::size_t kRedactPrefix = 16;

// a + b, or SIZE_MAX if that overflows (max_item_size may be anything up to SIZE_MAX).
std::size_t SaturatingAdd(std::size_t a, std::size_t b) {
  return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max()
                                                         : a + b;
}

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// ---- URL -------------------------------------------------------------------------------------

struct Endpoint {
  std::string host;  // empty for a unix socket
  int port = 0;
  std::string unix_path;

  std::string Name() const { return unix_path.empty() ? absl::StrCat(host, ":", port) : unix_path; }
};

struct ServerSettings {
  Endpoint seed;
  std::string user;
  std::string password;
  int db = 0;
};

absl::Status BadUrl(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "chunkcache: bad Redis URL (", AbslView(why),
      "); expected redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N]"));
}

absl::StatusOr<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= s.size()) return BadUrl("truncated %-escape");
    const auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, value, 16);
    if (ec != std::errc() || end != s.data() + i + 3) return BadUrl("bad %-escape");
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

absl::StatusOr<int> ParseDb(std::string_view text) {
  int db = 0;
  if (!absl::SimpleAtoi(AbslView(text), &db) || db < 0) return BadUrl("bad database number");
  return db;
}

absl::StatusOr<ServerSettings> ParseUrl(std::string_view url) {
  ServerSettings settings;
  if (absl::StartsWith(AbslView(url), "unix://")) {
    std::string_view rest = url.substr(7);
    if (const std::size_t q = rest.find("?db="); q != std::string_view::npos) {
      absl::StatusOr<int> db = ParseDb(rest.substr(q + 4));
      if (!db.ok()) return db.status();
      settings.db = *db;
      rest = rest.substr(0, q);
    }
    if (rest.empty() || rest[0] != '/') return BadUrl("a unix socket path must be absolute");
    settings.seed.unix_path = std::string(rest);
    return settings;
  }
  if (!absl::StartsWith(AbslView(url), "redis://")) return BadUrl("unknown scheme");
  std::string_view rest = url.substr(8);
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    if (slash + 1 < rest.size()) {
      absl::StatusOr<int> db = ParseDb(rest.substr(slash + 1));
      if (!db.ok()) return db.status();
      settings.db = *db;
    }
    rest = rest.substr(0, slash);
  }
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view credentials = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const std::size_t colon = credentials.find(':');
    absl::StatusOr<std::string> user = PercentDecode(credentials.substr(0, colon));
    if (!user.ok()) return user.status();
    settings.user = *user;
    if (colon != std::string_view::npos) {
      absl::StatusOr<std::string> password = PercentDecode(credentials.substr(colon + 1));
      if (!password.ok()) return password.status();
      settings.password = *password;
    } else {  // redis://password@host, as several clients accept
      settings.password = std::exchange(settings.user, "");
    }
  }
  std::string_view port_text;
  if (!rest.empty() && rest[0] == '[') {  // [ipv6]:port
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return BadUrl("unclosed [");
    settings.seed.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest[0] == ':') port_text = rest.substr(1);
  } else {
    const std::size_t colon = rest.rfind(':');
    settings.seed.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
  }
  if (settings.seed.host.empty()) return BadUrl("no host");
  settings.seed.port = 6379;
  if (!port_text.empty() && (!absl::SimpleAtoi(AbslView(port_text), &settings.seed.port) ||
                             settings.seed.port <= 0 || settings.seed.port > 65535)) {
    return BadUrl("bad port");
  }
  return settings;
}

// ---- Replies and errors ----------------------------------------------------------------------

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

std::string_view ReplyText(const redisReply& reply) { return {reply.str, reply.len}; }

// The Status for an error reply, by the Redis error code that starts its text.
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

// The Status for an error reply to AUTH (or HELLO): the code ReplyError gives it, and a fixed
// text naming the command and the reply's error code word. The rest of the reply is left out:
// a server may quote the command's arguments in it, the password among them (Redis does for an
// unknown command, e.g. when AUTH is renamed: "ERR unknown command 'AUTH', with args beginning
// with: '<password>'").
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

// Replaces every appearance of `secret` in `text` by "<redacted>"; for a secret of more than
// `prefix` bytes, every appearance of its first `prefix` bytes (and as much more of it as
// follows) too.
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

// ---- Commands --------------------------------------------------------------------------------

struct Command {
  std::vector<std::string_view> args;
  int slot = -1;                             // cluster routing; -1 outside a cluster
  std::size_t reply_bound = kReplyOverhead;  // most reply bytes it may legitimately produce
  std::size_t max_array = 0;                 // most elements one array in its reply may claim
};

// ---- Array headers ---------------------------------------------------------------------------

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

std::string PxArgument(absl::Duration ttl) {
  return absl::StrCat(std::max<std::int64_t>(1, absl::ToInt64Milliseconds(ttl)));
}

// ---- Name lookup -----------------------------------------------------------------------------

// Whether `host` is an IPv4 or IPv6 address literal: connecting to one needs no name lookup.
bool IsIpLiteral(const std::string& host) {
  in6_addr address;
  return inet_pton(AF_INET, host.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &address) == 1;
}

// One getaddrinfo() of a host name on a thread of its own. libc's lookup can be neither bounded
// nor cancelled, so callers wait for it at most until their deadline and leave the thread to
// finish by itself; the thread and its waiters share this object.
class Lookup {
 public:
  // Starts the lookup; nullptr if no thread could be started.
  static std::shared_ptr<Lookup> Start(std::string host) {
    auto lookup = std::make_shared<Lookup>(std::move(host));
    try {
      std::thread([lookup] { lookup->Run(); }).detach();
    } catch (const std::system_error&) {
      return nullptr;
    }
    return lookup;
  }

  explicit Lookup(std::string host) : host_(std::move(host)), pid_(getpid()) {}

  // Whether a new connection may use (or wait for) this lookup: it still runs or finished less
  // than kLookupReuse ago, in this process (a lookup under way at fork() never ends in the child).
  bool Usable(absl::Time now) {
    if (pid_ != getpid()) return false;
    MutexLock lock(&mu_);
    return !done_ || now - finished_ < kLookupReuse;
  }

  // The host's addresses, IPv4 first (as hiredis prefers them); DeadlineExceeded if the lookup
  // has not answered by `deadline`.
  absl::StatusOr<std::vector<std::string>> Wait(absl::Time deadline) {
    MutexLock lock(&mu_);
    while (!done_) {
      if (cv_.WaitWithDeadline(&mu_, deadline) && !done_) {
        return absl::DeadlineExceededError(absl::StrCat(
            "redis: the name lookup of ", host_, " did not answer within the connect timeout"));
      }
    }
    return result_;
  }

 private:
  void Run() {
    absl::StatusOr<std::vector<std::string>> result;
    try {
      result = Resolve();
    } catch (...) {  // bad_alloc: a detached thread must not take the process down
      result = absl::ResourceExhaustedError(absl::StrCat("redis: out of memory resolving ", host_));
    }
    MutexLock lock(&mu_);
    result_ = std::move(result);
    done_ = true;
    finished_ = absl::Now();
    cv_.SignalAll();
  }

  absl::StatusOr<std::vector<std::string>> Resolve() const {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int error = getaddrinfo(host_.c_str(), nullptr, &hints, &found); error != 0) {
      return absl::UnavailableError(
          absl::StrCat("redis: cannot resolve ", host_, ": ", gai_strerror(error)));
    }
    std::vector<std::string> v4, v6;
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
      const void* address = nullptr;
      if (a->ai_family == AF_INET) {
        address = &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr;
      } else if (a->ai_family == AF_INET6) {
        address = &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr;
      }
      char text[INET6_ADDRSTRLEN];
      if (address == nullptr || inet_ntop(a->ai_family, address, text, sizeof(text)) == nullptr) {
        continue;
      }
      std::vector<std::string>& list = a->ai_family == AF_INET ? v4 : v6;
      if (std::find(list.begin(), list.end(), text) == list.end()) list.emplace_back(text);
    }
    freeaddrinfo(found);
    v4.insert(v4.end(), v6.begin(), v6.end());
    if (v4.empty()) {
      return absl::UnavailableError(absl::StrCat("redis: ", host_, " has no IP address"));
    }
    return v4;
  }

  const std::string host_;
  const pid_t pid_;
  Mutex mu_;
  CondVar cv_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time finished_ ABSL_GUARDED_BY(mu_);
  absl::StatusOr<std::vector<std::string>> result_ ABSL_GUARDED_BY(mu_);
};

// ---- One connection --------------------------------------------------------------------------

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

// A hiredis connection driven in non-blocking mode, so that every call is bounded by a deadline.
// Not thread-safe: a pool hands it to one caller at a time.
class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const Endpoint& endpoint,
                                                          const ServerSettings& settings,
                                                          absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    const timeval tv = absl::ToTimeval(timeout);
    redisContext* context = endpoint.unix_path.empty()
                                ? redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv)
                                : redisConnectUnixWithTimeout(endpoint.unix_path.c_str(), tv);
    if (context == nullptr) return absl::ResourceExhaustedError("redis: out of memory");
    auto connection = std::unique_ptr<Connection>(new Connection(context));
    if (context->err != 0) {
      const std::string what =
          absl::StrCat("redis: cannot connect to ", endpoint.Name(), ": ", context->errstr);
      return absl::StrContains(context->errstr, "timed out") ? absl::DeadlineExceededError(what)
                                                             : absl::UnavailableError(what);
    }
    GuardReader(context->reader, &connection->guard_);
    // hiredis treats EAGAIN as an error only in blocking mode: clear it and drive the socket
    // with poll() ourselves.
    fcntl(context->fd, F_SETFL, fcntl(context->fd, F_GETFL) | O_NONBLOCK);
    context->flags &= ~REDIS_BLOCK;

    std::vector<Command> setup;
    const bool auth = !settings.password.empty();
    if (auth) {
      setup.push_back(
          {settings.user.empty()
               ? std::vector<std::string_view>{"AUTH", settings.password}
               : std::vector<std::string_view>{"AUTH", settings.user, settings.password}});
    }
    const std::string db = absl::StrCat(settings.db);
    if (settings.db != 0) setup.push_back({{"SELECT", db}});
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

  // Closes the socket without sending anything (hiredis' redisFree sends no QUIT): harmless in a
  // forked child whose parent still uses the same connection.
  ~Connection() { redisFree(context_); }

  // Whether the connection may serve another call: it has not failed, belongs to this process
  // (a connection inherited through fork() is shared with the parent: both would read each
  // other's replies), and holds nothing unread, neither in hiredis' buffer nor in the socket. A
  // well-behaved server sends nothing unasked; bytes waiting now are a reply nobody asked for
  // (or the server closing), and reading them as the next call's reply would serve one key's
  // value for another. Every command sent on it has been answered, or it is broken.
  bool FitForReuse() const {
    if (broken_ || pid_ != getpid()) return false;
    if (context_->reader->pos < context_->reader->len || sdslen(context_->obuf) != 0) return false;
    pollfd fd{context_->fd, POLLIN | POLLRDHUP, 0};
    return poll(&fd, 1, 0) == 0;
  }

  // Sends `commands` in one write and reads one reply each. Any failure leaves the connection
  // broken (its stream position is unknown).
  absl::StatusOr<std::vector<Reply>> Pipeline(absl::Span<const Command> commands,
                                              absl::Time deadline) {
    std::size_t reply_budget = 0;
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const Command& command : commands) {
      argv.clear();
      lengths.clear();
      for (const std::string_view arg : command.args) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
      }
      if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(),
                                 lengths.data()) != REDIS_OK) {
        return Fail(absl::ResourceExhaustedError("redis: cannot buffer a command"));
      }
      reply_budget = SaturatingAdd(reply_budget, command.reply_bound);
    }
    if (absl::Status s = Flush(deadline); !s.ok()) return Fail(s);

    std::vector<Reply> replies;
    replies.reserve(commands.size());
    std::size_t received = 0;
    if (!commands.empty()) guard_.Expect(commands.front());
    while (replies.size() < commands.size()) {
      void* reply = nullptr;
      if (redisGetReplyFromReader(context_, &reply) != REDIS_OK) {
        if (!guard_.refusal().ok()) return Fail(guard_.refusal());
        return Fail(absl::UnavailableError(absl::StrCat("redis: ", context_->errstr)));
      }
      if (reply != nullptr) {
        replies.emplace_back(static_cast<redisReply*>(reply));
        if (replies.size() < commands.size()) guard_.Expect(commands[replies.size()]);
        continue;
      }
      if (absl::Status s = WaitFor(POLLIN, deadline); !s.ok()) return Fail(s);
      const std::size_t before = context_->reader->len;
      if (redisBufferRead(context_) != REDIS_OK) {
        return Fail(absl::UnavailableError(absl::StrCat("redis: ", context_->errstr)));
      }
      received += context_->reader->len - std::min(before, context_->reader->len);
      if (received > reply_budget) {
        return Fail(absl::ResourceExhaustedError(absl::StrFormat(
            "redis: the reply exceeds %d bytes, more than the values asked for can hold",
            reply_budget)));
      }
    }
    // Bytes beyond the last reply: the server sent a reply nobody asked for, before or after
    // these, and which of them answer this call cannot be told. Fail rather than risk serving
    // another command's reply.
    if (const std::size_t extra = context_->reader->len - context_->reader->pos; extra > 0) {
      return Fail(absl::InternalError(absl::StrFormat(
          "redis: the server sent %d bytes beyond the replies asked for; the connection is "
          "dropped",
          extra)));
    }
    return replies;
  }

 private:
  explicit Connection(redisContext* context) : context_(context), pid_(getpid()) {}

  absl::Status Fail(absl::Status status) {
    broken_ = true;
    return status;
  }

  absl::Status Flush(absl::Time deadline) {
    SigpipeBlock no_sigpipe;  // a server dying mid-write must not kill the process
    int done = 0;
    while (true) {
      if (redisBufferWrite(context_, &done) != REDIS_OK) {
        return absl::UnavailableError(absl::StrCat("redis: ", context_->errstr));
      }
      if (done) return absl::OkStatus();
      if (absl::Status s = WaitFor(POLLOUT, deadline); !s.ok()) return s;
    }
  }

  absl::Status WaitFor(short events, absl::Time deadline) {
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      pollfd fd{context_->fd, events, 0};
      const int ready = poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (ready > 0) return absl::OkStatus();
      if (ready < 0 && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("redis: poll: ", std::strerror(errno)));
      }
    }
    return absl::DeadlineExceededError("redis: the command timed out");
  }

  redisContext* const context_;
  const pid_t pid_;   // the process that opened it
  ArrayGuard guard_;  // the reader's privdata
  bool broken_ = false;
};

// Idle connections to one node, and the lookup of its name.
//
// Up to max_idle connections are kept however long they stay unused; more (opened while more
// callers than that called at once) are kept too until unused for kSurplusIdle. With max_idle 0,
// none is kept. The most recently released is taken first, so the surplus ones, at the bottom,
// age out once the load drops.
class NodePool {
 public:
  NodePool(Endpoint endpoint, std::size_t max_idle, std::atomic<std::uint64_t>* discarded)
      : endpoint_(std::move(endpoint)),
        literal_(endpoint_.unix_path.empty() && IsIpLiteral(endpoint_.host)),
        max_idle_(max_idle),
        discarded_(discarded) {}

  const Endpoint& endpoint() const { return endpoint_; }

  // A pooled connection fit for reuse, or nullptr. Unfit ones (see Connection::FitForReuse) are
  // closed on the way.
  std::unique_ptr<Connection> TakeIdle() {
    std::vector<std::unique_ptr<Connection>> unfit;  // closed after the lock is released
    std::unique_ptr<Connection> connection;
    {
      MutexLock lock(&mu_);
      Trim(absl::Now(), unfit);
      while (!idle_.empty() && connection == nullptr) {
        std::unique_ptr<Connection> candidate = std::move(idle_.back().connection);
        idle_.pop_back();
        if (candidate->FitForReuse()) {
          connection = std::move(candidate);
        } else {
          unfit.push_back(std::move(candidate));
        }
      }
    }
    Discarded(unfit.size());
    return connection;
  }

  void Release(std::unique_ptr<Connection> connection) {
    if (!connection->FitForReuse()) {
      Discarded(1);
      return;
    }
    if (max_idle_ == 0) return;
    std::vector<std::unique_ptr<Connection>> surplus;
    {
      const absl::Time now = absl::Now();
      MutexLock lock(&mu_);
      idle_.push_back({std::move(connection), now});
      Trim(now, surplus);
    }
    Discarded(surplus.size());
  }

  // Closes the idle connections: the node refused a new one, so they are dead too.
  void Clear() {
    std::vector<Idle> idle;
    MutexLock lock(&mu_);
    idle.swap(idle_);
  }

  // The TCP node's addresses: its host if that is an IP literal, else what a lookup (shared by
  // concurrent callers, reused for kLookupReuse) answers by `deadline`.
  absl::StatusOr<std::vector<std::string>> Resolve(absl::Time deadline) {
    if (literal_) return std::vector<std::string>{endpoint_.host};
    std::shared_ptr<Lookup> lookup;
    {
      MutexLock lock(&mu_);
      if (lookup_ == nullptr || !lookup_->Usable(absl::Now())) {
        lookup_ = Lookup::Start(endpoint_.host);
      }
      lookup = lookup_;
    }
    if (lookup == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("redis: cannot start a thread to look up ", endpoint_.host));
    }
    return lookup->Wait(deadline);
  }

 private:
  struct Idle {
    std::unique_ptr<Connection> connection;
    absl::Time released;
  };

  // Moves the surplus connections unused for kSurplusIdle (the oldest, at the front) to `out`.
  void Trim(absl::Time now, std::vector<std::unique_ptr<Connection>>& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::size_t stale = 0;
    while (idle_.size() - stale > max_idle_ && now - idle_[stale].released >= kSurplusIdle) {
      ++stale;
    }
    for (std::size_t i = 0; i < stale; ++i) out.push_back(std::move(idle_[i].connection));
    idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(stale));
  }

  void Discarded(std::size_t n) { discarded_->fetch_add(n, std::memory_order_relaxed); }

  const Endpoint endpoint_;
  const bool literal_;
  const std::size_t max_idle_;
  std::atomic<std::uint64_t>* const discarded_;  // the backend's counter
  Mutex mu_;
  std::vector<Idle> idle_ ABSL_GUARDED_BY(mu_);  // oldest release first
  std::shared_ptr<Lookup> lookup_ ABSL_GUARDED_BY(mu_);
};

// Which node serves each slot.
struct SlotMap {
  std::vector<std::string> nodes;             // "host:port" of the masters
  std::array<std::uint16_t, kSlots> owner{};  // index into nodes
  std::vector<std::string> replicas;          // "host:port", asked for the map too
};

// A redirect reply: "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381".
struct Redirect {
  bool ask = false;
  std::string node;
};

std::optional<Redirect> ParseRedirect(const redisReply& reply) {
  if (reply.type != REDIS_REPLY_ERROR) return std::nullopt;
  const std::string_view text = ReplyText(reply);
  const bool moved = absl::StartsWith(AbslView(text), "MOVED ");
  const bool ask = absl::StartsWith(AbslView(text), "ASK ");
  if (!moved && !ask) return std::nullopt;
  const std::size_t space = text.rfind(' ');
  return Redirect{ask, std::string(text.substr(space + 1))};
}

absl::StatusOr<Endpoint> EndpointOf(std::string_view node) {
  const std::size_t colon = node.rfind(':');
  Endpoint endpoint;
  if (colon == std::string_view::npos ||
      !absl::SimpleAtoi(AbslView(node.substr(colon + 1)), &endpoint.port)) {
    return absl::InternalError(absl::StrCat("redis: bad node address ", AbslView(node)));
  }
  endpoint.host = std::string(node.substr(0, colon));
  if (endpoint.host.size() > 2 && endpoint.host.front() == '[') {
    endpoint.host = endpoint.host.substr(1, endpoint.host.size() - 2);
  }
  return endpoint;
}

}  // namespace

// ---- CRC16 slots -----------------------------------------------------------------------------

int RedisClusterSlot(std::string_view key) {
  // The hash tag: what is between the first '{' and the first '}' after it, if not empty.
  if (const std::size_t open = key.find('{'); open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  std::uint16_t crc = 0;  // CRC16-XMODEM: polynomial 0x1021, initial value 0
  for (const char c : key) {
    crc ^= static_cast<std::uint16_t>(static_cast<std::uint8_t>(c)) << 8;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

// ---- The backend -----------------------------------------------------------------------------

class RedisBackend::Impl {
 public:
  explicit Impl(RedisBackendOptions options) : options_(std::move(options)) {}

  absl::Status Init() { return Scrub(InitUnscrubbed()); }

  absl::Status InitUnscrubbed() {
    if (options_.pool_size < 0 || options_.max_item_size == 0 ||
        options_.connect_timeout <= absl::ZeroDuration() ||
        options_.command_timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          "chunkcache: RedisBackendOptions need positive timeouts and max_item_size and a "
          "pool_size of at least 0");
    }
    absl::StatusOr<ServerSettings> settings = ParseUrl(options_.url);
    if (!settings.ok()) return settings.status();
    settings_ = *std::move(settings);
    if (options_.cluster) {
      if (!settings_.seed.unix_path.empty() || settings_.db != 0) {
        return absl::InvalidArgumentError(
            "chunkcache: a Redis Cluster is reached over TCP and has only database 0");
      }
      return RefreshSlotMap(std::min(
          absl::Now() + options_.connect_timeout + options_.command_timeout, CallDeadline()));
    }
    // Reach the server now, so a bad address or password shows at creation.
    const Command ping{{"PING"}};
    absl::StatusOr<std::vector<Reply>> replies = Run(Seed(), {&ping, 1}, CommandDeadline());
    if (!replies.ok()) return replies.status();
    if ((*replies)[0]->type == REDIS_REPLY_ERROR) return ReplyError(ReplyText(*(*replies)[0]));
    return absl::OkStatus();
  }

  std::size_t max_item_size() const { return options_.max_item_size; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) {
    Count(calls_);
    std::vector<std::optional<std::string>> values(keys.size());
    if (keys.empty()) return values;
    // One MGET per slot (a cluster refuses keys of several slots in one command); a single
    // node needs only one.
    std::vector<Command> commands;
    std::vector<std::vector<std::size_t>> positions;  // key indices answered by each command
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          positions.clear();
          GroupBySlot(
              keys.size(), [&](std::size_t i) { return keys[i]; },
              [&](int slot) {
                commands.push_back({{"MGET"}, slot, kReplyOverhead});
                positions.emplace_back();
              },
              [&](std::size_t i) {
                commands.back().args.push_back(keys[i]);
                commands.back().reply_bound =
                    SaturatingAdd(commands.back().reply_bound,
                                  SaturatingAdd(options_.max_item_size, kReplyOverhead));
                ++commands.back().max_array;
                positions.back().push_back(i);
              });
        },
        /*idempotent=*/true);
    if (!replies.ok()) return Failed(replies.status());
    for (std::size_t c = 0; c < commands.size(); ++c) {
      const redisReply& reply = *(*replies)[c];
      if (reply.type != REDIS_REPLY_ARRAY || reply.elements != positions[c].size()) {
        return Failed(UnexpectedReply(reply, "MGET"));
      }
      for (std::size_t e = 0; e < reply.elements; ++e) {
        const redisReply& element = *reply.element[e];
        if (element.type == REDIS_REPLY_STRING) {
          values[positions[c][e]].emplace(element.str, element.len);
        } else if (element.type != REDIS_REPLY_NIL) {
          return Failed(UnexpectedReply(element, "MGET"));
        }
      }
    }
    return values;
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
    Count(calls_);
    if (absl::Status s = CheckItems(items, ttl); !s.ok()) return Failed(s);
    const std::string px = PxArgument(ttl);
    std::vector<Command> commands;
    // SET of a given value is idempotent: sending it again after an unknown outcome stores the
    // same bytes (with a TTL that starts a little later).
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          for (const KeyValue& item : items) {
            Command command{{"SET", item.key, item.value}, SlotOf(item.key)};
            if (ttl != absl::InfiniteDuration()) {
              command.args.push_back("PX");
              command.args.push_back(px);
            }
            commands.push_back(std::move(command));
          }
        },
        /*idempotent=*/true);
    if (!replies.ok()) return Failed(replies.status());
    for (const Reply& reply : *replies) {
      if (reply->type != REDIS_REPLY_STATUS) return Failed(UnexpectedReply(*reply, "SET"));
    }
    return absl::OkStatus();
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) {
    Count(calls_);
    if (keys.empty()) return absl::OkStatus();
    std::vector<Command> commands;
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          GroupBySlot(
              keys.size(), [&](std::size_t i) { return keys[i]; },
              [&](int slot) {
                commands.push_back({{"DEL"}, slot});
              },
              [&](std::size_t i) { commands.back().args.push_back(keys[i]); });
        },
        /*idempotent=*/true);
    if (!replies.ok()) return Failed(replies.status());
    for (const Reply& reply : *replies) {
      if (reply->type != REDIS_REPLY_INTEGER) return Failed(UnexpectedReply(*reply, "DEL"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::optional<absl::Duration>>> TimeToLive(
      absl::Span<const std::string_view> keys) {
    Count(calls_);
    std::vector<std::optional<absl::Duration>> ttls(keys.size());
    std::vector<Command> commands;
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          for (std::string_view key : keys) commands.push_back({{"PTTL", key}, SlotOf(key)});
        },
        /*idempotent=*/true);
    if (!replies.ok()) return Failed(replies.status());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const redisReply& reply = *(*replies)[i];
      if (reply.type != REDIS_REPLY_INTEGER) return Failed(UnexpectedReply(reply, "PTTL"));
      if (reply.integer == -1) ttls[i] = absl::InfiniteDuration();
      if (reply.integer >= 0) ttls[i] = absl::Milliseconds(reply.integer);
    }
    return ttls;
  }

  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) {
    Count(calls_);
    const KeyValue item{key, value};
    if (absl::Status s = CheckItems({&item, 1}, ttl); !s.ok()) return Failed(s);
    const std::string px = PxArgument(ttl);
    std::vector<Command> commands;
    // Not idempotent: had a lost first attempt stored the item, a second would find it and
    // report it refused. Sent again only when the first surely did not run.
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          Command command{{"SET", key, value, "NX"}, SlotOf(key)};
          if (ttl != absl::InfiniteDuration()) {
            command.args.push_back("PX");
            command.args.push_back(px);
          }
          commands.push_back(std::move(command));
        },
        /*idempotent=*/false);
    if (!replies.ok()) return Failed(replies.status());
    const redisReply& reply = *(*replies)[0];
    if (reply.type == REDIS_REPLY_STATUS) return true;
    if (reply.type == REDIS_REPLY_NIL) return false;
    return Failed(UnexpectedReply(reply, "SET NX"));
  }

  RedisBackendStats Stats() const {
    RedisBackendStats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.round_trips = round_trips_.load(std::memory_order_relaxed);
    s.commands = commands_.load(std::memory_order_relaxed);
    s.connections_opened = connections_opened_.load(std::memory_order_relaxed);
    s.connection_failures = connection_failures_.load(std::memory_order_relaxed);
    s.connections_discarded = connections_discarded_.load(std::memory_order_relaxed);
    s.redirects = redirects_.load(std::memory_order_relaxed);
    s.slot_map_refreshes = slot_map_refreshes_.load(std::memory_order_relaxed);
    s.failover_retries = failover_retries_.load(std::memory_order_relaxed);
    s.errors = errors_.load(std::memory_order_relaxed);
    MutexLock lock(&pools_mu_);
    s.node_pools = pools_.size();
    return s;
  }

 private:
  static void Count(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
    counter.fetch_add(n, std::memory_order_relaxed);
  }

  absl::Status Failed(absl::Status status) {
    Count(errors_);
    return Scrub(std::move(status));
  }

  // `status` with the password and user name redacted from its message, wherever server text
  // quoted in it (an error reply) may have repeated them. AUTH's own replies are never quoted
  // (CredentialsRefused); this is the second line of defence.
  absl::Status Scrub(absl::Status status) const {
    if (status.ok() || (settings_.password.empty() && settings_.user.empty())) return status;
    std::string message(status.message());
    Redact(message, settings_.password, kRedactPrefix);
    Redact(message, settings_.user, settings_.user.size());
    if (message == status.message()) return status;
    return absl::Status(status.code(), message);
  }

  // When a call started now must end: after command_timeout, or at the deadline of the
  // ChunkedCache call this thread is making (CallDeadline()) if that is sooner.
  absl::Time CommandDeadline() const {
    return std::min(absl::Now() + options_.command_timeout, CallDeadline());
  }

  absl::Status CheckItems(absl::Span<const KeyValue> items, absl::Duration ttl) const {
    if (ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("chunkcache: a Redis ttl must be positive");
    }
    for (const KeyValue& item : items) {
      if (item.key.empty()) return absl::InvalidArgumentError("chunkcache: empty Redis key");
      if (item.value.size() > options_.max_item_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("chunkcache: a %d-byte value exceeds the Redis max_item_size of %d",
                            item.value.size(), options_.max_item_size));
      }
    }
    return absl::OkStatus();
  }

  int SlotOf(std::string_view key) const { return ClusterMode() ? RedisClusterSlot(key) : -1; }

  // Calls open_group(slot) at each change of slot and add(i) for each of `n` keys, grouping keys
  // of one slot together (all keys in one group outside a cluster).
  template <typename KeyAt, typename OpenGroup, typename Add>
  void GroupBySlot(std::size_t n, KeyAt key_at, OpenGroup open_group, Add add) const {
    std::vector<std::pair<int, std::size_t>> order;  // (slot, index)
    order.reserve(n);
    for (std::size_t i = 0; i < n; ++i) order.emplace_back(SlotOf(key_at(i)), i);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t j = 0; j < order.size(); ++j) {
      if (j == 0 || order[j].first != order[j - 1].first) open_group(order[j].first);
      add(order[j].second);
    }
  }

  // ---- Routing ---------------------------------------------------------------------------------

  bool ClusterMode() const { return cluster_mode_.load(std::memory_order_acquire); }

  std::string Seed() const { return settings_.seed.Name(); }

  std::string NodeFor(int slot) {
    if (slot < 0) return Seed();
    MutexLock lock(&map_mu_);
    if (slot_map_ == nullptr) return Seed();
    return slot_map_->nodes[slot_map_->owner[slot]];
  }

  // Runs the commands `build` appends to `commands` (for the mode the backend is in), each on the
  // node owning its slot, and returns their replies in order. `idempotent`: the commands may run
  // twice, so a command whose node failed after it was sent (outcome unknown) may be sent again.
  //
  // A backend not told about the cluster learns of it from a MOVED or CROSSSLOT reply: its
  // commands, built for a single node (no slots, keys of several slots in one MGET or DEL), are
  // then built again for the cluster and the call goes on. Once is enough: the mode never
  // switches back.
  template <typename Build>
  absl::StatusOr<std::vector<Reply>> Execute(std::vector<Command>& commands, Build build,
                                             bool idempotent) {
    const absl::Time start = absl::Now();
    const absl::Time call_deadline = CallDeadline();
    const absl::Time deadline = std::min(start + options_.command_timeout, call_deadline);
    if (deadline <= start) {
      return absl::DeadlineExceededError("redis: the call's deadline passed before it was sent");
    }
    // A node failed in an earlier call, maybe too late for that call to refresh the map.
    if (ClusterMode() && refresh_wanted_.load(std::memory_order_relaxed)) {
      MaybeRefreshSlotMap(deadline);
    }
    for (bool rebuilt = false;; rebuilt = true) {
      commands.clear();
      build();
      bool found_cluster = false;
      absl::StatusOr<std::vector<Reply>> replies =
          Route(commands, deadline, idempotent, rebuilt ? nullptr : &found_cluster);
      if (found_cluster) continue;
      if (!replies.ok() && absl::IsDeadlineExceeded(replies.status()) &&
          call_deadline < start + options_.command_timeout && absl::Now() >= call_deadline) {
        return absl::DeadlineExceededError(
            "redis: the call's deadline passed before the server answered");
      }
      return replies;
    }
  }

  // One command's node failure, or CLUSTERDOWN reply, met in a round of Route.
  struct Setback {
    std::size_t index;  // into the commands
    std::string node;   // where it was sent
    absl::Status status;
  };

  // Sends `commands` to their nodes, one pipeline per node, following redirects. In a cluster, a
  // node that fails (refused or lost connection, timeout) or answers CLUSTERDOWN leads to a
  // slot-map refresh (rate-limited) and, once per call, to sending its commands again to their
  // slots' new owners; commands whose slot's owner has not changed fail at once. With
  // `found_cluster` set, a command built for a single node that meets a cluster sets it and
  // returns (after loading the slot map).
  absl::StatusOr<std::vector<Reply>> Route(absl::Span<const Command> commands, absl::Time deadline,
                                           bool idempotent, bool* found_cluster) {
    std::vector<Reply> replies(commands.size());
    std::vector<std::size_t> pending(commands.size());
    for (std::size_t i = 0; i < pending.size(); ++i) pending[i] = i;
    absl::flat_hash_map<std::size_t, std::string> ask_targets;
    bool may_retry = true;  // one retry after node failures or CLUSTERDOWN

    for (int round = 0; !pending.empty(); ++round) {
      if (round > kMaxRedirects) {
        return absl::UnavailableError("redis: too many cluster redirects; the cluster is moving");
      }
      // Group the pending commands by node.
      absl::flat_hash_map<std::string, std::vector<std::size_t>> by_node;
      for (const std::size_t i : pending) {
        auto ask = ask_targets.find(i);
        by_node[ask != ask_targets.end() ? ask->second : NodeFor(commands[i].slot)].push_back(i);
      }
      std::vector<std::size_t> next;
      std::vector<Setback> setbacks;
      bool moved = false, try_again = false;
      for (auto& [node, indices] : by_node) {
        std::vector<Command> batch;
        std::vector<bool> asked;  // whether an ASKING precedes the command
        for (const std::size_t i : indices) {
          const bool ask = ask_targets.contains(i);
          if (ask) batch.push_back({{"ASKING"}});
          batch.push_back(commands[i]);
          asked.push_back(ask);
        }
        bool sent = false;
        absl::StatusOr<std::vector<Reply>> got = Run(node, batch, deadline, idempotent, &sent);
        if (!got.ok()) {
          const bool routed = commands[indices.front()].slot >= 0;
          if (!routed ||
              !(absl::IsUnavailable(got.status()) || absl::IsDeadlineExceeded(got.status()))) {
            return got.status();
          }
          NoteNodeFailure(node);
          // The commands may have run: send them again only if running twice is harmless.
          if (sent && !idempotent) return got.status();
          for (const std::size_t i : indices) setbacks.push_back({i, node, got.status()});
          continue;
        }
        std::size_t r = 0;
        for (std::size_t k = 0; k < indices.size(); ++k) {
          if (asked[k]) ++r;  // the ASKING's +OK
          Reply reply = std::move((*got)[r++]);
          const std::size_t i = indices[k];
          ask_targets.erase(i);
          const bool is_error = reply->type == REDIS_REPLY_ERROR;
          const absl::string_view text = is_error ? AbslView(ReplyText(*reply)) : "";
          if (std::optional<Redirect> redirect = ParseRedirect(*reply)) {
            Count(redirects_);
            if (redirect->ask) {
              ask_targets[i] = redirect->node;
            } else {
              moved = true;
            }
            next.push_back(i);
          } else if (is_error && commands[i].slot < 0 && found_cluster != nullptr &&
                     absl::StartsWith(text, "CROSSSLOT")) {
            moved = true;  // keys of several slots in one command: only a cluster refuses that
            next.push_back(i);
          } else if (is_error && absl::StartsWith(text, "TRYAGAIN")) {
            try_again = true;  // a multi-key command met a slot in migration
            next.push_back(i);
          } else if (is_error && absl::StartsWith(text, "CLUSTERDOWN") && commands[i].slot >= 0) {
            setbacks.push_back({i, node, ReplyError(ReplyText(*reply))});
          } else {
            replies[i] = std::move(reply);
          }
        }
      }
      if (moved) {
        if (absl::Status s = RefreshSlotMap(deadline); !s.ok()) return s;
        // Commands built for a single node: build them again for the cluster. Safe even when not
        // idempotent, as long as every one of them was refused (a redirect runs nothing).
        if (found_cluster != nullptr && commands.front().slot < 0 &&
            (idempotent || next.size() == commands.size())) {
          *found_cluster = true;
          return absl::UnavailableError("redis: found a cluster");
        }
      }
      if (try_again) {
        refresh_wanted_.store(true, std::memory_order_relaxed);
        MaybeRefreshSlotMap(deadline);
        absl::SleepFor(std::min(kTryAgainPause, deadline - absl::Now()));
      }
      if (!setbacks.empty()) {
        // Give up unless this is the call's first setback, time is left, and a fresh slot map
        // (ours, or another call's) names a new owner for every command that met one.
        if (!may_retry || absl::Now() >= deadline) return setbacks.front().status;
        may_retry = false;
        refresh_wanted_.store(true, std::memory_order_relaxed);
        MaybeRefreshSlotMap(deadline);
        for (const Setback& setback : setbacks) {
          if (NodeFor(commands[setback.index].slot) == setback.node) return setback.status;
          ask_targets.erase(setback.index);
          next.push_back(setback.index);
        }
        Count(failover_retries_);
      }
      pending = std::move(next);
    }
    return replies;
  }

  void NoteNodeFailure(const std::string& node) {
    refresh_wanted_.store(true, std::memory_order_relaxed);
    MutexLock lock(&map_mu_);
    RememberFailure(node);
  }

  // Notes that `node` failed now. The memory stays bounded however many nodes fail (ASK targets
  // named by a broken server, say): past kMaxFailedNodes, entries older than kFailedNodeMemory
  // go, then those of nodes outside the slot map (only the map's nodes are asked for the map).
  void RememberFailure(const std::string& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(map_mu_) {
    const absl::Time now = absl::Now();
    failed_at_[node] = now;
    if (failed_at_.size() <= kMaxFailedNodes) return;
    absl::erase_if(failed_at_,
                   [&](const auto& entry) { return now - entry.second >= kFailedNodeMemory; });
    if (failed_at_.size() <= kMaxFailedNodes) return;
    absl::erase_if(failed_at_, [&](const auto& entry) {
      return !InSlotMap(slot_map_.get(), entry.first) && entry.first != Seed();
    });
  }

  static bool InSlotMap(const SlotMap* map, std::string_view node) {
    if (map == nullptr) return false;
    return std::find(map->nodes.begin(), map->nodes.end(), node) != map->nodes.end() ||
           std::find(map->replicas.begin(), map->replicas.end(), node) != map->replicas.end();
  }

  // Refreshes the slot map unless a refresh started less than kMinRefreshInterval ago or is
  // under way (then the caller goes on with the map it finds).
  void MaybeRefreshSlotMap(absl::Time deadline) {
    {
      MutexLock lock(&refresh_mu_);
      if (refreshing_ || absl::Now() - last_refresh_ < kMinRefreshInterval) return;
      refreshing_ = true;
    }
    (void)RefreshSlotMap(deadline);
    MutexLock lock(&refresh_mu_);
    refreshing_ = false;
  }

  // Loads the slot map from the first node that answers CLUSTER SLOTS: the seed and every master
  // and replica of the current map, those that failed recently last.
  absl::Status RefreshSlotMap(absl::Time deadline) {
    Count(slot_map_refreshes_);
    {
      MutexLock lock(&refresh_mu_);
      last_refresh_ = absl::Now();
    }
    refresh_wanted_.store(false, std::memory_order_relaxed);
    std::vector<std::string> candidates;
    {
      std::vector<std::string> known = {Seed()};
      std::vector<std::string> failed_recently;
      MutexLock lock(&map_mu_);
      if (slot_map_ != nullptr) {
        for (const std::vector<std::string>* nodes : {&slot_map_->nodes, &slot_map_->replicas}) {
          for (const std::string& node : *nodes) {
            if (node != Seed()) known.push_back(node);
          }
        }
      }
      const absl::Time recent = absl::Now() - kFailedNodeMemory;
      for (std::string& node : known) {
        const auto failed = failed_at_.find(node);
        const bool fresh = failed == failed_at_.end() || failed->second < recent;
        (fresh ? candidates : failed_recently).push_back(std::move(node));
      }
      candidates.insert(candidates.end(), failed_recently.begin(), failed_recently.end());
    }
    absl::Status last = absl::UnavailableError("redis: no cluster node answered");
    for (const std::string& node : candidates) {
      // At most one range per slot; each range and node entry is a short array.
      const Command slots{{"CLUSTER", "SLOTS"}, -1, std::size_t{1} << 20, kSlots};
      absl::StatusOr<std::vector<Reply>> replies = Run(node, {&slots, 1}, deadline);
      if (!replies.ok()) {
        if (absl::IsUnavailable(replies.status()) || absl::IsDeadlineExceeded(replies.status())) {
          MutexLock lock(&map_mu_);
          RememberFailure(node);
        }
        last = replies.status();
        continue;
      }
      absl::StatusOr<std::shared_ptr<const SlotMap>> map = ParseSlots(*(*replies)[0], node);
      if (!map.ok()) {
        last = map.status();
        continue;
      }
      MutexLock lock(&map_mu_);
      slot_map_ = *std::move(map);
      cluster_mode_.store(true, std::memory_order_release);
      return absl::OkStatus();
    }
    refresh_wanted_.store(true, std::memory_order_relaxed);
    return last;
  }

  static absl::StatusOr<std::shared_ptr<const SlotMap>> ParseSlots(const redisReply& reply,
                                                                   std::string_view asked) {
    if (reply.type != REDIS_REPLY_ARRAY) return UnexpectedReply(reply, "CLUSTER SLOTS");
    auto map = std::make_shared<SlotMap>();
    std::vector<bool> covered(kSlots, false);
    absl::flat_hash_map<std::string, std::uint16_t> index;
    // A node entry is [host, port, id, ...]; an unknown host ("" or "?") is the node we asked.
    auto name_of = [&](const redisReply& entry) -> std::optional<std::string> {
      if (entry.type != REDIS_REPLY_ARRAY || entry.elements < 2 ||
          entry.element[0]->type != REDIS_REPLY_STRING ||
          entry.element[1]->type != REDIS_REPLY_INTEGER) {
        return std::nullopt;
      }
      std::string host(ReplyText(*entry.element[0]));
      if (host.empty() || host == "?") host = std::string(asked.substr(0, asked.rfind(':')));
      return absl::StrCat(host, ":", entry.element[1]->integer);
    };
    for (std::size_t r = 0; r < reply.elements; ++r) {
      const redisReply& range = *reply.element[r];
      if (range.type != REDIS_REPLY_ARRAY || range.elements < 3 ||
          range.element[0]->type != REDIS_REPLY_INTEGER ||
          range.element[1]->type != REDIS_REPLY_INTEGER) {
        return absl::InternalError("redis: malformed CLUSTER SLOTS reply");
      }
      const std::optional<std::string> node = name_of(*range.element[2]);
      if (!node.has_value()) return absl::InternalError("redis: malformed CLUSTER SLOTS reply");
      const long long first = range.element[0]->integer, last = range.element[1]->integer;
      auto [it, inserted] = index.try_emplace(*node, map->nodes.size());
      if (inserted) map->nodes.push_back(*node);
      for (long long slot = std::max(0LL, first); slot <= std::min<long long>(last, kSlots - 1);
           ++slot) {
        map->owner[slot] = it->second;
        covered[slot] = true;
      }
      for (std::size_t e = 3; e < range.elements; ++e) {
        const std::optional<std::string> replica = name_of(*range.element[e]);
        if (replica.has_value() && std::find(map->replicas.begin(), map->replicas.end(),
                                             *replica) == map->replicas.end()) {
          map->replicas.push_back(*replica);
        }
      }
    }
    if (std::find(covered.begin(), covered.end(), false) != covered.end()) {
      return absl::UnavailableError("redis: the cluster does not cover every slot");
    }
    return std::shared_ptr<const SlotMap>(std::move(map));
  }

  // ---- Connections -----------------------------------------------------------------------------

  // The pool of `node`, made on first use. Pools of nodes outside the slot map (ASK targets,
  // nodes that left) are bounded: beyond kMaxSparePools of them, the least recently used is
  // dropped (its idle connections closed; a caller still using it keeps it until done).
  std::shared_ptr<NodePool> PoolFor(const std::string& node) {
    std::shared_ptr<const SlotMap> map;
    {
      MutexLock lock(&map_mu_);
      map = slot_map_;
    }
    std::vector<std::shared_ptr<NodePool>> evicted;  // destroyed after pools_mu_ is released
    MutexLock lock(&pools_mu_);
    const auto [it, inserted] = pools_.try_emplace(node);
    it->second.last_used = ++pool_clock_;
    if (!inserted) return it->second.pool;
    Endpoint endpoint = settings_.seed;
    if (node != Seed()) {
      absl::StatusOr<Endpoint> parsed = EndpointOf(node);
      if (parsed.ok()) endpoint = *parsed;
    }
    std::shared_ptr<NodePool> pool = std::make_shared<NodePool>(
        std::move(endpoint), static_cast<std::size_t>(options_.pool_size), &connections_discarded_);
    it->second.pool = pool;
    if (pools_.size() > kMaxSparePools) {
      std::vector<std::pair<std::uint64_t, std::string>> spare;  // (last used, node)
      for (const auto& [name, entry] : pools_) {
        if (name != node && name != Seed() && !InSlotMap(map.get(), name)) {
          spare.emplace_back(entry.last_used, name);
        }
      }
      if (spare.size() + 1 > kMaxSparePools) {  // + 1: the new pool, if spare too
        const std::size_t excess = spare.size() + 1 - kMaxSparePools;
        std::nth_element(spare.begin(), spare.begin() + static_cast<std::ptrdiff_t>(excess - 1),
                         spare.end());
        for (std::size_t i = 0; i < excess; ++i) {
          const auto victim = pools_.find(spare[i].second);
          evicted.push_back(std::move(victim->second.pool));
          pools_.erase(victim);
        }
      }
    }
    return pool;
  }

  // Opens a connection to the pool's node within `timeout`, name lookup included: each of the
  // node's addresses in turn until one accepts.
  absl::StatusOr<std::unique_ptr<Connection>> Connect(NodePool& pool, absl::Duration timeout) {
    const Endpoint& endpoint = pool.endpoint();
    if (!endpoint.unix_path.empty()) return Connection::Open(endpoint, settings_, timeout);
    const absl::Time deadline = absl::Now() + timeout;
    absl::StatusOr<std::vector<std::string>> addresses = pool.Resolve(deadline);
    if (!addresses.ok()) return addresses.status();
    absl::Status refused;
    for (const std::string& address : *addresses) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      Endpoint numeric = endpoint;
      numeric.host = address;
      absl::StatusOr<std::unique_ptr<Connection>> opened =
          Connection::Open(numeric, settings_, left);
      if (opened.ok() || !absl::IsUnavailable(opened.status())) return opened;
      refused = opened.status();
    }
    if (!refused.ok()) return refused;
    return absl::DeadlineExceededError(
        absl::StrCat("redis: cannot connect to ", endpoint.Name(), " within the connect timeout"));
  }

  // Runs one pipeline on `node`. A pooled connection the server has since dropped (a restart,
  // an idle timeout) fails on first use: then an idempotent pipeline is sent once more on a new
  // connection. `sent` (optional) tells whether any command may have reached the server.
  absl::StatusOr<std::vector<Reply>> Run(const std::string& node,
                                         absl::Span<const Command> commands, absl::Time deadline,
                                         bool idempotent = true, bool* sent = nullptr) {
    const std::shared_ptr<NodePool> pool_holder = PoolFor(node);
    NodePool& pool = *pool_holder;
    std::unique_ptr<Connection> connection = pool.TakeIdle();
    const bool reused = connection != nullptr;
    for (int attempt = 0;; ++attempt) {
      if (connection == nullptr) {
        const absl::Duration left = std::min(options_.connect_timeout, deadline - absl::Now());
        if (left <= absl::ZeroDuration()) {
          return absl::DeadlineExceededError("redis: no time left to connect");
        }
        absl::StatusOr<std::unique_ptr<Connection>> opened = Connect(pool, left);
        if (!opened.ok()) {
          if (absl::IsUnavailable(opened.status())) pool.Clear();  // its idle ones are dead too
          return opened.status();
        }
        Count(connections_opened_);
        connection = *std::move(opened);
      }
      Count(round_trips_);
      Count(commands_, commands.size());
      if (sent != nullptr) *sent = true;
      absl::StatusOr<std::vector<Reply>> replies = connection->Pipeline(commands, deadline);
      if (replies.ok()) {
        pool.Release(std::move(connection));
        return replies;
      }
      Count(connection_failures_);
      connection.reset();
      if (!(idempotent && reused && attempt == 0 && absl::IsUnavailable(replies.status()))) {
        return replies.status();
      }
    }
  }

  const RedisBackendOptions options_;
  ServerSettings settings_;
  std::atomic<bool> cluster_mode_{false};

  Mutex map_mu_;
  std::shared_ptr<const SlotMap> slot_map_ ABSL_GUARDED_BY(map_mu_);
  // When each node last failed a call or a refresh.
  absl::flat_hash_map<std::string, absl::Time> failed_at_ ABSL_GUARDED_BY(map_mu_);

  // A node failed, or a refresh did: the next call refreshes first (rate limit permitting).
  std::atomic<bool> refresh_wanted_{false};
  Mutex refresh_mu_;
  absl::Time last_refresh_ ABSL_GUARDED_BY(refresh_mu_) = absl::InfinitePast();
  bool refreshing_ ABSL_GUARDED_BY(refresh_mu_) = false;

  struct PoolEntry {
    std::shared_ptr<NodePool> pool;
    std::uint64_t last_used = 0;  // pool_clock_ when last handed out
  };
  mutable Mutex pools_mu_;
  absl::flat_hash_map<std::string, PoolEntry> pools_ ABSL_GUARDED_BY(pools_mu_);
  std::uint64_t pool_clock_ ABSL_GUARDED_BY(pools_mu_) = 0;

  std::atomic<std::uint64_t> calls_{0}, round_trips_{0}, commands_{0}, connections_opened_{0},
      connection_failures_{0}, connections_discarded_{0}, redirects_{0}, slot_map_refreshes_{0},
      failover_retries_{0}, errors_{0};
};

RedisBackend::RedisBackend(RedisBackendOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
RedisBackend::~RedisBackend() = default;

absl::Status RedisBackend::Init() { return impl_->Init(); }
std::size_t RedisBackend::max_item_size() const { return impl_->max_item_size(); }

absl::StatusOr<std::vector<std::optional<std::string>>> RedisBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  return impl_->MultiGet(keys);
}

absl::Status RedisBackend::MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
  return impl_->MultiSet(items, ttl);
}

absl::Status RedisBackend::Delete(absl::Span<const std::string_view> keys) {
  return impl_->Delete(keys);
}

absl::StatusOr<bool> RedisBackend::SetIfAbsent(std::string_view key, std::string_view value,
                                               absl::Duration ttl) {
  return impl_->SetIfAbsent(key, value, ttl);
}

RedisBackendStats RedisBackend::Stats() const { return impl_->Stats(); }

absl::StatusOr<std::vector<std::optional<absl::Duration>>> RedisBackend::TimeToLive(
    absl::Span<const std::string_view> keys) {
  return impl_->TimeToLive(keys);
}

absl::StatusOr<std::shared_ptr<Backend>> NewRedisBackend(RedisBackendOptions options) {
  auto backend = std::make_shared<RedisBackend>(std::move(options));
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return std::shared_ptr<Backend>(std::move(backend));
}

}  // namespace chunkcache
