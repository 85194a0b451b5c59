#include "cache/near_cache.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace chunkcache::internal {
namespace {

NearCache::Entry EntryOf(std::string payload, std::uint64_t generation = 1) {
  return {std::make_shared<const std::string>(std::move(payload)), generation,
          absl::FromUnixSeconds(100), absl::FromUnixSeconds(200)};
}

std::size_t Charge(std::string_view key, std::size_t payload) {
  return key.size() + payload + kNearCacheEntryOverhead;
}

TEST_CASE("an erase holds back inserts of its own key only, not of every key") {
  NearCache cache(1 << 20);
  // An erase advances the epoch of its key's slot only: inserts of other keys whose reads began
  // before it still go in, so the near cache fills under write churn.
  constexpr int kKeys = 200;
  std::vector<std::uint64_t> epochs;
  for (int i = 0; i < kKeys; ++i) epochs.push_back(cache.Epoch(absl::StrCat("key", i)));
  cache.Erase("some other key");
  int inserted = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = absl::StrCat("key", i);
    cache.Insert(key, EntryOf("x"), epochs[i]);
    inserted += cache.Lookup(key).has_value() ? 1 : 0;
  }
  CHECK(inserted >= kKeys - 2);  // at most a slot collision or two
  // The erased key's own insert is held back.
  const std::uint64_t before = cache.Epoch("k");
  cache.Erase("k");
  cache.Insert("k", EntryOf("old"), before);
  CHECK_FALSE(cache.Lookup("k").has_value());
}

TEST_CASE("the near cache returns what was inserted, sharing the payload") {
  NearCache cache(1 << 20);
  CHECK_FALSE(cache.Lookup("k").has_value());
  NearCache::Entry entry = EntryOf("payload", 7);
  const std::string* buffer = entry.bytes.get();
  cache.Insert("k", entry);
  std::optional<NearCache::Entry> got = cache.Lookup("k");
  REQUIRE(got.has_value());
  CHECK(got->bytes.get() == buffer);
  CHECK(got->generation == 7);
  CHECK(got->created == absl::FromUnixSeconds(100));
  CHECK(got->validated == absl::FromUnixSeconds(200));
  CHECK(cache.bytes() == Charge("k", 7));

  cache.Insert("k", EntryOf("longer payload", 8));  // replaces
  CHECK(cache.Lookup("k")->generation == 8);
  CHECK(cache.bytes() == Charge("k", 14));
  cache.Erase("k");
  CHECK_FALSE(cache.Lookup("k").has_value());
  CHECK(cache.bytes() == 0);
}

TEST_CASE("MarkValidated moves the validation time only for the same generation") {
  NearCache cache(1 << 20);
  cache.Insert("k", EntryOf("x", 3));
  cache.MarkValidated("k", 4, absl::FromUnixSeconds(900));
  CHECK(cache.Lookup("k")->validated == absl::FromUnixSeconds(200));
  cache.MarkValidated("k", 3, absl::FromUnixSeconds(900));
  CHECK(cache.Lookup("k")->validated == absl::FromUnixSeconds(900));
  cache.MarkValidated("absent", 3, absl::FromUnixSeconds(900));  // no effect, no crash
}

TEST_CASE("the near cache evicts least recently used entries to stay within its bound") {
  const std::size_t payload = 1000;
  // Room for three entries of one shard-agnostic size.
  NearCache cache(3 * Charge("k0", payload) + 10);
  for (int i = 0; i < 3; ++i)
    cache.Insert(absl::StrCat("k", i), EntryOf(std::string(payload, 'a')));
  REQUIRE(cache.Lookup("k0").has_value());  // k0 becomes the most recent of its shard
  for (int i = 3; i < 10; ++i) {
    cache.Insert(absl::StrCat("k", i), EntryOf(std::string(payload, 'a')));
    CHECK(cache.bytes() <= 3 * Charge("k0", payload) + 10);
  }
  CHECK(cache.evictions() == 7);
  CHECK(cache.Lookup("k9").has_value());  // the newest entry is never its own victim

  NearCache tiny(100);
  tiny.Insert("k", EntryOf(std::string(200, 'a')));
  CHECK_FALSE(tiny.Lookup("k").has_value());
  CHECK(tiny.bytes() == 0);
}

TEST_CASE("near cache lookups, inserts and erases race safely", "[concurrency]") {
  NearCache cache(64 * Charge("k00", 100));
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        const std::string key = absl::StrCat("k", (i * 7 + t) % 100);
        if (i % 5 == 0) {
          cache.Insert(key, EntryOf(std::string(100, static_cast<char>('a' + t)), t));
        } else if (i % 17 == 0) {
          cache.Erase(key);
        } else if (std::optional<NearCache::Entry> e = cache.Lookup(key); e.has_value()) {
          if (e->bytes->size() != 100 || (*e->bytes)[0] != static_cast<char>('a' + e->generation)) {
            ++wrong;
          }
          cache.MarkValidated(key, e->generation, absl::Now());
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (std::thread& thread : threads) thread.join();
  CHECK(wrong == 0);
  CHECK(cache.bytes() <= 64 * Charge("k00", 100));
}

}  // namespace
}  // namespace chunkcache::internal
