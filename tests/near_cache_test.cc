#include "cache/near_cache.h"

#include <sched.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "internal/striped_shared_ptr.h"

namespace chunkcache::internal {
namespace {

NearCache::Entry EntryOf(std::string payload, std::uint64_t generation = 1) {
  return {std::make_shared<const std::string>(std::move(payload)), generation,
          absl::FromUnixSeconds(100), absl::FromUnixSeconds(200)};
}

// The stripes of the near caches below, whatever the machine.
constexpr std::size_t kStripes = 4;

std::size_t Charge(std::string_view key, std::size_t payload) {
  return key.size() + payload + kNearCacheEntryOverhead +
         StripedSharedPtr<const std::string>::MemoryBytes(kStripes);
}

// The first two CPUs this process may run on; empty if there are fewer.
std::vector<int> TwoCpus() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  return cpus.size() == 2 ? cpus : std::vector<int>{};
}

// Runs `body` on a new thread pinned to `cpu`; false if it could not be pinned.
template <typename Body>
bool OnCpu(int cpu, Body body) {
  bool pinned = false;
  std::thread([&] {
    cpu_set_t only;
    CPU_ZERO(&only);
    CPU_SET(cpu, &only);
    pinned = sched_setaffinity(0, sizeof(only), &only) == 0 && sched_getcpu() == cpu;
    if (pinned) body();
  }).join();
  return pinned;
}

TEST_CASE("an erase holds back inserts of its own key only, not of every key") {
  NearCache cache(1 << 20, kStripes);
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
  NearCache cache(1 << 20, kStripes);
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
  NearCache cache(1 << 20, kStripes);
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
  NearCache cache(3 * Charge("k0", payload) + 10, kStripes);
  for (int i = 0; i < 3; ++i)
    cache.Insert(absl::StrCat("k", i), EntryOf(std::string(payload, 'a')));
  REQUIRE(cache.Lookup("k0").has_value());  // k0 becomes the most recent of its shard
  for (int i = 3; i < 10; ++i) {
    cache.Insert(absl::StrCat("k", i), EntryOf(std::string(payload, 'a')));
    CHECK(cache.bytes() <= 3 * Charge("k0", payload) + 10);
  }
  CHECK(cache.evictions() == 7);
  CHECK(cache.Lookup("k9").has_value());  // the newest entry is never its own victim

  NearCache tiny(100, kStripes);
  tiny.Insert("k", EntryOf(std::string(200, 'a')));
  CHECK_FALSE(tiny.Lookup("k").has_value());
  CHECK(tiny.bytes() == 0);
}

TEST_CASE("near cache lookups, inserts and erases race safely", "[concurrency]") {
  NearCache cache(64 * Charge("k00", 100), kStripes);
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

TEST_CASE("an entry's charge counts its stripes") {
  using Striped = StripedSharedPtr<const std::string>;
  // What StripedSharedPtr takes: a header line and a line per stripe, the allocator's overhead
  // for an aligned block, and an owner per stripe.
  CHECK(Striped::MemoryBytes(4) == 5 * 64 + 128 + 4 * 16 + 16);
  CHECK(Striped::MemoryBytes(3) == Striped::MemoryBytes(4));  // rounded up to a power of two
  CHECK(Striped::MemoryBytes(16) == 17 * 64 + 128 + 16 * 16 + 16);
  CHECK(NearCache::DefaultStripes() >= 1);
  CHECK(NearCache::DefaultStripes() <= 16);

  NearCache four(1 << 20, 4);
  NearCache sixteen(1 << 20, 16);
  CHECK(four.stripes() == 4);
  CHECK(NearCache(1 << 20, 5).stripes() == 8);
  CHECK(four.entry_overhead() == kNearCacheEntryOverhead + Striped::MemoryBytes(4));
  CHECK(sixteen.entry_overhead() == kNearCacheEntryOverhead + Striped::MemoryBytes(16));
  four.Insert("key", EntryOf("payload"));
  sixteen.Insert("key", EntryOf("payload"));
  CHECK(four.bytes() == 3 + 7 + four.entry_overhead());
  CHECK(sixteen.bytes() == 3 + 7 + sixteen.entry_overhead());
}

TEST_CASE("hits on different CPUs count their copies on different cache lines") {
  const std::vector<int> cpus = TwoCpus();
  if (cpus.empty()) {
    WARN("fewer than two CPUs: nothing to check");
    return;
  }
  REQUIRE(cpus[0] % kStripes != cpus[1] % kStripes);
  NearCache cache(1 << 20, kStripes);
  cache.Insert("k", EntryOf("payload"));
  Bytes mine;
  REQUIRE(OnCpu(cpus[0], [&] { mine = cache.Lookup("k")->bytes; }));
  const long count = mine.use_count();
  std::vector<Bytes> theirs;
  REQUIRE(OnCpu(cpus[1], [&] {
    for (int i = 0; i < 10; ++i) theirs.push_back(cache.Lookup("k")->bytes);
  }));
  // The same payload, counted elsewhere: copies made on the other CPU did not write the
  // reference count that copies made on the first one share.
  CHECK(theirs.at(0).get() == mine.get());
  CHECK(mine.use_count() == count);
  CHECK(theirs.at(0).use_count() >= 10);
  // Copies made on the first CPU do.
  Bytes again;
  REQUIRE(OnCpu(cpus[0], [&] { again = cache.Lookup("k")->bytes; }));
  CHECK(mine.use_count() == count + 1);
}

TEST_CASE("the bytes of a hit outlive the entry: replaced, erased, evicted, or the cache gone") {
  // Room for one entry: each insert of another key evicts the last one.
  auto cache = std::make_unique<NearCache>(2 * Charge("k0", 100) - 1, kStripes);
  // Each entry's payload is owned by the near cache alone (EntryOf's copy is gone).
  cache->Insert("k0", EntryOf(std::string(100, 'a')));
  const Bytes replaced = cache->Lookup("k0")->bytes;
  cache->Insert("k0", EntryOf(std::string(100, 'b')));
  const Bytes erased = cache->Lookup("k0")->bytes;
  cache->Erase("k0");
  cache->Insert("k1", EntryOf(std::string(100, 'c')));
  Bytes evicted;  // taken on another thread (and maybe another stripe)
  std::thread([&] { evicted = cache->Lookup("k1")->bytes; }).join();
  cache->Insert("k2", EntryOf(std::string(100, 'd')));
  REQUIRE_FALSE(cache->Lookup("k1").has_value());
  CHECK(cache->evictions() == 1);
  const Bytes last = cache->Lookup("k2")->bytes;
  cache.reset();
  CHECK(*replaced == std::string(100, 'a'));
  CHECK(*erased == std::string(100, 'b'));
  CHECK(*evicted == std::string(100, 'c'));
  CHECK(*last == std::string(100, 'd'));
}

TEST_CASE("a StripedSharedPtr shares its pointee, which lives until the last copy goes") {
  auto payload = std::make_shared<const std::string>("payload");
  const std::weak_ptr<const std::string> watch = payload;
  auto striped =
      std::make_unique<StripedSharedPtr<const std::string>>(std::move(payload), /*stripes=*/3);
  CHECK(striped->stripes() == 4);
  std::shared_ptr<const std::string> copy = striped->Get();
  CHECK(copy.get() == striped->get());
  CHECK(*copy == "payload");
  striped.reset();
  CHECK_FALSE(watch.expired());  // `copy` owns it
  CHECK(*copy == "payload");
  copy.reset();
  CHECK(watch.expired());
}

TEST_CASE("hits on one key race safely with its replacement and erasure", "[concurrency]") {
  NearCache cache(1 << 20, kStripes);
  cache.Insert("hot", EntryOf(std::string(100, 'a'), 0));
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::atomic<int> hits{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      std::vector<Bytes> held;  // copies kept across replacements, read again later
      while (!stop) {
        std::optional<NearCache::Entry> e = cache.Lookup("hot");
        if (!e.has_value()) continue;
        ++hits;
        if (e->bytes->size() != 100 ||
            (*e->bytes)[99] != static_cast<char>('a' + e->generation % 26)) {
          ++wrong;
        }
        if (held.size() < 64) held.push_back(std::move(e->bytes));
      }
      for (const Bytes& bytes : held) {
        if (bytes->size() != 100 || (*bytes)[0] != (*bytes)[99]) ++wrong;
      }
    });
  }
  std::thread writer([&] {
    for (std::uint64_t g = 1; !stop; ++g) {
      if (g % 3 == 0) {
        cache.Erase("hot");
      } else {
        cache.Insert("hot", EntryOf(std::string(100, static_cast<char>('a' + g % 26)), g));
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  writer.join();
  for (std::thread& reader : readers) reader.join();
  CHECK(wrong == 0);
  CHECK(hits > 0);
}

}  // namespace
}  // namespace chunkcache::internal
