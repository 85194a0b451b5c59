#include "chunkcache/fault_injection_backend.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
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
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backend_calls.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/testing/backend_conformance.h"
#include "chunkcache/testing/catalogue.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::Get;
using testing::RecordingBackend;
using testing::Set;

constexpr absl::Duration kForever = absl::InfiniteDuration();

std::vector<std::string> Keys(int count, std::string_view prefix = "key-") {
  std::vector<std::string> keys;
  for (int i = 0; i < count; ++i) keys.push_back(absl::StrCat(std::string(prefix), i));
  return keys;
}

std::shared_ptr<FaultInjectionBackend> Faulty(std::shared_ptr<Backend> inner,
                                              FaultInjectionOptions options = {}) {
  absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> faulty =
      NewFaultInjectionBackend(std::move(inner), options);
  REQUIRE(faulty.ok());
  return *std::move(faulty);
}

// Stores `value_of(key)` under each key directly in `backend`.
template <typename ValueOf>
void Fill(Backend& backend, const std::vector<std::string>& keys, ValueOf value_of) {
  for (const std::string& key : keys) REQUIRE(Set(backend, key, value_of(key)).ok());
}

TEST_CASE("with rates of zero every call is forwarded unchanged") {
  auto memory = NewMemoryBackend({.max_item_size = 4096});
  auto recorder = std::make_shared<RecordingBackend>(memory);
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(recorder);

  CHECK(faulty->max_item_size() == 4096);
  const std::vector<KeyValue> items = {{"a", "alpha"}, {"b", ""}, {"c", "gamma"}};
  REQUIRE(faulty->MultiSet(items, kForever).ok());
  const std::vector<std::string_view> keys = {"c", "missing", "a", "b"};
  absl::StatusOr<std::vector<std::optional<std::string>>> values = faulty->MultiGet(keys);
  REQUIRE(values.ok());
  CHECK(*values == std::vector<std::optional<std::string>>{"gamma", std::nullopt, "alpha", ""});
  CHECK(faulty->SetIfAbsent("a", "other", kForever).value() == false);
  CHECK(faulty->SetIfAbsent("d", "delta", kForever).value() == true);
  REQUIRE(faulty->Delete(std::vector<std::string_view>{"a"}).ok());
  CHECK(Get(*memory, "a") == std::nullopt);
  CHECK(Get(*memory, "d") == "delta");

  // The inner backend's own errors come through untouched.
  const absl::Status too_big = Set(*faulty, "big", std::string(4097, 'x'));
  CHECK(too_big.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(too_big.message()), !Catch::Contains("fault injected"));

  CHECK(recorder->multi_gets == 1);
  CHECK(recorder->multi_sets == 2);
  CHECK(recorder->deletes == 1);
  const FaultInjectionStats stats = faulty->Stats();
  CHECK(stats.calls == 6);
  CHECK(stats.total() == 0);
}

TEST_CASE("read_error_rate 1 fails every MultiGet with error_code without reading") {
  auto recorder = std::make_shared<RecordingBackend>(NewMemoryBackend());
  const std::shared_ptr<FaultInjectionBackend> faulty =
      Faulty(recorder, {.read_error_rate = 1, .error_code = absl::StatusCode::kResourceExhausted});
  REQUIRE(Set(*faulty, "k", "v").ok());  // Writes are not affected.

  for (int i = 0; i < 3; ++i) {
    const std::vector<std::string_view> keys = {"k"};
    absl::StatusOr<std::vector<std::optional<std::string>>> values = faulty->MultiGet(keys);
    CHECK(values.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(values.status().message()),
               Catch::StartsWith("fault injected: MultiGet"));
  }
  CHECK(recorder->multi_gets == 0);
  const FaultInjectionStats stats = faulty->Stats();
  CHECK(stats.calls == 4);
  CHECK(stats.read_errors == 3);
  CHECK(stats.total() == 3);
}

TEST_CASE("write_error_rate 1 fails MultiSet, Delete and SetIfAbsent and applies nothing") {
  auto memory = NewMemoryBackend();
  REQUIRE(Set(*memory, "kept", "old").ok());
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(memory, {.write_error_rate = 1});

  const absl::Status set = Set(*faulty, "kept", "new");
  CHECK(set.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(set.message()), Catch::Contains("fault injected: MultiSet"));
  const absl::Status deleted = faulty->Delete(std::vector<std::string_view>{"kept"});
  CHECK(deleted.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(deleted.message()), Catch::Contains("fault injected: Delete"));
  const absl::StatusOr<bool> won = faulty->SetIfAbsent("fresh", "f", kForever);
  CHECK(won.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(won.status().message()), Catch::Contains("fault injected: SetIfAbsent"));

  CHECK(Get(*faulty, "kept") == "old");  // Reads are not affected.
  CHECK(Get(*memory, "fresh") == std::nullopt);
  const FaultInjectionStats stats = faulty->Stats();
  CHECK(stats.write_errors == 3);
  CHECK(stats.read_errors == 0);
  CHECK(stats.total() == 3);
}

TEST_CASE("drop_write_rate 1 reports a MultiSet stored while storing nothing") {
  auto memory = NewMemoryBackend();
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(memory, {.drop_write_rate = 1});
  const std::vector<KeyValue> items = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
  REQUIRE(faulty->MultiSet(items, kForever).ok());
  for (const char* key : {"a", "b", "c"}) CHECK(Get(*memory, key) == std::nullopt);
  CHECK(faulty->Stats().dropped_writes == 3);

  // SetIfAbsent is never dropped.
  CHECK(faulty->SetIfAbsent("d", "4", kForever).value());
  CHECK(Get(*memory, "d") == "4");

  // The inner backend still checks the (now empty) batch: a bad ttl is reported, not dropped.
  CHECK(faulty->MultiSet(items, absl::ZeroDuration()).code() == absl::StatusCode::kInvalidArgument);
  CHECK(faulty->Stats().dropped_writes == 3);
}

TEST_CASE("drop_write_rate drops about that fraction of items, exactly as counted") {
  auto memory = NewMemoryBackend();
  const std::shared_ptr<FaultInjectionBackend> faulty =
      Faulty(memory, {.drop_write_rate = 0.25, .seed = 7});
  const std::vector<std::string> keys = Keys(1000);
  std::vector<KeyValue> items;
  for (const std::string& key : keys) items.push_back({key, key});
  for (std::size_t i = 0; i < items.size(); i += 100) {
    REQUIRE(faulty->MultiSet(absl::MakeConstSpan(items).subspan(i, 100), kForever).ok());
  }

  std::size_t absent = 0;
  for (const std::string& key : keys) {
    const std::optional<std::string> value = Get(*memory, key);
    if (!value.has_value()) {
      ++absent;
    } else {
      CHECK(*value == key);
    }
  }
  CHECK(absent == faulty->Stats().dropped_writes);
  CHECK(absent > 150);
  CHECK(absent < 350);
}

TEST_CASE("lose_item_rate 1 reports every present key absent and keeps it in the store") {
  auto memory = NewMemoryBackend();
  Fill(*memory, {"a", "b", "c"}, [](const std::string& key) { return key + "-value"; });
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(memory, {.lose_item_rate = 1});

  const std::vector<std::string_view> keys = {"a", "missing", "b", "c", "gone"};
  absl::StatusOr<std::vector<std::optional<std::string>>> values = faulty->MultiGet(keys);
  REQUIRE(values.ok());
  REQUIRE(values->size() == keys.size());
  for (const std::optional<std::string>& value : *values) CHECK(value == std::nullopt);
  CHECK(faulty->Stats().lost_items == 3);  // Absent keys are not counted as lost.
  CHECK(Get(*memory, "a") == "a-value");
}

TEST_CASE("flip_byte_rate 1 changes exactly one byte of every non-empty value") {
  auto memory = NewMemoryBackend();
  const std::vector<std::string> keys = Keys(50);
  auto value_of = [](const std::string& key) {
    return std::string(1 + key.size() * 7, 'x') + key;  // Sizes from 36 to 78 bytes.
  };
  Fill(*memory, keys, value_of);
  REQUIRE(Set(*memory, "empty", "").ok());
  REQUIRE(Set(*memory, "one", "1").ok());
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(memory, {.flip_byte_rate = 1});

  std::vector<std::string_view> wanted(keys.begin(), keys.end());
  wanted.push_back("empty");
  wanted.push_back("one");
  wanted.push_back("missing");
  absl::StatusOr<std::vector<std::optional<std::string>>> values = faulty->MultiGet(wanted);
  REQUIRE(values.ok());
  REQUIRE(values->size() == wanted.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string original = value_of(keys[i]);
    REQUIRE((*values)[i].has_value());
    const std::string& got = *(*values)[i];
    REQUIRE(got.size() == original.size());
    int differing = 0;
    for (std::size_t b = 0; b < got.size(); ++b) differing += got[b] != original[b];
    CHECK(differing == 1);
  }
  CHECK((*values)[keys.size()] == "");  // Nothing to flip.
  REQUIRE((*values)[keys.size() + 1].has_value());
  CHECK(*(*values)[keys.size() + 1] != "1");
  CHECK((*values)[keys.size() + 2] == std::nullopt);
  CHECK(faulty->Stats().flipped_bytes == keys.size() + 1);

  CHECK(Get(*memory, keys[0]) == value_of(keys[0]));  // The stored bytes are untouched.
}

TEST_CASE("delay_rate 1 delays every call by at least delay") {
  constexpr absl::Duration kDelay = absl::Milliseconds(20);
  auto memory = NewMemoryBackend();
  const std::shared_ptr<FaultInjectionBackend> faulty =
      Faulty(memory, {.delay_rate = 1, .delay = kDelay});

  const absl::Time start = absl::Now();
  REQUIRE(Set(*faulty, "k", "v").ok());
  const absl::Time set_done = absl::Now();
  CHECK(Get(*faulty, "k") == "v");
  const absl::Time get_done = absl::Now();
  CHECK(set_done - start >= kDelay);
  CHECK(get_done - set_done >= kDelay);
  CHECK(faulty->Stats().delays == 2);

  // A rate of 1 with no delay sleeps for nothing and counts nothing.
  faulty->SetOptions({.delay_rate = 1});
  CHECK(Get(*faulty, "k") == "v");
  CHECK(faulty->Stats().delays == 2);
}

TEST_CASE("a delayed call may also fail") {
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(
      NewMemoryBackend(), {.read_error_rate = 1, .delay_rate = 1, .delay = absl::Milliseconds(5)});
  const std::vector<std::string_view> keys = {"k"};
  const absl::Time start = absl::Now();
  CHECK(faulty->MultiGet(keys).status().code() == absl::StatusCode::kUnavailable);
  CHECK(absl::Now() - start >= absl::Milliseconds(5));
  const FaultInjectionStats stats = faulty->Stats();
  CHECK(stats.delays == 1);
  CHECK(stats.read_errors == 1);
  CHECK(stats.total() == 2);
}

// Runs a fixed mixed sequence of calls and returns a transcript of what came back.
// How a transcript reads its items.
enum class Read { kMultiGet, kMultiGetEach };

// MultiGetEach's items (an error's message naming the call as MultiGet), as MultiGet gives them.
absl::StatusOr<std::vector<std::optional<std::string>>> ReadEach(
    Backend& backend, absl::Span<const std::string_view> keys) {
  std::vector<std::optional<std::string>> values;
  const absl::Status status =
      backend.MultiGetEach(keys, [&](std::size_t, std::optional<ItemView> item) {
        values.push_back(item.has_value() ? std::optional<std::string>(item->value) : std::nullopt);
        return absl::OkStatus();
      });
  if (status.ok()) return values;
  return absl::Status(status.code(),
                      absl::StrReplaceAll(status.message(), {{"MultiGetEach", "MultiGet"}}));
}

std::vector<std::string> Transcript(FaultInjectionBackend& faulty, Read read = Read::kMultiGet) {
  std::vector<std::string> transcript;
  const std::vector<std::string> keys = Keys(20);
  for (int round = 0; round < 20; ++round) {
    std::vector<KeyValue> items;
    std::vector<std::string> values;
    values.reserve(keys.size());
    for (const std::string& key : keys) {
      values.push_back(absl::StrCat(key, "@", round));
      items.push_back({key, values.back()});
    }
    transcript.push_back(faulty.MultiSet(items, kForever).ToString());
    const std::vector<std::string_view> wanted(keys.begin(), keys.end());
    absl::StatusOr<std::vector<std::optional<std::string>>> got =
        read == Read::kMultiGet ? faulty.MultiGet(wanted) : ReadEach(faulty, wanted);
    transcript.push_back(got.status().ToString());
    if (got.ok()) {
      for (const std::optional<std::string>& value : *got) {
        transcript.push_back(value.value_or("<absent>"));
      }
    }
    transcript.push_back(faulty.Delete({&wanted[round], 1}).ToString());
  }
  return transcript;
}

FaultInjectionOptions EverythingAtRandom(std::uint64_t seed) {
  return {.read_error_rate = 0.2,
          .write_error_rate = 0.2,
          .drop_write_rate = 0.2,
          .lose_item_rate = 0.2,
          .flip_byte_rate = 0.2,
          .seed = seed};
}

TEST_CASE("the same seed and calls make the same decisions; another seed makes others") {
  const std::shared_ptr<FaultInjectionBackend> first =
      Faulty(NewMemoryBackend(), EverythingAtRandom(42));
  const std::shared_ptr<FaultInjectionBackend> second =
      Faulty(NewMemoryBackend(), EverythingAtRandom(42));
  const std::shared_ptr<FaultInjectionBackend> other =
      Faulty(NewMemoryBackend(), EverythingAtRandom(43));
  const std::vector<std::string> transcript = Transcript(*first);
  CHECK(Transcript(*second) == transcript);
  CHECK(Transcript(*other) != transcript);

  const FaultInjectionStats a = first->Stats();
  const FaultInjectionStats b = second->Stats();
  CHECK(a.read_errors == b.read_errors);
  CHECK(a.write_errors == b.write_errors);
  CHECK(a.dropped_writes == b.dropped_writes);
  CHECK(a.lost_items == b.lost_items);
  CHECK(a.flipped_bytes == b.flipped_bytes);
  // Every kind of fault happened, so the comparison covered each of them.
  CHECK(a.read_errors > 0);
  CHECK(a.write_errors > 0);
  CHECK(a.dropped_writes > 0);
  CHECK(a.lost_items > 0);
  CHECK(a.flipped_bytes > 0);

  // SetOptions re-seeds: the sequence starts over on a fresh store.
  const std::shared_ptr<FaultInjectionBackend> reseeded =
      Faulty(NewMemoryBackend(), EverythingAtRandom(42));
  const std::vector<std::string> ignored = Transcript(*reseeded);
  reseeded->SetOptions(EverythingAtRandom(42));
  const std::vector<std::string> keys = Keys(20);
  REQUIRE(reseeded->inner()->Delete(std::vector<std::string_view>(keys.begin(), keys.end())).ok());
  CHECK(Transcript(*reseeded) == transcript);
}

TEST_CASE("MultiGetEach makes the decisions MultiGet makes with the same seed") {
  const std::shared_ptr<FaultInjectionBackend> by_get =
      Faulty(NewMemoryBackend(), EverythingAtRandom(42));
  const std::shared_ptr<FaultInjectionBackend> by_each =
      Faulty(NewMemoryBackend(), EverythingAtRandom(42));
  CHECK(Transcript(*by_each, Read::kMultiGetEach) == Transcript(*by_get, Read::kMultiGet));
  const FaultInjectionStats a = by_get->Stats();
  const FaultInjectionStats b = by_each->Stats();
  CHECK(a.calls == b.calls);
  CHECK(a.read_errors == b.read_errors);
  CHECK(a.lost_items == b.lost_items);
  CHECK(a.flipped_bytes == b.flipped_bytes);
  CHECK(b.read_errors > 0);
  CHECK(b.lost_items > 0);
  CHECK(b.flipped_bytes > 0);
}

// The address of the bytes `backend` hands over for `key` (which must be present).
const char* HandedOverAt(Backend& backend, std::string_view key) {
  const char* at = nullptr;
  REQUIRE(backend
              .MultiGetEach({&key, 1},
                            [&](std::size_t, std::optional<ItemView> item) {
                              REQUIRE(item.has_value());
                              at = item->value.data();
                              return absl::OkStatus();
                            })
              .ok());
  return at;
}

TEST_CASE("MultiGetEach hands the inner backend's bytes over uncopied unless it flips one") {
  auto memory = NewMemoryBackend();
  const std::string value(500, 'v');
  REQUIRE(Set(*memory, "k", value).ok());
  const char* const stored = HandedOverAt(*memory, "k");

  // Forwarded as is, and through the per-item path (lose_item_rate 0 < rate, never losing here).
  CHECK(HandedOverAt(*Faulty(memory), "k") == stored);
  CHECK(HandedOverAt(*Faulty(memory, {.lose_item_rate = 1e-300}), "k") == stored);

  const std::shared_ptr<FaultInjectionBackend> flipping = Faulty(memory, {.flip_byte_rate = 1});
  std::optional<ItemView> flipped;
  const std::string_view key = "k";
  REQUIRE(flipping
              ->MultiGetEach({&key, 1},
                             [&](std::size_t, std::optional<ItemView> item) {
                               flipped = std::move(item);
                               return absl::OkStatus();
                             })
              .ok());
  REQUIRE(flipped.has_value());
  CHECK(flipped->value.data() != stored);
  REQUIRE(flipped->value.size() == value.size());
  int differing = 0;
  for (std::size_t i = 0; i < value.size(); ++i) differing += flipped->value[i] != value[i];
  CHECK(differing == 1);
  CHECK(Get(*memory, "k") == value);  // the store's bytes are untouched
  CHECK(flipping->Stats().flipped_bytes == 1);

  const std::shared_ptr<FaultInjectionBackend> losing = Faulty(memory, {.lose_item_rate = 1});
  CHECK(testing::GetEach(*losing, {"k", "absent"}) ==
        std::vector<std::optional<std::string>>{std::nullopt, std::nullopt});
  CHECK(losing->Stats().lost_items == 1);
}

TEST_CASE("read_error_rate 1 fails every MultiGetEach without reading; a sink error stops it") {
  auto memory = NewMemoryBackend();
  auto recorder = std::make_shared<RecordingBackend>(memory);
  REQUIRE(Set(*memory, "a", "1").ok());
  REQUIRE(Set(*memory, "b", "2").ok());
  const std::shared_ptr<FaultInjectionBackend> faulty =
      Faulty(recorder, {.read_error_rate = 1, .error_code = absl::StatusCode::kDeadlineExceeded});
  const std::vector<std::string_view> keys = {"a", "b"};
  const absl::Status status = faulty->MultiGetEach(keys, [](std::size_t, auto) {
    FAIL_CHECK("nothing should be handed over");
    return absl::OkStatus();
  });
  CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(absl::StrContains(status.message(), "fault injected: MultiGetEach failed"));
  CHECK(recorder->multi_gets == 0);
  CHECK(faulty->Stats().read_errors == 1);

  faulty->SetOptions({.lose_item_rate = 0.5});
  int handed_over = 0;
  const absl::Status stop = faulty->MultiGetEach(keys, [&](std::size_t, auto) {
    ++handed_over;
    return absl::AbortedError("stop");
  });
  CHECK(stop == absl::AbortedError("stop"));
  CHECK(handed_over == 1);
  faulty->SetOptions({});
  CHECK(testing::GetEach(*faulty, keys) == std::vector<std::optional<std::string>>{"1", "2"});
}

TEST_CASE("SetOptions takes effect for the next call and options() reports it") {
  const std::shared_ptr<FaultInjectionBackend> faulty = Faulty(NewMemoryBackend());
  REQUIRE(Set(*faulty, "k", "v").ok());
  faulty->SetOptions({.read_error_rate = 1, .error_code = absl::StatusCode::kDeadlineExceeded});
  CHECK(faulty->options().read_error_rate == 1);
  CHECK(faulty->options().error_code == absl::StatusCode::kDeadlineExceeded);
  const std::vector<std::string_view> keys = {"k"};
  CHECK(faulty->MultiGet(keys).status().code() == absl::StatusCode::kDeadlineExceeded);
  faulty->SetOptions({});
  CHECK(Get(*faulty, "k") == "v");
  CHECK(faulty->Stats().read_errors == 1);
}

TEST_CASE("ChunkedCache over a backend that flips bytes never returns wrong bytes") {
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.25, .seed = 3});
  auto faulty = Faulty(NewMemoryBackend());
  ChunkedCache cache(faulty, {.chunk_size = 4096});
  REQUIRE(cache.Put("catalogue", json).ok());
  REQUIRE(**cache.Get("catalogue") == json);  // Several chunks, stored intact.

  faulty->SetOptions({.flip_byte_rate = 1});
  for (int i = 0; i < 20; ++i) {
    const absl::StatusOr<Bytes> got = cache.Get("catalogue");
    CHECK(got.status().code() == absl::StatusCode::kNotFound);
  }
  CHECK(cache.Stats().corrupt_reads > 0);
  CHECK(faulty->Stats().flipped_bytes > 0);

  faulty->SetOptions({});
  CHECK(**cache.Get("catalogue") == json);
}

TEST_CASE(
    "ChunkedCache over a backend that loses and flips at random returns the payload or a "
    "miss, never wrong bytes") {
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.1, .seed = 5});
  auto faulty = Faulty(NewMemoryBackend());
  ChunkedCache cache(faulty, {.chunk_size = 2048});
  REQUIRE(cache.Put("catalogue", json).ok());

  faulty->SetOptions({.lose_item_rate = 0.02, .flip_byte_rate = 0.02, .seed = 11});
  int hits = 0;
  int misses = 0;
  for (int i = 0; i < 200; ++i) {
    const absl::StatusOr<Bytes> got = cache.Get("catalogue");
    if (got.ok()) {
      ++hits;
      CHECK(**got == json);
    } else {
      ++misses;
      CHECK(got.status().code() == absl::StatusCode::kNotFound);
    }
  }
  CHECK(hits > 0);
  CHECK(misses > 0);
  CHECK(cache.Stats().corrupt_reads > 0);
}

TEST_CASE("SetOptions may change the faults while threads call", "[concurrency]") {
  constexpr int kThreads = 4;
  constexpr int kRounds = 20;                     // Times every setting is put in force.
  constexpr std::uint64_t kCallsPerSetting = 50;  // Calls made under a setting before the next.
  auto faulty = Faulty(NewMemoryBackend());
  const std::vector<std::string> keys = Keys(32);
  const std::vector<FaultInjectionOptions> settings = {
      {},
      {.read_error_rate = 0.5, .write_error_rate = 0.5},
      {.drop_write_rate = 0.5, .lose_item_rate = 0.5, .seed = 2},
      {.flip_byte_rate = 1, .error_code = absl::StatusCode::kResourceExhausted, .seed = 3},
      {.read_error_rate = 0.1, .delay_rate = 0.01, .delay = absl::Microseconds(50), .seed = 4},
  };

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls_made{0};
  std::atomic<int> unexpected_errors{0};
  std::atomic<int> wrong_sizes{0};
  std::latch start(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      start.arrive_and_wait();
      while (!stop) {
        const std::string& key = keys[rng() % keys.size()];
        const std::string value = key + "|value";  // Every value of a key has the same size.
        absl::Status status;
        switch (rng() % 4) {
          case 0:
            status = Set(*faulty, key, value);
            break;
          case 1: {
            const std::vector<std::string_view> wanted = {key, keys[rng() % keys.size()]};
            absl::StatusOr<std::vector<std::optional<std::string>>> got = faulty->MultiGet(wanted);
            status = got.status();
            if (got.ok()) {
              for (std::size_t i = 0; i < wanted.size(); ++i) {
                const std::optional<std::string>& v = (*got)[i];
                if (v.has_value() && v->size() != wanted[i].size() + 6) ++wrong_sizes;
              }
            }
            break;
          }
          case 2: {
            const std::string_view doomed = key;
            status = faulty->Delete({&doomed, 1});
            break;
          }
          case 3:
            status = faulty->SetIfAbsent(key, value, kForever).status();
            break;
        }
        ++calls_made;
        if (!status.ok() &&
            std::string(status.message()).find("fault injected") == std::string::npos) {
          ++unexpected_errors;
        }
      }
    });
  }

  start.arrive_and_wait();
  int wrong_options = 0;
  for (std::size_t i = 0; i < kRounds * settings.size(); ++i) {
    const FaultInjectionOptions& setting = settings[i % settings.size()];
    faulty->SetOptions(setting);
    if (faulty->options().seed != setting.seed) ++wrong_options;
    // Let the threads make some calls under this setting before the next.
    const std::uint64_t calls_before = faulty->Stats().calls;
    while (faulty->Stats().calls < calls_before + kCallsPerSetting) std::this_thread::yield();
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();

  CHECK(unexpected_errors == 0);
  CHECK(wrong_sizes == 0);
  CHECK(wrong_options == 0);
  const FaultInjectionStats stats = faulty->Stats();
  CHECK(stats.calls == calls_made);
  CHECK(stats.read_errors > 0);
  CHECK(stats.write_errors > 0);
  CHECK(stats.flipped_bytes > 0);
  CHECK(stats.lost_items + stats.dropped_writes > 0);
}

TEST_CASE("NewFaultInjectionBackend refuses a null inner backend and takes any options") {
  const absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> none =
      NewFaultInjectionBackend(nullptr);
  CHECK(none.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(none.status().message()), Catch::Contains("inner backend is null"));

  // Rates outside [0, 1] and kOk are usable: never, always, and Unavailable.
  const std::shared_ptr<FaultInjectionBackend> faulty =
      Faulty(NewMemoryBackend(),
             {.read_error_rate = 2, .write_error_rate = -1, .error_code = absl::StatusCode::kOk});
  REQUIRE(Set(*faulty, "k", "v").ok());
  const std::vector<std::string_view> keys = {"k"};
  CHECK(faulty->MultiGet(keys).status().code() == absl::StatusCode::kUnavailable);
}

// The Backend contract, checked by the conformance kit: healed (the default options) it forwards
// every call unchanged; delays alone change nothing either.
TEST_CASE("a fault injection backend without faults keeps the Backend contract",
          "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] { return NewFaultInjectionBackend(NewMemoryBackend()).value_or(nullptr); },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 2});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

TEST_CASE("a fault injection backend that only delays keeps the Backend contract",
          "[conformance][concurrency]") {
  const absl::Status conformance = testing::CheckBackendConformance(
      [] {
        return NewFaultInjectionBackend(NewMemoryBackend(),
                                        {.delay_rate = 0.05, .delay = absl::Microseconds(200)})
            .value_or(nullptr);
      },
      {.short_ttl = absl::Milliseconds(100), .catalogue_megabytes = 1});
  INFO(conformance.ToString());
  CHECK(conformance.ok());
}

}  // namespace
}  // namespace chunkcache
