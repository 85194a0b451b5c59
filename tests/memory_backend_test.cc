#include "chunkcache/memory_backend.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "backend_calls.h"
#include "chunkcache/testing/backend_conformance.h"
#include "test_util.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>

namespace chunkcache {
namespace {

constexpr absl::Duration kForever = absl::InfiniteDuration();

using testing::FakeClock;
using testing::Get;
using testing::Set;

// What the items of `backend` are charged, without its index tables.
std::uint64_t ItemBytes(const MemoryBackend& backend) {
  const MemoryBackendStats stats = backend.Stats();
  return stats.bytes - stats.index_bytes;
}

// What one item with this key and value is charged, measured in a backend of its own.
std::uint64_t ChargeOf(std::string_view key, std::string_view value) {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.shards = 1});
  REQUIRE(Set(*backend, key, value).ok());
  return ItemBytes(*backend);
}

// Whether `actual` is the charge `expected` of `items` items. Charges are measured, and malloc
// may hand out a free chunk up to 31 bytes larger than asked for rather than split it, so each of
// an item's (at most four) blocks may be charged a little differently from one time to the next.
bool SameCharge(std::uint64_t actual, std::uint64_t expected, std::uint64_t items = 1) {
  const std::uint64_t slack = items * 4 * 31;
  return actual + slack >= expected && actual <= expected + slack;
}

// One shard holding exactly `items` items of 1-byte keys and `value_size`-byte values, with the
// index they need: measured by storing them in a larger one, plus half an item for the slack of
// SameCharge.
MemoryBackendOptions SingleShardFor(int items, std::size_t value_size) {
  const std::shared_ptr<MemoryBackend> probe =
      NewMemoryBackend({.max_item_size = value_size, .shards = 1});
  for (int i = 0; i < items; ++i) {
    REQUIRE(
        Set(*probe, std::string(1, static_cast<char>('a' + i)), std::string(value_size, 'v')).ok());
  }
  return {.capacity_bytes = probe->Stats().bytes + ItemBytes(*probe) / items / 2,
          .max_item_size = value_size,
          .shards = 1};
}

TEST_CASE("MultiGet returns one entry per key, in order, with nullopt where absent") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  const std::vector<KeyValue> items = {{"a", "alpha"}, {"b", ""}, {"c", "gamma"}};
  REQUIRE(backend->MultiSet(items, kForever).ok());

  const std::vector<std::string_view> keys = {"c", "missing", "a", "b", "a", ""};
  absl::StatusOr<std::vector<std::optional<std::string>>> values = backend->MultiGet(keys);
  REQUIRE(values.ok());
  REQUIRE(values->size() == keys.size());
  CHECK((*values)[0] == "gamma");
  CHECK((*values)[1] == std::nullopt);
  CHECK((*values)[2] == "alpha");
  CHECK((*values)[3] == "");  // An empty value is present, not absent.
  CHECK((*values)[4] == "alpha");
  CHECK((*values)[5] == std::nullopt);

  CHECK(backend->MultiGet({})->empty());
}

TEST_CASE("MultiGetEach hands over what MultiGet returns, in key order, counted the same") {
  FakeClock clock;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.clock = clock.AsFunction()});
  const std::vector<KeyValue> items = {{"a", "alpha"}, {"b", ""}, {"c", "gamma"}};
  REQUIRE(backend->MultiSet(items, kForever).ok());
  REQUIRE(Set(*backend, "brief", "b", absl::Seconds(1)).ok());
  clock.Advance(absl::Seconds(1));

  const std::vector<std::string_view> keys = {"c", "missing", "a", "b", "brief", "a", ""};
  const std::vector<std::optional<std::string>> each = testing::GetEach(*backend, keys);
  CHECK(each == std::vector<std::optional<std::string>>{"gamma", std::nullopt, "alpha", "",
                                                        std::nullopt, "alpha", std::nullopt});
  MemoryBackendStats stats = backend->Stats();
  CHECK(stats.hits == 4);
  CHECK(stats.misses == 3);
  CHECK(stats.expirations == 1);
  CHECK(stats.items == 3);

  const absl::StatusOr<std::vector<std::optional<std::string>>> values = backend->MultiGet(keys);
  REQUIRE(values.ok());
  CHECK(*values == each);
  stats = backend->Stats();
  CHECK(stats.hits == 8);
  CHECK(stats.misses == 6);

  CHECK(testing::GetEach(*backend, {}).empty());
}

TEST_CASE("MultiGetEach hands over the stored bytes themselves, not a copy") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  REQUIRE(Set(*backend, "k", std::string(1000, 'v')).ok());
  const std::string_view key = "k";
  std::vector<const char*> seen;
  for (int call = 0; call < 2; ++call) {
    REQUIRE(backend
                ->MultiGetEach({&key, 1},
                               [&](std::size_t, std::optional<ItemView> item) {
                                 REQUIRE(item.has_value());
                                 seen.push_back(item->value.data());
                                 return absl::OkStatus();
                               })
                .ok());
  }
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == seen[1]);
}

TEST_CASE("bytes handed over by MultiGetEach stay valid while held, whatever befalls the key") {
  // One shard that holds two 2 KiB items: a third evicts the least recently used.
  const MemoryBackendOptions options = SingleShardFor(2, 2048);
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  const std::string first(2048, 'a');
  REQUIRE(Set(*backend, "overwritten", first).ok());
  REQUIRE(Set(*backend, "deleted", std::string(2048, 'd')).ok());

  const std::vector<std::string_view> keys = {"overwritten", "deleted"};
  std::vector<ItemView> held;
  REQUIRE(backend
              ->MultiGetEach(keys,
                             [&](std::size_t, std::optional<ItemView> item) {
                               REQUIRE(item.has_value());
                               held.push_back(*std::move(item));
                               return absl::OkStatus();
                             })
              .ok());
  REQUIRE(held.size() == 2);

  REQUIRE(Set(*backend, "overwritten", std::string(2048, 'b')).ok());
  const std::string_view deleted = "deleted";
  REQUIRE(backend->Delete({&deleted, 1}).ok());
  REQUIRE(Set(*backend, "filler-1", std::string(2048, 'f')).ok());
  REQUIRE(Set(*backend, "filler-2", std::string(2048, 'g')).ok());  // evicts "overwritten"
  CHECK(Get(*backend, "overwritten") == std::nullopt);
  CHECK(backend->Stats().evictions >= 1);

  CHECK(held[0].value == first);
  CHECK(held[1].value == std::string(2048, 'd'));
}

TEST_CASE("a sink error stops MultiGetEach, which returns it, and the backend works on") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  REQUIRE(
      backend->MultiSet(std::vector<KeyValue>{{"a", "1"}, {"b", "2"}, {"c", "3"}}, kForever).ok());
  const std::vector<std::string_view> keys = {"a", "b", "c"};
  std::vector<std::size_t> indexes;
  const absl::Status status =
      backend->MultiGetEach(keys, [&](std::size_t index, std::optional<ItemView>) {
        indexes.push_back(index);
        return index == 1 ? absl::CancelledError("enough") : absl::OkStatus();
      });
  CHECK(status == absl::CancelledError("enough"));
  CHECK(indexes == std::vector<std::size_t>{0, 1});
  CHECK(backend->Stats().hits == 2);  // "c" was not looked up
  CHECK(testing::GetEach(*backend, keys) == std::vector<std::optional<std::string>>{"1", "2", "3"});
}

TEST_CASE("MultiGetEach calls its sink with no lock held, so the sink may use the backend") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.shards = 1});
  REQUIRE(Set(*backend, "k", "old").ok());
  const std::string_view key = "k";
  std::optional<std::string> inside;
  REQUIRE(backend
              ->MultiGetEach({&key, 1},
                             [&](std::size_t, std::optional<ItemView> item) {
                               REQUIRE(Set(*backend, "k", "new").ok());  // same shard
                               inside = Get(*backend, "k");
                               CHECK(item->value == "old");
                               return absl::OkStatus();
                             })
              .ok());
  CHECK(inside == "new");
}

TEST_CASE("binary keys and values round-trip byte for byte") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  const std::string key("k\0\xff", 3);
  const std::string value("\0\x01\x02\xfe\xff", 5);
  REQUIRE(Set(*backend, key, value).ok());
  CHECK(Get(*backend, key) == value);
  CHECK(Get(*backend, std::string_view("k", 1)) == std::nullopt);
}

TEST_CASE("an empty key is InvalidArgument for MultiSet and SetIfAbsent") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  const std::vector<KeyValue> items = {{"good", "1"}, {"", "2"}};
  const absl::Status status = backend->MultiSet(items, kForever);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Catch::Contains("empty"));
  CHECK(Get(*backend, "good") == std::nullopt);

  CHECK(backend->SetIfAbsent("", "v", kForever).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(backend->Stats().items == 0);
}

TEST_CASE("storing an existing key replaces its value and its byte charge") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  REQUIRE(Set(*backend, "k", "short").ok());
  REQUIRE(Set(*backend, "k", "a much longer value").ok());
  CHECK(Get(*backend, "k") == "a much longer value");
  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.items == 1);
  CHECK(SameCharge(ItemBytes(*backend), ChargeOf("k", "a much longer value")));
  CHECK(ChargeOf("k", "a much longer value") > ChargeOf("k", "short"));
  CHECK(stats.evictions == 0);
}

TEST_CASE("when a key appears twice in one batch the later value wins") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  const std::vector<KeyValue> items = {{"k", "first"}, {"other", "x"}, {"k", "second"}};
  REQUIRE(backend->MultiSet(items, kForever).ok());
  CHECK(Get(*backend, "k") == "second");
  CHECK(backend->Stats().items == 2);
}

TEST_CASE("with one shard the least recently stored item is evicted first") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(SingleShardFor(3, 100));
  const std::string value(100, 'v');
  for (const char* key : {"a", "b", "c", "d"}) REQUIRE(Set(*backend, key, value).ok());

  CHECK(backend->Stats().evictions == 1);
  CHECK(backend->Stats().items == 3);
  CHECK(Get(*backend, "a") == std::nullopt);
  CHECK(Get(*backend, "b") == value);
  CHECK(Get(*backend, "c") == value);
  CHECK(Get(*backend, "d") == value);
}

TEST_CASE("reading an item protects it from eviction") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(SingleShardFor(3, 100));
  const std::string value(100, 'v');
  for (const char* key : {"a", "b", "c"}) REQUIRE(Set(*backend, key, value).ok());
  REQUIRE(Get(*backend, "a") == value);  // Order, most recent first: a c b.

  REQUIRE(Set(*backend, "d", value).ok());  // Evicts b.
  CHECK(Get(*backend, "b") == std::nullopt);
  REQUIRE(Set(*backend, "e", value).ok());  // Order was d a c (the miss on b touched nothing).
  CHECK(Get(*backend, "c") == std::nullopt);
  CHECK(Get(*backend, "a") == value);
  CHECK(Get(*backend, "d") == value);
  CHECK(Get(*backend, "e") == value);
  CHECK(backend->Stats().evictions == 2);
}

TEST_CASE("replacing an item makes it the most recently used") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(SingleShardFor(2, 10));
  REQUIRE(Set(*backend, "a", "0123456789").ok());
  REQUIRE(Set(*backend, "b", "0123456789").ok());
  REQUIRE(Set(*backend, "a", "9876543210").ok());
  REQUIRE(Set(*backend, "c", "0123456789").ok());  // Evicts b, not a.
  CHECK(Get(*backend, "a") == "9876543210");
  CHECK(Get(*backend, "b") == std::nullopt);
}

TEST_CASE("stored bytes never exceed capacity_bytes, whatever the item sizes") {
  const MemoryBackendOptions options = {
      .capacity_bytes = 64 << 10, .max_item_size = 4 << 10, .shards = 4};
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  std::mt19937 rng(42);
  std::vector<std::string> keys;
  for (int i = 0; i < 2000; ++i) {
    keys.push_back(absl::StrCat("key-", rng() % 500, std::string(rng() % 40, 'k')));
    const std::string value(rng() % (options.max_item_size + 1), 'v');
    REQUIRE(Set(*backend, keys.back(), value).ok());
    REQUIRE(backend->Stats().bytes <= options.capacity_bytes);
  }
  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.evictions > 0);
  CHECK(stats.items > 0);

  // The byte count is exactly the charge of the items still held.
  std::vector<std::string_view> key_views(keys.begin(), keys.end());
  std::sort(key_views.begin(), key_views.end());
  key_views.erase(std::unique(key_views.begin(), key_views.end()), key_views.end());
  absl::StatusOr<std::vector<std::optional<std::string>>> values = backend->MultiGet(key_views);
  REQUIRE(values.ok());
  std::uint64_t held_items = 0;
  std::uint64_t held_bytes = 0;
  for (std::size_t i = 0; i < key_views.size(); ++i) {
    if (!(*values)[i].has_value()) continue;
    ++held_items;
    held_bytes += ChargeOf(key_views[i], *(*values)[i]);
  }
  CHECK(held_items == stats.items);
  CHECK(SameCharge(stats.bytes - stats.index_bytes, held_bytes, held_items));

  // Every charge added is taken away again.
  REQUIRE(backend->Delete(key_views).ok());
  CHECK(backend->Stats().items == 0);
  CHECK(ItemBytes(*backend) == 0);
}

TEST_CASE("an item expires once its ttl has passed") {
  FakeClock clock;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.clock = clock.AsFunction()});
  REQUIRE(Set(*backend, "short", "s", absl::Seconds(10)).ok());
  REQUIRE(Set(*backend, "long", "l", absl::Seconds(60)).ok());

  clock.Advance(absl::Seconds(9));
  CHECK(Get(*backend, "short") == "s");
  clock.Advance(absl::Seconds(1));
  CHECK(Get(*backend, "short") == std::nullopt);
  CHECK(Get(*backend, "long") == "l");
  clock.Advance(absl::Seconds(50));
  CHECK(Get(*backend, "long") == std::nullopt);

  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.expirations == 2);
  CHECK(stats.items == 0);
  CHECK(stats.bytes == stats.index_bytes);
}

TEST_CASE("storing again restarts the ttl") {
  FakeClock clock;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.clock = clock.AsFunction()});
  REQUIRE(Set(*backend, "k", "1", absl::Seconds(10)).ok());
  clock.Advance(absl::Seconds(8));
  REQUIRE(Set(*backend, "k", "2", absl::Seconds(10)).ok());
  clock.Advance(absl::Seconds(8));
  CHECK(Get(*backend, "k") == "2");
}

TEST_CASE("an item stored with an infinite ttl never expires") {
  FakeClock clock;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.clock = clock.AsFunction()});
  REQUIRE(Set(*backend, "k", "v", absl::InfiniteDuration()).ok());
  REQUIRE(backend->SetIfAbsent("j", "w", absl::InfiniteDuration()).value());
  clock.Advance(absl::Hours(24 * 365 * 100));
  CHECK(Get(*backend, "k") == "v");
  CHECK(Get(*backend, "j") == "w");
  CHECK(backend->Stats().expirations == 0);
}

TEST_CASE("an expired item met while making room counts as an expiration, not an eviction") {
  FakeClock clock;
  MemoryBackendOptions options = SingleShardFor(2, 10);
  options.clock = clock.AsFunction();
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  REQUIRE(Set(*backend, "a", "0123456789", absl::Seconds(1)).ok());
  REQUIRE(Set(*backend, "b", "0123456789").ok());
  clock.Advance(absl::Seconds(2));
  REQUIRE(Set(*backend, "c", "0123456789").ok());  // Drops the expired a.

  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.expirations == 1);
  CHECK(stats.evictions == 0);
  CHECK(Get(*backend, "b") == "0123456789");
}

TEST_CASE("a value over max_item_size is InvalidArgument and the batch stores nothing") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.max_item_size = 1000});
  REQUIRE(Set(*backend, "kept", "old").ok());

  const std::string big(1001, 'x');
  const std::vector<KeyValue> items = {{"kept", "new"}, {"fresh", "f"}, {"big", big}};
  const absl::Status status = backend->MultiSet(items, kForever);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Catch::Contains("1001") && Catch::Contains("1000"));
  CHECK(Get(*backend, "kept") == "old");
  CHECK(Get(*backend, "fresh") == std::nullopt);
  CHECK(Get(*backend, "big") == std::nullopt);

  CHECK(backend->SetIfAbsent("big", big, kForever).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(backend->Stats().sets == 1);
}

TEST_CASE("a value of exactly max_item_size is accepted") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.max_item_size = 1000});
  CHECK(backend->max_item_size() == 1000);
  const std::string value(1000, 'x');
  REQUIRE(Set(*backend, "k", value).ok());
  CHECK(Get(*backend, "k") == value);
}

TEST_CASE("a non-positive ttl is InvalidArgument and stores nothing") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  for (const absl::Duration ttl :
       {absl::ZeroDuration(), absl::Seconds(-1), -absl::InfiniteDuration()}) {
    CHECK(Set(*backend, "k", "v", ttl).code() == absl::StatusCode::kInvalidArgument);
    CHECK(backend->SetIfAbsent("k", "v", ttl).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(Get(*backend, "k") == std::nullopt);
  CHECK(backend->Stats().sets == 0);
}

TEST_CASE("an item too large for any shard is ResourceExhausted and the batch stores nothing") {
  const std::shared_ptr<MemoryBackend> backend =
      NewMemoryBackend({.capacity_bytes = 4096, .max_item_size = 1024, .shards = 1});
  const std::string long_key(4096, 'k');  // Fits no 4096-byte shard with its overhead.
  const std::vector<KeyValue> items = {{"small", "s"}, {long_key, "v"}};
  const absl::Status status = backend->MultiSet(items, kForever);
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(Get(*backend, "small") == std::nullopt);
  CHECK(backend->SetIfAbsent(long_key, "v", kForever).status().code() ==
        absl::StatusCode::kResourceExhausted);
}

TEST_CASE("shards are reduced so that a max-size item always fits") {
  // 16 shards of 256 KiB could not hold a 1 MiB item; fewer, larger shards can.
  const std::shared_ptr<MemoryBackend> backend =
      NewMemoryBackend({.capacity_bytes = 4 << 20, .max_item_size = 1 << 20, .shards = 16});
  const std::string value(1 << 20, 'x');
  for (int i = 0; i < 8; ++i) {
    REQUIRE(Set(*backend, absl::StrCat("key-", i), value).ok());
    CHECK(backend->Stats().bytes <= std::size_t{4} << 20);
  }
  CHECK(backend->Stats().items >= 1);
}

TEST_CASE("SetIfAbsent stores only when the key is absent or expired") {
  FakeClock clock;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.clock = clock.AsFunction()});

  absl::StatusOr<bool> stored = backend->SetIfAbsent("k", "first", absl::Seconds(10));
  REQUIRE(stored.ok());
  CHECK(*stored);
  CHECK(Get(*backend, "k") == "first");

  stored = backend->SetIfAbsent("k", "second", absl::Seconds(10));
  REQUIRE(stored.ok());
  CHECK_FALSE(*stored);
  CHECK(Get(*backend, "k") == "first");

  clock.Advance(absl::Seconds(10));
  stored = backend->SetIfAbsent("k", "third", absl::Seconds(10));
  REQUIRE(stored.ok());
  CHECK(*stored);
  CHECK(Get(*backend, "k") == "third");

  REQUIRE(backend->Delete(std::vector<std::string_view>{"k"}).ok());
  CHECK(*backend->SetIfAbsent("k", "fourth", kForever));
  CHECK(Get(*backend, "k") == "fourth");

  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.sets == 3);
  CHECK(stats.expirations == 1);
}

TEST_CASE("Delete removes present keys and ignores absent ones") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  const std::vector<KeyValue> items = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
  REQUIRE(backend->MultiSet(items, kForever).ok());

  const std::vector<std::string_view> doomed = {"a", "missing", "c", "a", ""};
  REQUIRE(backend->Delete(doomed).ok());
  CHECK(Get(*backend, "a") == std::nullopt);
  CHECK(Get(*backend, "b") == "2");
  CHECK(Get(*backend, "c") == std::nullopt);
  REQUIRE(backend->Delete({}).ok());

  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.deletes == 2);
  CHECK(stats.items == 1);
  CHECK(SameCharge(ItemBytes(*backend), ChargeOf("b", "2")));
}

TEST_CASE("Stats counts hits, misses, sets, deletes, evictions and expirations") {
  FakeClock clock;
  MemoryBackendOptions options = SingleShardFor(3, 10);
  options.clock = clock.AsFunction();
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);

  const std::vector<KeyValue> items = {
      {"a", "0123456789"}, {"b", "0123456789"}, {"c", "0123456789"}};
  REQUIRE(backend->MultiSet(items, kForever).ok());                  // 3 sets.
  REQUIRE(Set(*backend, "d", "0123456789").ok());                    // 1 set, evicts a.
  REQUIRE(Set(*backend, "e", "0123456789", absl::Seconds(1)).ok());  // 1 set, evicts b.
  const std::vector<std::string_view> keys = {"a", "b", "c", "d", "e", "z"};
  REQUIRE(backend->MultiGet(keys).ok());  // 3 hits, 3 misses.
  clock.Advance(absl::Seconds(1));
  CHECK(Get(*backend, "e") == std::nullopt);                               // 1 miss, 1 expiration.
  REQUIRE(backend->Delete(std::vector<std::string_view>{"c", "z"}).ok());  // 1 delete.
  CHECK_FALSE(*backend->SetIfAbsent("d", "x", kForever));                  // No set.

  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.sets == 5);
  CHECK(stats.evictions == 2);
  CHECK(stats.hits == 3);
  CHECK(stats.misses == 4);
  CHECK(stats.expirations == 1);
  CHECK(stats.deletes == 1);
  CHECK(stats.items == 1);
  CHECK(SameCharge(ItemBytes(*backend), ChargeOf("d", "0123456789")));
}

TEST_CASE("NewMemoryBackend returns a working Backend with the given options") {
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.max_item_size = 123});
  REQUIRE(backend != nullptr);
  CHECK(backend->max_item_size() == 123);
  REQUIRE(Set(*backend, "k", "v").ok());
  CHECK(Get(*backend, "k") == "v");
  CHECK(backend->Stats().sets == 1);  // The concrete type: its Stats need no cast.
  CHECK(Set(*backend, "big", std::string(124, 'x')).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a value's bytes are charged at the size the allocator gives them") {
  const std::uint64_t empty = ChargeOf("k", "");
  CHECK(empty > 0);  // The list node and the value's shared block.
  for (const std::size_t size : {std::size_t{16}, std::size_t{100}, std::size_t{1000},
                                 std::size_t{5000}, std::size_t{100} << 10}) {
    INFO("value of " << size << " bytes");
    const std::uint64_t extra = ChargeOf("k", std::string(size, 'v')) - empty;
    CHECK(extra >= size + 1);  // The bytes and a terminating NUL...
    // ...in a block rounded up to 16 bytes, with its header, and SameCharge's slack.
    CHECK(extra <= size + 1 + 24 + 2 * 31);
  }
}

TEST_CASE("an item is stored if its measured charge fits a shard, and refused if it does not") {
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{8}, std::size_t{15}, std::size_t{16}, std::size_t{24},
        std::size_t{100}, std::size_t{4096}, std::size_t{100} << 10}) {
    INFO("value of " << size << " bytes");
    const std::string value(size, 'v');
    const std::shared_ptr<MemoryBackend> probe = NewMemoryBackend({.shards = 1});
    REQUIRE(Set(*probe, "a-key-of-20-bytes...", value).ok());
    const std::size_t needed = probe->Stats().bytes;

    // The check before storing agrees with the measured charge within SameCharge's slack.
    const std::size_t slack = 4 * 31;
    const std::shared_ptr<MemoryBackend> roomy =
        NewMemoryBackend({.capacity_bytes = needed + slack, .shards = 1});
    CHECK(Set(*roomy, "a-key-of-20-bytes...", value).ok());
    CHECK(Get(*roomy, "a-key-of-20-bytes...") == value);
    CHECK(SameCharge(roomy->Stats().bytes, needed));

    const std::shared_ptr<MemoryBackend> tight =
        NewMemoryBackend({.capacity_bytes = needed - slack, .shards = 1});
    CHECK(Set(*tight, "a-key-of-20-bytes...", value).code() ==
          absl::StatusCode::kResourceExhausted);
    CHECK(tight->SetIfAbsent("a-key-of-20-bytes...", value, kForever).status().code() ==
          absl::StatusCode::kResourceExhausted);
    CHECK(tight->Stats().items == 0);
  }
}

TEST_CASE("a shard's index is charged at its size and given back once most items are gone") {
  const MemoryBackendOptions options = {
      .capacity_bytes = 4 << 20, .max_item_size = 64 << 10, .shards = 1};
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  for (int i = 0; i < 30'000; ++i) REQUIRE(Set(*backend, absl::StrCat("tiny-", i), "v").ok());
  const MemoryBackendStats tiny = backend->Stats();
  CHECK(tiny.bytes <= options.capacity_bytes);
  CHECK(tiny.index_bytes > 25 * tiny.items);  // A slot and a control byte per item at least.

  // Large values push every tiny item out; the index they grew must not keep its size.
  const std::string large(60 << 10, 'L');
  for (int i = 0; i < 100; ++i) REQUIRE(Set(*backend, absl::StrCat("large-", i), large).ok());
  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.items < 70);
  CHECK(stats.bytes <= options.capacity_bytes);
  CHECK(stats.index_bytes < 8 << 10);
  // So the room goes to items: all but less than one large item's worth of the capacity.
  CHECK(stats.bytes - stats.index_bytes > options.capacity_bytes - (64 << 10));

  // Deleting everything leaves nothing charged but the (small) index.
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) keys.push_back(absl::StrCat("large-", i));
  REQUIRE(backend->Delete(std::vector<std::string_view>(keys.begin(), keys.end())).ok());
  CHECK(backend->Stats().items == 0);
  CHECK(ItemBytes(*backend) == 0);
}

// This process's resident memory in bytes, after handing free heap memory back to the system so
// that what remains is memory in use; 0 where /proc/self/statm cannot be read or under a
// sanitizer.
std::int64_t ResidentBytes() {
#if defined(CHUNKCACHE_UNDER_SANITIZER)
  return 0;
#else
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0;
  std::int64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::int64_t>(sysconf(_SC_PAGESIZE));
#endif
}

// Fills a backend of `capacity` bytes with `count` items (16-byte keys, `value` each), far more
// than fit, and checks that the resident memory it takes stays within capacity_bytes (with 15%
// and 4 MiB for the allocator's own bookkeeping and the noise of measuring RSS) yet uses most of
// it. The backend is built on this thread, so its memory comes from the main arena.
void CheckResidentMemoryBound(std::size_t capacity, int count, const std::string& value) {
  const std::int64_t before = ResidentBytes();
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend({.capacity_bytes = capacity});
  int failed_sets = 0;
  char key[17];
  for (int i = 0; i < count; ++i) {
    std::snprintf(key, sizeof key, "key-%012d", i);
    if (!Set(*backend, std::string_view(key, 16), value).ok()) ++failed_sets;
  }
  const std::int64_t growth = ResidentBytes() - before;
  const MemoryBackendStats stats = backend->Stats();
  INFO("resident growth " << growth << " bytes for " << stats.items << " items charged "
                          << stats.bytes << " bytes; capacity_bytes " << capacity);
  REQUIRE(failed_sets == 0);
  REQUIRE(stats.evictions > 0);  // Full: it holds what capacity_bytes lets it hold.
  CHECK(stats.bytes <= capacity);
  if (before == 0) {
    WARN("resident memory is not measurable here (no /proc/self/statm, or a sanitizer)");
    return;
  }
  CHECK(growth <= static_cast<std::int64_t>(capacity * 115 / 100 + (4 << 20)));
  // The charge is not so cautious that the capacity goes unused.
  CHECK(growth >= static_cast<std::int64_t>(capacity * 3 / 4));
}

TEST_CASE("capacity_bytes bounds the resident memory of many tiny items") {
  // 16-byte keys and 8-byte values: enough to fill 64 MiB even at 64 bytes an item.
  CheckResidentMemoryBound(std::size_t{64} << 20, 1'200'000, "01234567");
}

TEST_CASE("capacity_bytes bounds the resident memory of large items") {
  CheckResidentMemoryBound(std::size_t{32} << 20, 1000, std::string(100 << 10, 'v'));
}

// Values name their key, so a reader can tell a value that belongs to another key.
std::string ValueFor(std::string_view key, int thread, std::size_t padding) {
  return absl::StrCat(std::string(key), "|", thread, "|", std::string(padding, 'p'));
}

bool BelongsTo(std::string_view value, std::string_view key) {
  return value.size() > key.size() && value.substr(0, key.size()) == key &&
         value[key.size()] == '|';
}

TEST_CASE("concurrent mixed operations never return another key's value or exceed capacity",
          "[concurrency]") {
  constexpr int kThreads = 8;
  constexpr int kOpsPerThread = 10000;
  constexpr int kKeys = 64;
  const MemoryBackendOptions options = {
      .capacity_bytes = 16 << 10, .max_item_size = 2 << 10, .shards = 4};
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(absl::StrCat("key-", i));

  std::atomic<int> wrong_values{0};
  std::atomic<int> errors{0};
  std::atomic<int> over_capacity{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      auto random_key = [&]() -> std::string_view { return keys[rng() % kKeys]; };
      start.arrive_and_wait();
      for (int op = 0; op < kOpsPerThread; ++op) {
        switch (rng() % 5) {
          case 0: {
            const int count = 1 + rng() % 4;
            std::vector<std::string_view> batch_keys;
            std::vector<std::string> values;
            for (int i = 0; i < count; ++i) {
              batch_keys.push_back(random_key());
              values.push_back(ValueFor(batch_keys.back(), t, rng() % (options.max_item_size / 2)));
            }
            std::vector<KeyValue> items;
            for (int i = 0; i < count; ++i) items.push_back({batch_keys[i], values[i]});
            const absl::Duration ttl = rng() % 4 == 0 ? absl::Milliseconds(1) : kForever;
            if (!backend->MultiSet(items, ttl).ok()) ++errors;
            break;
          }
          case 1:
          case 2: {
            std::vector<std::string_view> wanted;
            for (int i = 1 + rng() % 8; i > 0; --i) wanted.push_back(random_key());
            auto got = backend->MultiGet(wanted);
            if (!got.ok() || got->size() != wanted.size()) {
              ++errors;
              break;
            }
            for (std::size_t i = 0; i < wanted.size(); ++i) {
              if ((*got)[i].has_value() && !BelongsTo(*(*got)[i], wanted[i])) ++wrong_values;
            }
            break;
          }
          case 3: {
            const std::string_view key = random_key();
            if (!backend->Delete({&key, 1}).ok()) ++errors;
            break;
          }
          case 4: {
            const std::string_view key = random_key();
            if (!backend->SetIfAbsent(key, ValueFor(key, t, rng() % 100), kForever).ok()) {
              ++errors;
            }
            break;
          }
        }
        if (op % 100 == 0 && backend->Stats().bytes > options.capacity_bytes) ++over_capacity;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  CHECK(wrong_values == 0);
  CHECK(errors == 0);
  CHECK(over_capacity == 0);
  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.bytes <= options.capacity_bytes);
  CHECK(stats.hits > 0);
  CHECK(stats.evictions > 0);

  // Whatever survived still belongs to its key.
  std::vector<std::string_view> all(keys.begin(), keys.end());
  auto values = backend->MultiGet(all);
  REQUIRE(values.ok());
  for (std::size_t i = 0; i < all.size(); ++i) {
    if ((*values)[i].has_value()) CHECK(BelongsTo(*(*values)[i], all[i]));
  }
}

TEST_CASE("exactly one of many racing SetIfAbsent calls wins each key", "[concurrency]") {
  constexpr int kThreads = 8;
  constexpr int kKeys = 500;
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend();
  std::vector<std::atomic<int>> wins(kKeys);
  std::vector<std::atomic<int>> winner(kKeys);
  std::atomic<int> errors{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int k = 0; k < kKeys; ++k) {
        absl::StatusOr<bool> stored =
            backend->SetIfAbsent(absl::StrCat("key-", k), absl::StrCat("thread-", t), kForever);
        if (!stored.ok()) {
          ++errors;
        } else if (*stored) {
          ++wins[k];
          winner[k] = t;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  CHECK(errors == 0);
  int keys_with_one_winner = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (wins[k] != 1) continue;
    ++keys_with_one_winner;
    CHECK(Get(*backend, absl::StrCat("key-", k)) == absl::StrCat("thread-", winner[k].load()));
  }
  CHECK(keys_with_one_winner == kKeys);
  CHECK(backend->Stats().sets == kKeys);
}

TEST_CASE("readers of MultiGetEach keep unchanged bytes while writers overwrite the keys",
          "[concurrency]") {
  constexpr int kReaders = 4;
  constexpr int kWriters = 4;
  constexpr int kOpsPerThread = 5000;
  constexpr int kKeys = 16;
  const MemoryBackendOptions options = {
      .capacity_bytes = 16 << 10, .max_item_size = 2 << 10, .shards = 2};
  const std::shared_ptr<MemoryBackend> backend = NewMemoryBackend(options);
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(absl::StrCat("key-", i));

  std::atomic<int> wrong_values{0};
  std::atomic<int> changed_values{0};
  std::atomic<int> errors{0};
  std::latch start(kReaders + kWriters);
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      start.arrive_and_wait();
      for (int op = 0; op < kOpsPerThread; ++op) {
        const std::string_view key = keys[rng() % kKeys];
        const std::string value = ValueFor(key, t, rng() % (options.max_item_size / 2));
        if (rng() % 8 == 0) {
          if (!backend->Delete({&key, 1}).ok()) ++errors;
        } else if (!Set(*backend, key, value).ok()) {
          ++errors;
        }
      }
    });
  }
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(kWriters + t);
      start.arrive_and_wait();
      // Items held across calls, with a copy of their bytes taken when handed over.
      std::vector<std::pair<ItemView, std::string>> held;
      for (int op = 0; op < kOpsPerThread; ++op) {
        std::vector<std::string_view> wanted;
        for (int i = 1 + rng() % 8; i > 0; --i) wanted.push_back(keys[rng() % kKeys]);
        std::size_t next = 0;
        const absl::Status status =
            backend->MultiGetEach(wanted, [&](std::size_t index, std::optional<ItemView> item) {
              if (index != next++) ++wrong_values;
              if (!item.has_value()) return absl::OkStatus();
              if (!BelongsTo(item->value, wanted[index])) ++wrong_values;
              if (held.size() < 64) held.emplace_back(*item, std::string(item->value));
              return absl::OkStatus();
            });
        if (!status.ok() || next != wanted.size()) ++errors;
        if (op % 100 == 99) {
          for (const auto& [item, copy] : held) {
            if (item.value != copy) ++changed_values;
          }
          held.clear();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  CHECK(wrong_values == 0);
  CHECK(changed_values == 0);
  CHECK(errors == 0);
  const MemoryBackendStats stats = backend->Stats();
  CHECK(stats.hits > 0);
  CHECK(stats.bytes <= options.capacity_bytes);
}

// The Backend contract, checked by the conformance kit: once as shipped with the reference 10 MB
// catalogue, and once with small items on a single shard (every item evicts the ones before).
TEST_CASE("the memory backend keeps the Backend contract", "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] { return NewMemoryBackend(); }, {.short_ttl = absl::Milliseconds(100)});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

TEST_CASE("a memory backend with small items and one shard keeps the Backend contract",
          "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] { return NewMemoryBackend({.max_item_size = 64 << 10, .shards = 1}); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 1});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache
