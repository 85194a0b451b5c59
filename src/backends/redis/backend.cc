#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backends/redis/cluster.h"
#include "backends/redis/connection.h"
#include "backends/redis/counters.h"
#include "backends/redis/node_pool.h"
#include "backends/redis/tls.h"
#include "backends/redis/url.h"
#include "chunkcache/redis_backend.h"

namespace chunkcache {
namespace {

using redis::Command;
using redis::Counters;
using redis::kReplyOverhead;
using redis::Redact;
using redis::Reply;
using redis::ReplyError;
using redis::ReplyText;
using redis::SaturatingAdd;
using redis::UnexpectedReply;

// A password is redacted wherever its first this many bytes appear (servers quote a truncated
// prefix of long arguments), or the whole password if it is shorter.
constexpr std::size_t kRedactPrefix = 16;

std::string PxArgument(absl::Duration ttl) {
  return absl::StrCat(std::max<std::int64_t>(1, absl::ToInt64Milliseconds(ttl)));
}

absl::Status CheckOptions(const RedisBackendOptions& options) {
  if (options.pool_size < 0 || options.max_item_size == 0 ||
      options.connect_timeout <= absl::ZeroDuration() ||
      options.command_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "chunkcache: RedisBackendOptions need positive timeouts and max_item_size and a "
        "pool_size of at least 0");
  }
  return absl::OkStatus();
}

// The commands of the Backend interface, each sent where Cluster routes it.
class RedisBackendImpl final : public RedisBackend {
 public:
  // `options` checked, `server` parsed from options.url; options.cluster set if either asks.
  // `tls`: the TLS settings of a rediss:// server; nullptr for a plain one.
  RedisBackendImpl(RedisBackendOptions options, redis::ServerUrl server,
                   std::shared_ptr<const redis::TlsContext> tls)
      : options_(std::move(options)),
        server_(std::move(server)),
        nodes_(
            &server_, options_, &counters_,
            [this](const std::string& node) { return cluster_.Knows(node); }, std::move(tls)),
        cluster_(server_.seed.Name(), &nodes_, &counters_) {}

  // Reaches the server, so that a bad address or password shows at creation: PING, or in
  // cluster mode the slot map.
  absl::Status Connect() {
    if (options_.cluster) {
      return Scrub(cluster_.RefreshSlotMap(std::min(
          absl::Now() + options_.connect_timeout + options_.command_timeout, CallDeadline())));
    }
    const Command ping{{"PING"}};
    absl::StatusOr<std::vector<Reply>> replies =
        nodes_.Run(server_.seed.Name(), {&ping, 1}, CommandDeadline());
    if (!replies.ok()) return Scrub(replies.status());
    if ((*replies)[0]->type == REDIS_REPLY_ERROR) {
      return Scrub(ReplyError(ReplyText(*(*replies)[0])));
    }
    return absl::OkStatus();
  }

  std::size_t max_item_size() const override { return options_.max_item_size; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    Counters::Add(counters_.calls);
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

  // One GET per key, pipelined on the node of their slot, each item handed over as its reply is
  // parsed, its bytes those of the reply itself (no copy). Keys of several slots (in a cluster)
  // go through MultiGet instead.
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    // Whether `rest` has keys of several slots (in a cluster); then the keys go through MultiGet
    // (one pipeline per node, all sent at once), which counts the call.
    const auto several_slots = [&](absl::Span<const std::string_view> rest) {
      const int slot = cluster_.SlotOf(rest.front());
      return std::any_of(rest.begin(), rest.end(),
                         [&](std::string_view key) { return cluster_.SlotOf(key) != slot; });
    };
    if (keys.empty()) return absl::OkStatus();
    if (several_slots(keys)) return Backend::MultiGetEach(keys, sink);
    Counters::Add(counters_.calls);
    const absl::Time start = absl::Now();
    const absl::Time call_deadline = CallDeadline();
    const absl::Time deadline = std::min(start + options_.command_timeout, call_deadline);
    if (deadline <= start) {
      return Failed(
          absl::DeadlineExceededError("redis: the call's deadline passed before it was sent"));
    }
    cluster_.RefreshIfWanted(deadline);
    std::size_t next = 0;  // the keys handed over
    bool sink_failed = false;
    std::vector<Command> commands;
    for (bool rebuilt = false;; rebuilt = true) {
      const absl::Span<const std::string_view> rest = keys.subspan(next);
      if (several_slots(rest)) {  // a backend that found a cluster in this call
        const ScopedCallDeadline bound(deadline);
        return Backend::MultiGetEach(rest, [&](std::size_t i, std::optional<ItemView> item) {
          return sink(next + i, std::move(item));
        });
      }
      const int slot = cluster_.SlotOf(rest.front());
      commands.clear();
      const std::size_t reply_bound = SaturatingAdd(options_.max_item_size, kReplyOverhead);
      // max_array 1: an array of one element is parsed and refused as the wrong type, as an
      // MGET's nested one; a longer one is refused before it is allocated.
      for (const std::string_view key : rest) {
        commands.push_back({{"GET", key}, slot, reply_bound, /*max_array=*/1});
      }
      const std::size_t base = next;
      bool found_cluster = false;
      const absl::Status status = cluster_.Stream(
          commands, deadline,
          [&](std::size_t c, Reply reply) -> absl::Status {
            std::optional<ItemView> item;
            if (reply->type == REDIS_REPLY_STRING) {
              const std::string_view value(reply->str, reply->len);
              item = ItemView{value,
                              std::shared_ptr<const void>(reply.release(), redis::ReplyDeleter())};
            } else if (reply->type != REDIS_REPLY_NIL) {
              return UnexpectedReply(*reply, "GET");
            }
            next = base + c + 1;
            absl::Status handed = sink(base + c, std::move(item));
            sink_failed = !handed.ok();
            return handed;
          },
          rebuilt ? nullptr : &found_cluster);
      if (found_cluster) continue;
      if (status.ok() || sink_failed) return status;  // the sink's error is the caller's own
      if (absl::IsDeadlineExceeded(status) && call_deadline < start + options_.command_timeout &&
          absl::Now() >= call_deadline) {
        return Failed(absl::DeadlineExceededError(
            "redis: the call's deadline passed before the server answered"));
      }
      return Failed(status);
    }
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    Counters::Add(counters_.calls);
    if (absl::Status s = CheckItems(items, ttl); !s.ok()) return Failed(s);
    const std::string px = PxArgument(ttl);
    std::vector<Command> commands;
    // SET of a given value is idempotent: sending it again after an unknown outcome stores the
    // same bytes (with a TTL that starts a little later).
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          for (const KeyValue& item : items) {
            Command command{{"SET", item.key, item.value}, cluster_.SlotOf(item.key)};
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

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    Counters::Add(counters_.calls);
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
      absl::Span<const std::string_view> keys) override {
    Counters::Add(counters_.calls);
    std::vector<std::optional<absl::Duration>> ttls(keys.size());
    std::vector<Command> commands;
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          for (std::string_view key : keys)
            commands.push_back({{"PTTL", key}, cluster_.SlotOf(key)});
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
                                   absl::Duration ttl) override {
    Counters::Add(counters_.calls);
    const KeyValue item{key, value};
    if (absl::Status s = CheckItems({&item, 1}, ttl); !s.ok()) return Failed(s);
    const std::string px = PxArgument(ttl);
    std::vector<Command> commands;
    // Not idempotent: had a lost first attempt stored the item, a second would find it and
    // report it refused. Sent again only when the first surely did not run.
    absl::StatusOr<std::vector<Reply>> replies = Execute(
        commands,
        [&] {
          Command command{{"SET", key, value, "NX"}, cluster_.SlotOf(key)};
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

  RedisBackendStats Stats() const override {
    RedisBackendStats stats = counters_.Snapshot();
    stats.node_pools = nodes_.size();
    return stats;
  }

 private:
  absl::Status Failed(absl::Status status) {
    Counters::Add(counters_.errors);
    return Scrub(std::move(status));
  }

  // `status` with the password and user name redacted from its message, wherever server text
  // quoted in it (an error reply) may have repeated them. AUTH's own replies are never quoted
  // (CredentialsRefused); this is the second line of defence.
  absl::Status Scrub(absl::Status status) const {
    if (status.ok() || (server_.password.empty() && server_.user.empty())) return status;
    std::string message(status.message());
    Redact(message, server_.password, kRedactPrefix);
    Redact(message, server_.user, server_.user.size());
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

  // Calls open_group(slot) at each change of slot and add(i) for each of `n` keys, grouping keys
  // of one slot together (all keys in one group outside a cluster).
  template <typename KeyAt, typename OpenGroup, typename Add>
  void GroupBySlot(std::size_t n, KeyAt key_at, OpenGroup open_group, Add add) const {
    std::vector<std::pair<int, std::size_t>> order;  // (slot, index)
    order.reserve(n);
    for (std::size_t i = 0; i < n; ++i) order.emplace_back(cluster_.SlotOf(key_at(i)), i);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t j = 0; j < order.size(); ++j) {
      if (j == 0 || order[j].first != order[j - 1].first) open_group(order[j].first);
      add(order[j].second);
    }
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
    cluster_.RefreshIfWanted(deadline);
    for (bool rebuilt = false;; rebuilt = true) {
      commands.clear();
      build();
      bool found_cluster = false;
      absl::StatusOr<std::vector<Reply>> replies =
          cluster_.Route(commands, deadline, idempotent, rebuilt ? nullptr : &found_cluster);
      if (found_cluster) continue;
      if (!replies.ok() && absl::IsDeadlineExceeded(replies.status()) &&
          call_deadline < start + options_.command_timeout && absl::Now() >= call_deadline) {
        return absl::DeadlineExceededError(
            "redis: the call's deadline passed before the server answered");
      }
      return replies;
    }
  }

  const RedisBackendOptions options_;
  const redis::ServerUrl server_;
  Counters counters_;
  redis::NodePools nodes_;
  redis::Cluster cluster_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<RedisBackend>> NewRedisBackend(RedisBackendOptions options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  absl::StatusOr<redis::ServerUrl> server = redis::ParseServerUrl(options.url);
  if (!server.ok()) return server.status();
  options.cluster = options.cluster || server->cluster;
  if (options.cluster && (!server->seed.unix_path.empty() || server->db != 0)) {
    return absl::InvalidArgumentError(
        "chunkcache: a Redis Cluster is reached over TCP and has only database 0");
  }
  std::shared_ptr<const redis::TlsContext> tls;
  if (server->tls) {
    absl::StatusOr<std::shared_ptr<const redis::TlsContext>> context =
        redis::TlsContext::Create({.ca_bundle_path = options.tls_ca_bundle_path,
                                   .client_cert_path = options.tls_client_cert_path,
                                   .client_key_path = options.tls_client_key_path,
                                   .server_name = options.tls_server_name});
    if (!context.ok()) return context.status();
    tls = *std::move(context);
  }
  auto backend =
      std::make_shared<RedisBackendImpl>(std::move(options), *std::move(server), std::move(tls));
  if (absl::Status s = backend->Connect(); !s.ok()) return s;
  return backend;
}

}  // namespace chunkcache
