// backends/redis/cluster.h — where each command goes: the seed outside a cluster; in a Redis
// Cluster, the node owning the command's slot, following MOVED and ASK redirects and the cluster
// through failovers.
//
//   Cluster cluster(server.seed.Name(), &nodes, &counters);
//   absl::Status loaded = cluster.RefreshSlotMap(deadline);  // enters cluster mode
//   const std::string key = "{user:1}profile";
//   const Command get{{"MGET", key}, cluster.SlotOf(key)};
//   absl::StatusOr<std::vector<Reply>> replies = cluster.Route({&get, 1}, deadline, true, nullptr);
//
// Cluster mode starts with the first slot map loaded (CLUSTER SLOTS) and never ends. The map is
// reloaded on MOVED, and after a node fails (connection refused or lost, a timeout) or answers
// CLUSTERDOWN or TRYAGAIN: then from any node that answers (the seed and every master and replica
// the map knows, those that failed recently last), at most once per 200 ms. A command whose node
// failed is sent once more, within its deadline, if the fresh map names a new owner; otherwise it
// fails at once (Unavailable). A command that may have run before its node failed is sent again
// only if it is idempotent.
//
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_CLUSTER_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_CLUSTER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/redis/connection.h"
#include "backends/redis/counters.h"
#include "backends/redis/node_pool.h"
#include "internal/mutex.h"

namespace chunkcache::redis {

inline constexpr int kSlots = 16384;

// Which node serves each slot.
struct SlotMap {
  std::vector<std::string> nodes;             // "host:port" of the masters
  std::array<std::uint16_t, kSlots> owner{};  // index into nodes
  std::vector<std::string> replicas;          // "host:port", asked for the map too
};

// The map a CLUSTER SLOTS reply describes, from the node `asked` ("host:port": a node entry with
// an unknown host, "" or "?", is on its host). Internal for a malformed reply, Unavailable if a
// slot has no owner.
absl::StatusOr<std::shared_ptr<const SlotMap>> ParseSlotMap(const redisReply& reply,
                                                            std::string_view asked);

// A redirect reply: "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381".
struct Redirect {
  bool ask = false;
  std::string node;
};

// The redirect `reply` is, if it is one.
std::optional<Redirect> ParseRedirect(const redisReply& reply);

class Cluster {
 public:
  // `seed` names the node the backend was given; `nodes` and `counters` must outlive this.
  Cluster(std::string seed, NodePools* nodes, Counters* counters);

  // Whether the backend is in cluster mode.
  bool active() const { return active_.load(std::memory_order_acquire); }

  // The slot of `key` in cluster mode (RedisClusterSlot), -1 outside it.
  int SlotOf(std::string_view key) const;

  // Whether `node` is the seed or in the slot map.
  bool Knows(const std::string& node);

  // Loads the slot map from the first node that answers CLUSTER SLOTS: the seed and every master
  // and replica of the current map, those that failed recently last. Enters cluster mode.
  absl::Status RefreshSlotMap(absl::Time deadline);

  // In cluster mode, refreshes the slot map first if a node failed in an earlier call, maybe too
  // late for that call to refresh it (rate limit permitting).
  void RefreshIfWanted(absl::Time deadline);

  // Sends `commands` to their nodes, one pipeline per node, following redirects, and returns
  // their replies in order. In a cluster, a node that fails or answers CLUSTERDOWN leads to a
  // slot-map refresh (rate-limited) and, once per call, to sending its commands again to their
  // slots' new owners; commands whose slot's owner has not changed fail at once. `idempotent`:
  // the commands may run twice. With `found_cluster` set, commands built for a single node (slot
  // -1) that meet a cluster (MOVED, CROSSSLOT) set it and return Unavailable after loading the
  // slot map: the caller builds them again for the cluster.
  absl::StatusOr<std::vector<Reply>> Route(absl::Span<const Command> commands, absl::Time deadline,
                                           bool idempotent, bool* found_cluster);

  // Sends `commands`, idempotent ones all of one slot (or all -1), to the node owning it in one
  // pipeline, and hands each reply to `on_reply` as soon as it is whole, in order, each command
  // once (NodePools::Stream). Until the first reply is handed over, redirects, node failures and
  // CLUSTERDOWN are handled as by Route; after that, a MOVED or ASK reply sends the commands not
  // yet answered to the new node (at most as many redirects as Route follows), and any other
  // failure is returned. An error `on_reply` returns stops the call and is returned.
  // `found_cluster` as in Route: set before any reply was handed over, or with the commands
  // handed over so far left out of the rebuilt call by the caller.
  absl::Status Stream(absl::Span<const Command> commands, absl::Time deadline,
                      Connection::ReplyHandler on_reply, bool* found_cluster);

 private:
  // One command's node failure, or CLUSTERDOWN reply, met in a round of Route.
  struct Setback {
    std::size_t index;  // into the commands
    std::string node;   // where it was sent
    absl::Status status;
  };

  std::string NodeFor(int slot);
  void NoteNodeFailure(const std::string& node);
  void RememberFailure(const std::string& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(map_mu_);
  void MaybeRefreshSlotMap(absl::Time deadline);

  const std::string seed_;
  NodePools& nodes_;
  Counters& counters_;
  std::atomic<bool> active_{false};

  internal::Mutex map_mu_;
  std::shared_ptr<const SlotMap> slot_map_ ABSL_GUARDED_BY(map_mu_);
  // When each node last failed a call or a refresh.
  absl::flat_hash_map<std::string, absl::Time> failed_at_ ABSL_GUARDED_BY(map_mu_);

  // A node failed, or a refresh did: the next call refreshes first (rate limit permitting).
  std::atomic<bool> refresh_wanted_{false};
  internal::Mutex refresh_mu_;
  absl::Time last_refresh_ ABSL_GUARDED_BY(refresh_mu_) = absl::InfinitePast();
  bool refreshing_ ABSL_GUARDED_BY(refresh_mu_) = false;
};

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_CLUSTER_H_
