// A cache used on both sides of fork() (issue 15, item 8). A forked child gets a copy of the
// parent's ChunkedCache, generation source included: generation ids must still differ between
// parent and child, and a near cache must not take a new entry for its old bytes because their
// generations happen to match (revalidation compares the checksum too).
//
// The child never runs Catch2 assertions and never returns into Catch2: it reports through a pipe
// and leaves with _exit.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/redis_backend.h"
#include "fixtures/forked_child.h"
#include "fixtures/redis_server.h"
#include "format/manifest.h"

namespace chunkcache {
namespace {

using testing::ForkedChild;

std::set<std::uint64_t> ParseGenerations(absl::string_view report) {
  std::set<std::uint64_t> generations;
  for (absl::string_view word : absl::StrSplit(report, ' ', absl::SkipEmpty())) {
    std::uint64_t g = 0;
    if (absl::SimpleHexAtoi(word, &g)) generations.insert(g);
  }
  return generations;
}

TEST_CASE("fork: a cache created before fork() gives parent and child different generation ids") {
  constexpr int kPuts = 8;
  ChunkedCache cache(NewMemoryBackend());
  REQUIRE(cache.Put("before", "[0]").ok());  // the source is in use before the fork

  // Put kPuts keys and list the generations Inspect reports, in hex.
  auto put_all = [&cache](std::string* out) {
    for (int i = 0; i < kPuts; ++i) {
      const std::string key = absl::StrCat("k", i);
      if (!cache.Put(key, absl::StrCat("[", i, "]")).ok()) return false;
      absl::StatusOr<EntryInfo> info = cache.Inspect(key);
      if (!info.ok()) return false;
      absl::StrAppend(out, absl::Hex(info->generation), " ");
    }
    return true;
  };
  ForkedChild child([&](std::string* report) { return put_all(report) ? 0 : 1; });
  child.Go();
  const std::string child_report = child.Finish();
  REQUIRE(child.exited_cleanly());
  std::string parent_report;
  REQUIRE(put_all(&parent_report));

  const std::set<std::uint64_t> in_child = ParseGenerations(child_report);
  const std::set<std::uint64_t> in_parent = ParseGenerations(parent_report);
  REQUIRE(in_child.size() == kPuts);
  REQUIRE(in_parent.size() == kPuts);
  std::vector<std::uint64_t> shared;
  for (std::uint64_t g : in_child) {
    if (in_parent.contains(g)) shared.push_back(g);
  }
  INFO("parent: " << parent_report << "\nchild:  " << child_report);
  CHECK(shared.empty());
}

// `n` pseudo-random letters: compresses poorly, so the entry spans several small chunks.
std::string Letters(int n, std::uint64_t seed) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    text.push_back(static_cast<char>('a' + (seed >> 33) % 26));
  }
  return text;
}

// The parent's cache clock: real time plus an offset the test advances (the near cache's
// l1_fresh_for), while Redis keeps its own time for the TTLs.
std::atomic<std::int64_t> clock_offset_ns{0};
absl::Time ShiftedNow() { return absl::Now() + absl::Nanoseconds(clock_offset_ns.load()); }

TEST_CASE("fork: after l1_fresh_for the parent's near cache serves the child's Put") {
  testing::RedisServer server;
  absl::StatusOr<std::shared_ptr<Backend>> backend = NewRedisBackend({.url = server.url()});
  REQUIRE(backend.ok());
  CacheOptions options;
  options.l1_capacity_bytes = 1 << 20;
  options.l1_fresh_for = absl::Seconds(1);
  options.clock = ShiftedNow;
  std::string v1 = R"({"writer":"parent"})";
  std::string v2 = R"({"writer":"child!"})";  // same size: only the bytes tell them apart
  SECTION("inline entry") {}
  SECTION("chunked entry") {
    options.chunk_size = 128;  // several chunks each; same generation means same chunk keys
    v1 = absl::StrCat(R"({"writer":"parent","pad":")", Letters(600, 1), R"("})");
    v2 = absl::StrCat(R"({"writer":"child!","pad":")", Letters(600, 2), R"("})");
  }
  ChunkedCache cache(*backend, options);  // before fork(): the child gets a copy

  // The child Puts v2 once the parent has v1 in its near cache. Parent and child use the
  // backend's inherited pooled connection one after the other, never at once.
  ForkedChild child([&](std::string* report) {
    if (absl::Status s = cache.Put("doc", v2); !s.ok()) {
      *report = s.ToString();
      return 1;
    }
    absl::StatusOr<EntryInfo> info = cache.Inspect("doc");
    if (!info.ok()) {
      *report = info.status().ToString();
      return 1;
    }
    *report = absl::StrCat(absl::Hex(info->generation));
    return 0;
  });
  REQUIRE(cache.Put("doc", v1).ok());
  absl::StatusOr<Bytes> first = cache.Get("doc");  // fetched: now in the near cache
  REQUIRE(first.ok());
  REQUIRE(**first == v1);
  const std::uint64_t parent_generation = cache.Inspect("doc").value().generation;
  child.Go();
  const std::string child_report = child.Finish();
  INFO(child.Describe() << "; parent's generation " << absl::StrCat(absl::Hex(parent_generation)));
  REQUIRE(child.exited_cleanly());

  clock_offset_ns += absl::ToInt64Nanoseconds(options.l1_fresh_for + absl::Milliseconds(1));
  absl::StatusOr<Bytes> later = cache.Get("doc");
  REQUIRE(later.ok());
  CHECK(**later == v2);
  CHECK(ParseGenerations(child_report) != std::set<std::uint64_t>{parent_generation});
}

// The second half of item 8, without fork(): whatever makes two writers draw the same generation
// (a sibling forked before the fix, another library version), the near cache must not take a
// same-generation manifest with other bytes for its own. The other writer's entry is forged here:
// v2's manifest, its generation replaced by the one the near cache holds for v1.
TEST_CASE("fork: near-cache revalidation compares the checksum as well as the generation") {
  auto backend = NewMemoryBackend();
  CacheOptions options;
  options.l1_capacity_bytes = 1 << 20;
  options.l1_fresh_for = absl::Seconds(1);
  options.clock = ShiftedNow;
  ChunkedCache cache(backend, options);
  const std::string v1 = R"({"writer":"first!"})";
  const std::string v2 = R"({"writer":"second"})";  // same size
  REQUIRE(cache.Put("doc", v1).ok());
  absl::StatusOr<Bytes> first = cache.Get("doc");  // now in the near cache
  REQUIRE(first.ok());
  REQUIRE(**first == v1);
  const std::uint64_t generation = cache.Inspect("doc").value().generation;

  // v2 written by another cache, then given v1's generation.
  REQUIRE(ChunkedCache(backend).Put("doc", v2).ok());
  const std::string manifest_key = cache.Inspect("doc").value().manifest_key;
  const std::string_view key_view = manifest_key;
  absl::StatusOr<std::vector<std::optional<std::string>>> stored =
      backend->MultiGet({&key_view, 1});
  REQUIRE(stored.ok());
  REQUIRE((*stored)[0].has_value());
  absl::StatusOr<internal::DecodedManifest> decoded = internal::DecodeManifest(
      *(*stored)[0], manifest_key,
      internal::ManifestLimits{.max_payload_size = options.max_payload_size,
                               .max_chunk_size = backend->max_item_size()});
  REQUIRE(decoded.ok());
  REQUIRE(decoded->manifest.is_inline());
  internal::Manifest forged = decoded->manifest;
  forged.generation = generation;
  const std::string forged_bytes =
      internal::EncodeManifest(forged, manifest_key, std::string(decoded->inline_payload));
  const KeyValue item{manifest_key, forged_bytes};
  REQUIRE(backend->MultiSet({&item, 1}, absl::Hours(1)).ok());
  REQUIRE(cache.Inspect("doc").value().generation == generation);

  clock_offset_ns += absl::ToInt64Nanoseconds(options.l1_fresh_for + absl::Milliseconds(1));
  absl::StatusOr<Bytes> later = cache.Get("doc");
  REQUIRE(later.ok());
  CHECK(**later == v2);
}

// Parent and child both read through a backend whose pooled connection the parent opened before
// fork(). Were both to use it, their commands would interleave on one socket and each would read
// the other's replies (before the fix: ~1,450 of 2,000 reads in each process returned the other's
// value). The child must drop the inherited connection, unused, and open its own.
TEST_CASE("fork: parent and child use the inherited Redis connection at once",
          "[fork-shared-connection]") {
  constexpr int kReads = 2000;
  testing::RedisServer server;
  absl::StatusOr<std::shared_ptr<Backend>> backend = NewRedisBackend({.url = server.url()});
  REQUIRE(backend.ok());
  ChunkedCache cache(*backend);
  const std::string parent_value = R"({"owner":"parent"})";
  const std::string child_value = R"({"owner":"child!"})";
  REQUIRE(cache.Put("parent-key", parent_value).ok());
  REQUIRE(cache.Put("child-key", child_value).ok());  // the connection is pooled, idle

  // Each process reads its own key kReads times: "ok=N wrong=N errors=N first_error=...".
  auto read_own = [&cache](const std::string& key, const std::string& value) {
    int ok = 0, wrong = 0, errors = 0;
    std::string first_error;
    for (int i = 0; i < kReads; ++i) {
      absl::StatusOr<Bytes> got = cache.Get(key);
      if (!got.ok()) {
        ++errors;
        if (first_error.empty()) first_error = got.status().ToString();
      } else if (**got == value) {
        ++ok;
      } else {
        ++wrong;
      }
    }
    return absl::StrCat("ok=", ok, " wrong=", wrong, " errors=", errors,
                        " first_error=", first_error);
  };
  ForkedChild child([&](std::string* report) {
    *report = read_own("child-key", child_value);
    return 0;
  });
  child.Go();
  const std::string in_parent = read_own("parent-key", parent_value);
  child.Finish();
  INFO("parent: " << in_parent << "\nchild:  " << child.Describe());
  CHECK(child.exited_cleanly());
  CHECK(in_parent.find(" wrong=0 ") != std::string::npos);
  CHECK(child.Describe().find(" wrong=0 ") != std::string::npos);
}

}  // namespace
}  // namespace chunkcache
