#include "internal/sharded_lru.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "internal/cpu_stripes.h"
#include "internal/mutex.h"

namespace chunkcache::internal {
namespace {

using Lru = ShardedLru<std::string>;
using ExclusiveLru = ShardedLru<std::string, StandardLruHeap, LruLocking::kExclusive>;

constexpr auto kInsert = [](const std::string* /*existing*/) { return LruAdmit::kInsert; };

// Inserts `value` under `key` with `charge`, replacing any entry; what it removed.
template <typename L>
typename L::Removed Put(L& lru, std::string_view key, std::string value, std::size_t charge,
                        LruInserted expected = LruInserted::kStored) {
  typename L::NodeList node = L::NewNode(key, std::move(value));
  node.front().charge = charge;
  typename L::Removed removed;
  CHECK(lru.Insert(&node, kInsert, &removed) == expected);
  return removed;
}

template <typename L>
std::optional<std::string> Find(L& lru, std::string_view key) {
  std::optional<std::string> found;
  lru.Lookup(key, [&](const std::string& value) {
    found = value;
    return true;
  });
  return found;
}

template <typename NodeList>
std::vector<std::string> Keys(const NodeList& nodes) {
  std::vector<std::string> keys;
  for (const auto& node : nodes) keys.emplace_back(node.key);
  return keys;
}

TEMPLATE_TEST_CASE("a full shard evicts its least recently used entries, never the one inserted",
                   "", Lru, ExclusiveLru) {
  using L = TestType;
  L lru({.shards = 1, .capacity = 30});
  Put(lru, "a", "1", 10);
  Put(lru, "b", "2", 10);
  Put(lru, "c", "3", 10);
  CHECK(lru.bytes() == 30);
  REQUIRE(Find(lru, "a") == "1");  // "b" is now the least recent.

  typename L::Removed removed = Put(lru, "d", "4", 10);
  CHECK(Keys(removed.evicted) == std::vector<std::string>{"b"});
  CHECK(removed.evicted.front().value == "2");  // Handed over, not yet destroyed.
  CHECK(removed.dropped.empty());
  CHECK_FALSE(Find(lru, "b").has_value());

  // One entry that needs the room of two evicts two.
  removed = Put(lru, "e", "5", 20);
  CHECK(Keys(removed.evicted) == std::vector<std::string>{"c", "a"});
  CHECK(lru.bytes() == 30);
  CHECK(lru.usage().entries == 2);
}

TEMPLATE_TEST_CASE("a lookup whose reader declines the entry leaves the order alone", "", Lru,
                   ExclusiveLru) {
  using L = TestType;
  L lru({.shards = 1, .capacity = 20});
  Put(lru, "old", "1", 10);
  Put(lru, "new", "2", 10);
  CHECK(lru.Lookup("old", [](const std::string&) { return false; }));
  CHECK(lru.Peek("old", [](const std::string&) {}));
  CHECK_FALSE(lru.Lookup("absent", [](const std::string&) { return true; }));
  CHECK_FALSE(lru.Peek("absent", [](const std::string&) {}));
  // Neither made "old" the most recent: it goes first.
  CHECK(Keys(Put(lru, "next", "3", 10).evicted) == std::vector<std::string>{"old"});
  // A lookup of the most recent entry keeps it there.
  REQUIRE(Find(lru, "next") == "3");
  CHECK(Keys(Put(lru, "last", "4", 10).evicted) == std::vector<std::string>{"new"});
}

TEMPLATE_TEST_CASE("the total bound takes entries from other shards when the own shard is empty",
                   "", Lru, ExclusiveLru) {
  using L = TestType;
  constexpr std::size_t kCapacity = 100;
  L lru({.shards = 4, .capacity = kCapacity});
  std::size_t evicted = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string key = absl::StrCat("key-", i);
    evicted += Put(lru, key, key, 10 + i % 7).evicted.size();
    CHECK(lru.bytes() <= kCapacity);
    CHECK(Find(lru, key) == key);  // The newest entry is never its own victim.
  }
  const typename L::Usage usage = lru.usage();
  CHECK(usage.charges == lru.bytes());
  CHECK(usage.entries + evicted == 200);
  CHECK(lru.bytes() > kCapacity - 17);  // Evicted only what made room.
}

TEST_CASE("an entry charged more than the total bound is refused and removes the existing one") {
  Lru lru({.shards = 2, .capacity = 50});
  Put(lru, "k", "small", 10);
  Put(lru, "other", "x", 10);
  Lru::Removed removed = Put(lru, "k", "huge", 51, LruInserted::kTooLarge);
  CHECK(Keys(removed.dropped) == std::vector<std::string>{"k"});
  CHECK(removed.evicted.empty());
  CHECK_FALSE(Find(lru, "k").has_value());
  CHECK(Find(lru, "other") == "x");
  CHECK(lru.bytes() == 10);
}

TEST_CASE("an insert's decision keeps, replaces or drops the existing entry") {
  Lru lru({.shards = 1});
  Put(lru, "k", "first", 5);

  const auto insert = [&](std::string value, LruAdmit admit, const std::string* want_existing) {
    Lru::NodeList node = Lru::NewNode("k", std::move(value));
    node.front().charge = 7;
    Lru::Removed removed;
    const LruInserted inserted = lru.Insert(
        &node,
        [&](const std::string* existing) {
          CHECK((existing == nullptr) == (want_existing == nullptr));
          if (existing != nullptr && want_existing != nullptr) CHECK(*existing == *want_existing);
          return admit;
        },
        &removed);
    return std::pair(inserted, Keys(removed.dropped).size());
  };

  const std::string first = "first";
  CHECK(insert("second", LruAdmit::kKeep, &first) == std::pair(LruInserted::kKept, std::size_t{0}));
  CHECK(Find(lru, "k") == "first");
  CHECK(lru.bytes() == 5);

  CHECK(insert("second", LruAdmit::kInsert, &first) ==
        std::pair(LruInserted::kStored, std::size_t{1}));
  CHECK(Find(lru, "k") == "second");
  CHECK(lru.bytes() == 7);

  const std::string second = "second";
  CHECK(insert("third", LruAdmit::kDrop, &second) ==
        std::pair(LruInserted::kDropped, std::size_t{1}));
  CHECK_FALSE(Find(lru, "k").has_value());
  CHECK(lru.bytes() == 0);

  CHECK(insert("fourth", LruAdmit::kInsert, nullptr) ==
        std::pair(LruInserted::kStored, std::size_t{0}));
  CHECK(Find(lru, "k") == "fourth");
}

TEST_CASE("an erase asks its decision, for an absent key too, and removes only on true") {
  Lru lru({.shards = 3});
  Put(lru, "k", "v", 4);
  int asked = 0;
  Lru::Removed removed;
  CHECK_FALSE(lru.Erase(
      "absent",
      [&](const std::string* existing) {
        ++asked;
        CHECK(existing == nullptr);
        return true;
      },
      &removed));
  CHECK_FALSE(lru.Erase(
      "k",
      [&](const std::string* existing) {
        ++asked;
        CHECK(*existing == "v");
        return false;
      },
      &removed));
  CHECK(Find(lru, "k") == "v");
  CHECK(lru.Erase(
      "k", [&](const std::string*) { return ++asked > 0; }, &removed));
  CHECK(asked == 3);
  CHECK(Keys(removed.dropped) == std::vector<std::string>{"k"});
  CHECK_FALSE(Find(lru, "k").has_value());
  CHECK(lru.bytes() == 0);
  CHECK(lru.usage().entries == 0);
}

TEST_CASE("a shard's bound counts its index table, which shrinks once mostly empty") {
  const std::size_t one = Lru::IndexBytesForOneEntry();
  REQUIRE(one > 0);
  {
    Lru lru({.shards = 1});
    Put(lru, "k", "v", 1);
    CHECK(lru.usage().index_bytes == one);
  }

  constexpr std::size_t kShardCapacity = 64 << 10;
  Lru lru({.shards = 1, .shard_capacity = kShardCapacity});
  std::size_t largest_index = 0;
  for (int i = 0; i < 5000; ++i) {
    Put(lru, absl::StrCat("tiny-", i), "v", 1);
    const Lru::Usage usage = lru.usage();
    REQUIRE(usage.charges + usage.index_bytes <= kShardCapacity);
    largest_index = std::max(largest_index, usage.index_bytes);
  }
  CHECK(largest_index > kShardCapacity / 4);  // The index, not the 1-byte charges, filled it.

  // Large entries push the tiny ones out; the index they grew is given back.
  for (int i = 0; i < 10; ++i) Put(lru, absl::StrCat("large-", i), "L", 8 << 10);
  const Lru::Usage after = lru.usage();
  CHECK(after.entries < 8);
  CHECK(after.index_bytes < largest_index / 8);
  CHECK(after.charges + after.index_bytes <= kShardCapacity);
}

TEMPLATE_TEST_CASE("concurrent lookups, inserts and erases keep the map whole and within its bound",
                   "[concurrency]", Lru, ExclusiveLru) {
  using L = TestType;
  constexpr int kThreads = 4;
  constexpr int kOps = 20000;
  constexpr int kKeys = 64;
  constexpr std::size_t kCapacity = 40 * 16;
  L lru({.shards = 4, .capacity = kCapacity});
  std::atomic<int> wrong{0};
  std::atomic<std::size_t> evicted{0};
  // Each thread inserts values naming their key and checks that every value it reads names the
  // key it asked for.
  const auto work = [&](int thread) {
    std::mt19937 rng(thread);
    for (int op = 0; op < kOps; ++op) {
      const std::string key = absl::StrCat("k", rng() % kKeys);
      const unsigned choice = rng() % 4;
      typename L::Removed removed;
      if (choice == 0) {
        typename L::NodeList node = L::NewNode(key, absl::StrCat(key, "|", thread));
        node.front().charge = 8 + rng() % 16;
        lru.Insert(&node, kInsert, &removed);
      } else if (choice == 1) {
        lru.Erase(
            key, [](const std::string*) { return true; }, &removed);
      } else {
        lru.Lookup(key, [&](const std::string& value) {
          if (value.substr(0, key.size() + 1) != key + "|") ++wrong;
          return true;
        });
      }
      evicted += removed.evicted.size();
    }
  };
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  }
  CHECK(wrong == 0);
  CHECK(evicted > 0);
  CHECK(lru.bytes() <= kCapacity);
  const typename L::Usage usage = lru.usage();
  CHECK(usage.charges == lru.bytes());
  CHECK(usage.entries <= static_cast<std::size_t>(kKeys));
}

// Runs `body` on a new thread pinned to `cpu` whose ThreadIndex() is `index` modulo 16 (burning
// indices on threads of its own until it is); false if it could not be pinned.
template <typename Body>
bool OnCpuWithIndex(int cpu, std::size_t index, Body body) {
  while (true) {
    bool ran = false, pinned = false;
    std::thread([&] {
      if (ThreadIndex() % 16 != index % 16) return;
      cpu_set_t only;
      CPU_ZERO(&only);
      CPU_SET(cpu, &only);
      pinned = sched_setaffinity(0, sizeof(only), &only) == 0 && sched_getcpu() == cpu;
      ran = true;
      if (pinned) body();
    }).join();
    if (ran) return pinned;
  }
}

TEST_CASE("readers on different CPUs lock different stripes, whatever their thread indices") {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  REQUIRE(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  if (cpus.size() < 2) {
    WARN("fewer than two CPUs: nothing to check");
    return;
  }
  REQUIRE(cpus[0] % 16 != cpus[1] % 16);
  // A reader on the first CPU holds its lock until the second has taken one: with stripes by
  // thread index, the two (same index modulo 16) would share a mutex and the second would wait.
  CpuSharedMutex mu;
  std::promise<void> held, second_done;
  const std::shared_future<void> done = second_done.get_future().share();
  bool first_pinned = false;
  std::thread first([&, done] {
    first_pinned = OnCpuWithIndex(cpus[0], 0, [&] {
      CpuReaderLock lock(&mu);
      held.set_value();
      done.wait_for(std::chrono::seconds(2));
    });
    if (!first_pinned) held.set_value();
  });
  held.get_future().wait();
  bool second_pinned = false;
  std::thread second([&] {
    second_pinned = OnCpuWithIndex(cpus[1], 0, [&] { CpuReaderLock lock(&mu); });
    second_done.set_value();
  });
  const bool in_time = done.wait_for(std::chrono::seconds(1)) == std::future_status::ready;
  second.join();
  first.join();
  REQUIRE(first_pinned);
  CHECK(second_pinned);
  CHECK(in_time);
}

}  // namespace
}  // namespace chunkcache::internal
