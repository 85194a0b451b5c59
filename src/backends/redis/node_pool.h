// backends/redis/node_pool.h — the connections of one backend to its nodes: a pool of idle
// connections per node, the lookup of each node's name, and running one pipeline on a node.
//
//   NodePools nodes(&server, options, &counters, [](const std::string& node) { return true; });
//   const Command ping{{"PING"}};
//   absl::StatusOr<std::vector<Reply>> replies =
//       nodes.Run(server.seed.Name(), {&ping, 1}, absl::Now() + absl::Seconds(1));
//
// Pools: per node, up to options.pool_size idle connections are kept however long they stay
// unused; more (opened while more callers than that called at once) until unused for 30 s. A
// pooled connection is reused only if Connection::FitForReuse; the others are closed and counted
// in connections_discarded. A node is named "host:port" (or the seed's unix socket path); pools of
// nodes that `pinned` does not name (ASK targets, nodes that left the cluster) are bounded: 32 at
// most, the least recently used dropped first.
//
// TLS (`tls` given): every connection is a TLS one. A node announced by IP address (as CLUSTER
// SLOTS and MOVED name them) is verified as the seed's host (TlsContext::server_name when set),
// since a cluster's nodes share one certificate naming the service; a node announced by host name
// is verified by that name.
//
// Names: an IP address needs no lookup. A host name is looked up (getaddrinfo) on a helper thread,
// as libc's lookup can be neither bounded nor cancelled: a caller waits at most until its connect
// deadline, and one lookup per node is shared by concurrent callers and reused for one second.
//
// Thread safety: safe for concurrent use. `pinned` is called with the pools' lock held.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_NODE_POOL_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_NODE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/redis/connection.h"
#include "backends/redis/counters.h"
#include "backends/redis/url.h"
#include "chunkcache/redis_backend.h"
#include "internal/mutex.h"

namespace chunkcache::redis {

// Idle connections to one node, and the lookup of its name (node_pool.cc).
class NodePool;

class NodePools {
 public:
  // `server` (the seed and the credentials) and `counters` must outlive this; of `options`,
  // connect_timeout and pool_size are used. `pinned(node)`: the node's pool is never dropped.
  // `tls`: connect over TLS with these settings; nullptr: plain connections.
  NodePools(const ServerUrl* server, const RedisBackendOptions& options, Counters* counters,
            std::function<bool(const std::string& node)> pinned,
            std::shared_ptr<const TlsContext> tls = nullptr);
  ~NodePools();
  NodePools(const NodePools&) = delete;
  NodePools& operator=(const NodePools&) = delete;

  // Runs one pipeline on `node`, on a pooled connection or a new one (connecting within
  // connect_timeout and `deadline`). A pooled connection the server has since dropped (a
  // restart, an idle timeout) fails on first use: then an `idempotent` pipeline is sent once
  // more on a new connection. `sent` (optional) tells whether any command may have reached the
  // server.
  absl::StatusOr<std::vector<Reply>> Run(const std::string& node,
                                         absl::Span<const Command> commands, absl::Time deadline,
                                         bool idempotent = true, bool* sent = nullptr);

  // Runs one pipeline on `node` as Run does, handing each reply to `on_reply` as soon as it is
  // whole (Connection::Stream). A pooled connection the server has since dropped is replaced
  // once, as in Run, if it failed before any reply was handed over. A connection left with
  // replies unread (`on_reply` stopped the stream early) is closed and counted in
  // connections_discarded, one that failed in connection_failures.
  absl::Status Stream(const std::string& node, absl::Span<const Command> commands,
                      absl::Time deadline, Connection::ReplyHandler on_reply, bool* sent = nullptr);

  // Nodes with a pool now.
  std::size_t size() const;

 private:
  struct PoolEntry {
    std::shared_ptr<NodePool> pool;
    std::uint64_t last_used = 0;  // pool_clock_ when last handed out
  };

  std::shared_ptr<NodePool> PoolFor(const std::string& node);
  absl::StatusOr<std::unique_ptr<Connection>> Connect(NodePool& pool, absl::Duration timeout);
  // What Run and Stream share: `talk(connection, &connection_failed, &retry)` sends a pipeline
  // of `commands` commands on a pooled or new connection to `node` and reads its replies. A
  // connection whose `talk` failed with connection_failed left true is closed (and `talk` called
  // once more, on a new connection, if it failed with Unavailable on a reused one, `idempotent`
  // and `retry` left true); any other goes back to the pool, which closes it unless it is fit for
  // reuse.
  template <typename Talk>
  absl::Status Exchange(const std::string& node, std::size_t commands, absl::Time deadline,
                        bool idempotent, bool* sent, Talk talk);

  const ServerUrl& server_;
  const absl::Duration connect_timeout_;
  const std::size_t pool_size_;
  Counters& counters_;
  const std::function<bool(const std::string&)> pinned_;
  const std::shared_ptr<const TlsContext> tls_;

  mutable internal::Mutex mu_;
  absl::flat_hash_map<std::string, PoolEntry> pools_ ABSL_GUARDED_BY(mu_);
  std::uint64_t pool_clock_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_NODE_POOL_H_
