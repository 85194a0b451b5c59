#include "backends/redis/cluster.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/redis_backend.h"

namespace chunkcache {

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
  return crc % redis::kSlots;
}

}  // namespace chunkcache

namespace chunkcache::redis {
namespace {

using internal::MutexLock;

constexpr int kMaxRedirects = 5;
constexpr absl::Duration kTryAgainPause = absl::Milliseconds(10);
// Slot-map refreshes after a node failure, CLUSTERDOWN or TRYAGAIN start at most this often per
// backend: often enough to follow a failover within a fraction of a second, rare enough that a
// dead master does not turn every failing call into a CLUSTER SLOTS on the survivors.
constexpr absl::Duration kMinRefreshInterval = absl::Milliseconds(200);
// A node that failed less than this long ago is asked for the slot map only after the others.
constexpr absl::Duration kFailedNodeMemory = absl::Seconds(10);
// Failed nodes remembered for ordering slot-map refreshes; past it, stale entries are dropped.
constexpr std::size_t kMaxFailedNodes = 256;

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

bool InSlotMap(const SlotMap* map, std::string_view node) {
  if (map == nullptr) return false;
  return std::find(map->nodes.begin(), map->nodes.end(), node) != map->nodes.end() ||
         std::find(map->replicas.begin(), map->replicas.end(), node) != map->replicas.end();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SlotMap>> ParseSlotMap(const redisReply& reply,
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
      if (replica.has_value() &&
          std::find(map->replicas.begin(), map->replicas.end(), *replica) == map->replicas.end()) {
        map->replicas.push_back(*replica);
      }
    }
  }
  if (std::find(covered.begin(), covered.end(), false) != covered.end()) {
    return absl::UnavailableError("redis: the cluster does not cover every slot");
  }
  return std::shared_ptr<const SlotMap>(std::move(map));
}

std::optional<Redirect> ParseRedirect(const redisReply& reply) {
  if (reply.type != REDIS_REPLY_ERROR) return std::nullopt;
  const std::string_view text = ReplyText(reply);
  const bool moved = absl::StartsWith(AbslView(text), "MOVED ");
  const bool ask = absl::StartsWith(AbslView(text), "ASK ");
  if (!moved && !ask) return std::nullopt;
  const std::size_t space = text.rfind(' ');
  return Redirect{ask, std::string(text.substr(space + 1))};
}

Cluster::Cluster(std::string seed, NodePools* nodes, Counters* counters)
    : seed_(std::move(seed)), nodes_(*nodes), counters_(*counters) {}

int Cluster::SlotOf(std::string_view key) const { return active() ? RedisClusterSlot(key) : -1; }

bool Cluster::Knows(const std::string& node) {
  if (node == seed_) return true;
  MutexLock lock(&map_mu_);
  return InSlotMap(slot_map_.get(), node);
}

void Cluster::RefreshIfWanted(absl::Time deadline) {
  if (active() && refresh_wanted_.load(std::memory_order_relaxed)) MaybeRefreshSlotMap(deadline);
}

std::string Cluster::NodeFor(int slot) {
  if (slot < 0) return seed_;
  MutexLock lock(&map_mu_);
  if (slot_map_ == nullptr) return seed_;
  return slot_map_->nodes[slot_map_->owner[slot]];
}

absl::StatusOr<std::vector<Reply>> Cluster::Route(absl::Span<const Command> commands,
                                                  absl::Time deadline, bool idempotent,
                                                  bool* found_cluster) {
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
      absl::StatusOr<std::vector<Reply>> got = nodes_.Run(node, batch, deadline, idempotent, &sent);
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
          Counters::Add(counters_.redirects);
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
      Counters::Add(counters_.failover_retries);
    }
    pending = std::move(next);
  }
  return replies;
}

absl::Status Cluster::Stream(absl::Span<const Command> commands, absl::Time deadline,
                             Connection::ReplyHandler on_reply, bool* found_cluster) {
  constexpr std::size_t kAsking = static_cast<std::size_t>(-1);
  const int slot = commands.empty() ? -1 : commands.front().slot;
  std::size_t next = 0;  // the commands answered (their replies handed over)
  std::optional<std::string> ask_target;
  bool may_retry = true;  // one retry after a node failure or CLUSTERDOWN
  for (int round = 0; next < commands.size(); ++round) {
    if (round > kMaxRedirects) {
      return absl::UnavailableError("redis: too many cluster redirects; the cluster is moving");
    }
    const std::string node = ask_target.has_value() ? *ask_target : NodeFor(slot);
    std::vector<Command> batch;
    std::vector<std::size_t> answers;  // the command each reply of the batch answers
    for (std::size_t i = next; i < commands.size(); ++i) {
      if (ask_target.has_value()) {
        batch.push_back({{"ASKING"}});
        answers.push_back(kAsking);
      }
      batch.push_back(commands[i]);
      answers.push_back(i);
    }
    ask_target.reset();
    std::optional<Redirect> redirect;
    absl::Status setback;  // CLUSTERDOWN before any reply was handed over
    bool handler_failed = false;
    const absl::Status status =
        nodes_.Stream(node, batch, deadline, [&](std::size_t b, Reply reply) -> absl::Status {
          if (answers[b] == kAsking) return absl::OkStatus();  // its +OK
          redirect = ParseRedirect(*reply);
          if (redirect.has_value()) return absl::AbortedError("redis: redirected");
          if (next == 0 && slot >= 0 && reply->type == REDIS_REPLY_ERROR &&
              absl::StartsWith(AbslView(ReplyText(*reply)), "CLUSTERDOWN")) {
            setback = ReplyError(ReplyText(*reply));
            return setback;
          }
          absl::Status handled = on_reply(answers[b], std::move(reply));
          if (!handled.ok()) {
            handler_failed = true;
            return handled;
          }
          ++next;
          return absl::OkStatus();
        });
    if (redirect.has_value()) {
      Counters::Add(counters_.redirects);
      if (redirect->ask) {
        ask_target = std::move(redirect->node);
        continue;
      }
      if (absl::Status s = RefreshSlotMap(deadline); !s.ok()) return s;
      if (found_cluster != nullptr && slot < 0) {
        *found_cluster = true;
        return absl::UnavailableError("redis: found a cluster");
      }
      continue;
    }
    if (status.ok() || handler_failed) return status;
    if (setback.ok()) {  // the node failed
      if (slot < 0 || !(absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status))) {
        return status;
      }
      NoteNodeFailure(node);
    }
    // As in Route, with the further condition that nothing was handed over yet.
    if (next > 0 || !may_retry || absl::Now() >= deadline) return status;
    may_retry = false;
    refresh_wanted_.store(true, std::memory_order_relaxed);
    MaybeRefreshSlotMap(deadline);
    if (NodeFor(slot) == node) return status;
    Counters::Add(counters_.failover_retries);
  }
  return absl::OkStatus();
}

void Cluster::NoteNodeFailure(const std::string& node) {
  refresh_wanted_.store(true, std::memory_order_relaxed);
  MutexLock lock(&map_mu_);
  RememberFailure(node);
}

// Notes that `node` failed now. The memory stays bounded however many nodes fail (ASK targets
// named by a broken server, say): past kMaxFailedNodes, entries older than kFailedNodeMemory
// go, then those of nodes outside the slot map (only the map's nodes are asked for the map).
void Cluster::RememberFailure(const std::string& node) {
  const absl::Time now = absl::Now();
  failed_at_[node] = now;
  if (failed_at_.size() <= kMaxFailedNodes) return;
  absl::erase_if(failed_at_,
                 [&](const auto& entry) { return now - entry.second >= kFailedNodeMemory; });
  if (failed_at_.size() <= kMaxFailedNodes) return;
  const SlotMap* const map = slot_map_.get();
  absl::erase_if(failed_at_, [&](const auto& entry) {
    return !InSlotMap(map, entry.first) && entry.first != seed_;
  });
}

// Refreshes the slot map unless a refresh started less than kMinRefreshInterval ago or is
// under way (then the caller goes on with the map it finds).
void Cluster::MaybeRefreshSlotMap(absl::Time deadline) {
  {
    MutexLock lock(&refresh_mu_);
    if (refreshing_ || absl::Now() - last_refresh_ < kMinRefreshInterval) return;
    refreshing_ = true;
  }
  (void)RefreshSlotMap(deadline);
  MutexLock lock(&refresh_mu_);
  refreshing_ = false;
}

absl::Status Cluster::RefreshSlotMap(absl::Time deadline) {
  Counters::Add(counters_.slot_map_refreshes);
  {
    MutexLock lock(&refresh_mu_);
    last_refresh_ = absl::Now();
  }
  refresh_wanted_.store(false, std::memory_order_relaxed);
  std::vector<std::string> candidates;
  {
    std::vector<std::string> known = {seed_};
    std::vector<std::string> failed_recently;
    MutexLock lock(&map_mu_);
    if (slot_map_ != nullptr) {
      for (const std::vector<std::string>* nodes : {&slot_map_->nodes, &slot_map_->replicas}) {
        for (const std::string& node : *nodes) {
          if (node != seed_) known.push_back(node);
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
    absl::StatusOr<std::vector<Reply>> replies = nodes_.Run(node, {&slots, 1}, deadline);
    if (!replies.ok()) {
      if (absl::IsUnavailable(replies.status()) || absl::IsDeadlineExceeded(replies.status())) {
        MutexLock lock(&map_mu_);
        RememberFailure(node);
      }
      last = replies.status();
      continue;
    }
    absl::StatusOr<std::shared_ptr<const SlotMap>> map = ParseSlotMap(*(*replies)[0], node);
    if (!map.ok()) {
      last = map.status();
      continue;
    }
    MutexLock lock(&map_mu_);
    slot_map_ = *std::move(map);
    active_.store(true, std::memory_order_release);
    return absl::OkStatus();
  }
  refresh_wanted_.store(true, std::memory_order_relaxed);
  return last;
}

}  // namespace chunkcache::redis
