#include "backends/redis/node_pool.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "internal/object_pool.h"

namespace chunkcache::redis {
namespace {

using internal::CondVar;
using internal::Mutex;
using internal::MutexLock;

// A finished name lookup is reused for new connections this long (a reconnect storm does not
// become a lookup storm); after that the next connection looks the name up again.
constexpr absl::Duration kLookupReuse = absl::Seconds(1);
// Connections beyond pool_size (opened while more callers than pool_size called at once) stay
// pooled until unused this long: threads that outnumber the pool keep their connections instead
// of opening and closing one per call (each close leaves a TIME_WAIT socket behind).
constexpr absl::Duration kSurplusIdle = absl::Seconds(30);
// Node pools kept for nodes `pinned` does not name (ASK targets, nodes that left the cluster),
// beyond the pinned ones; the least recently used go first.
constexpr std::size_t kMaxSparePools = 32;

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

}  // namespace

// Idle connections to one node, and the lookup of its name.
class NodePool {
 public:
  NodePool(Endpoint endpoint, std::size_t max_idle, Counters::Counter* discarded)
      : endpoint_(std::move(endpoint)),
        literal_(endpoint_.unix_path.empty() && IsIpLiteral(endpoint_.host)),
        idle_(IdleOptions(max_idle, discarded)) {}

  const Endpoint& endpoint() const { return endpoint_; }

  // The idle connections (fit for reuse when taken).
  internal::ObjectPool<Connection>& idle() { return idle_; }

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
  static internal::ObjectPool<Connection>::Options IdleOptions(std::size_t max_idle,
                                                               Counters::Counter* discarded) {
    internal::ObjectPool<Connection>::Options options;
    options.max_idle = max_idle;
    options.surplus_ttl = max_idle == 0 ? absl::ZeroDuration() : kSurplusIdle;
    options.reusable = [](const Connection& connection) { return connection.FitForReuse(); };
    options.on_discard = [discarded](std::size_t n) { Counters::Add(*discarded, n); };
    return options;
  }

  const Endpoint endpoint_;
  const bool literal_;
  internal::ObjectPool<Connection> idle_;
  Mutex mu_;
  std::shared_ptr<Lookup> lookup_ ABSL_GUARDED_BY(mu_);
};

NodePools::NodePools(const ServerUrl* server, const RedisBackendOptions& options,
                     Counters* counters, std::function<bool(const std::string& node)> pinned,
                     std::shared_ptr<const TlsContext> tls)
    : server_(*server),
      connect_timeout_(options.connect_timeout),
      pool_size_(static_cast<std::size_t>(options.pool_size)),
      counters_(*counters),
      pinned_(std::move(pinned)),
      tls_(std::move(tls)) {}

NodePools::~NodePools() = default;

std::size_t NodePools::size() const {
  MutexLock lock(&mu_);
  return pools_.size();
}

// The pool of `node`, made on first use. Beyond kMaxSparePools pools of nodes `pinned_` does not
// name, the least recently used is dropped (its idle connections closed; a caller still using it
// keeps it until done).
std::shared_ptr<NodePool> NodePools::PoolFor(const std::string& node) {
  std::vector<std::shared_ptr<NodePool>> evicted;  // destroyed after mu_ is released
  MutexLock lock(&mu_);
  const auto [it, inserted] = pools_.try_emplace(node);
  it->second.last_used = ++pool_clock_;
  if (!inserted) return it->second.pool;
  Endpoint endpoint = server_.seed;
  if (node != server_.seed.Name()) {
    absl::StatusOr<Endpoint> parsed = ParseNodeName(node);
    if (parsed.ok()) endpoint = *parsed;
  }
  std::shared_ptr<NodePool> pool =
      std::make_shared<NodePool>(std::move(endpoint), pool_size_, &counters_.connections_discarded);
  it->second.pool = pool;
  if (pools_.size() > kMaxSparePools) {
    std::vector<std::pair<std::uint64_t, std::string>> spare;  // (last used, node)
    for (const auto& [name, entry] : pools_) {
      if (name != node && !pinned_(name)) spare.emplace_back(entry.last_used, name);
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
absl::StatusOr<std::unique_ptr<Connection>> NodePools::Connect(NodePool& pool,
                                                               absl::Duration timeout) {
  const Endpoint& endpoint = pool.endpoint();
  if (!endpoint.unix_path.empty()) return Connection::Open(endpoint, server_, timeout);
  std::optional<TlsTarget> tls;
  if (tls_ != nullptr) {
    tls = TlsTarget{tls_, IsIpLiteral(endpoint.host) ? server_.seed.host : endpoint.host};
  }
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
        Connection::Open(numeric, server_, left, tls ? &*tls : nullptr);
    if (opened.ok() || !absl::IsUnavailable(opened.status())) return opened;
    refused = opened.status();
  }
  if (!refused.ok()) return refused;
  return absl::DeadlineExceededError(
      absl::StrCat("redis: cannot connect to ", endpoint.Name(), " within the connect timeout"));
}

template <typename Talk>
absl::Status NodePools::Exchange(const std::string& node, std::size_t commands, absl::Time deadline,
                                 bool idempotent, bool* sent, Talk talk) {
  const std::shared_ptr<NodePool> pool_holder = PoolFor(node);
  NodePool& pool = *pool_holder;
  std::unique_ptr<Connection> connection = pool.idle().TakeIdle();
  const bool reused = connection != nullptr;
  for (int attempt = 0;; ++attempt) {
    if (connection == nullptr) {
      const absl::Duration left = std::min(connect_timeout_, deadline - absl::Now());
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("redis: no time left to connect");
      }
      absl::StatusOr<std::unique_ptr<Connection>> opened = Connect(pool, left);
      if (!opened.ok()) {
        if (absl::IsUnavailable(opened.status())) pool.idle().Clear();  // they are dead too
        return opened.status();
      }
      Counters::Add(counters_.connections_opened);
      connection = *std::move(opened);
    }
    Counters::Add(counters_.round_trips);
    Counters::Add(counters_.commands, commands);
    if (sent != nullptr) *sent = true;
    bool connection_failed = true;
    bool retry = idempotent && reused && attempt == 0;
    const absl::Status status = talk(*connection, &connection_failed, &retry);
    if (status.ok() || !connection_failed) {
      pool.idle().Put(std::move(connection));  // closed there if replies were left unread
      return status;
    }
    Counters::Add(counters_.connection_failures);
    connection.reset();
    if (!(retry && absl::IsUnavailable(status))) return status;
  }
}

absl::StatusOr<std::vector<Reply>> NodePools::Run(const std::string& node,
                                                  absl::Span<const Command> commands,
                                                  absl::Time deadline, bool idempotent,
                                                  bool* sent) {
  absl::StatusOr<std::vector<Reply>> replies;
  const absl::Status status =
      Exchange(node, commands.size(), deadline, idempotent, sent,
               [&](Connection& connection, bool* /*connection_failed*/, bool* /*retry*/) {
                 replies = connection.Pipeline(commands, deadline);
                 return replies.status();
               });
  if (!status.ok()) return status;
  return replies;
}

absl::Status NodePools::Stream(const std::string& node, absl::Span<const Command> commands,
                               absl::Time deadline, Connection::ReplyHandler on_reply, bool* sent) {
  return Exchange(node, commands.size(), deadline, /*idempotent=*/true, sent,
                  [&](Connection& connection, bool* connection_failed, bool* retry) {
                    bool handler_failed = false;
                    const absl::Status status =
                        connection.Stream(commands, deadline, [&](std::size_t index, Reply reply) {
                          *retry = false;  // a reply was handed over: the stream cannot start again
                          absl::Status handled = on_reply(index, std::move(reply));
                          handler_failed = !handled.ok();
                          return handled;
                        });
                    *connection_failed = !handler_failed;
                    return status;
                  });
}

}  // namespace chunkcache::redis
