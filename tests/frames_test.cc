// Entries as independent zstd frames (docs/FORMAT.md, version 3): how payloads are cut, that
// every frame is verified before its bytes are used, parallel encode and decode, and GetStream —
// in order, verified frame by frame, stopped by its sink, honest about failures after output
// began, and holding about one frame at a time.

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "allocation_hooks.h"
#include "cache/entry_writer.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "test_util.h"

namespace chunkcache {
namespace {

using testing::ForwardingBackend;

constexpr std::size_t kFrame = std::size_t{64} << 10;  // the smallest frame_size: many frames

std::string SmallCatalogue(double mb) { return testing::GenerateCatalogue({.megabytes = mb}); }

// The concatenated pieces of a GetStream, and its status.
struct Streamed {
  absl::Status status;
  std::vector<std::string> pieces;
  std::string Joined() const { return absl::StrJoin(pieces, ""); }
};

Streamed Stream(ChunkedCache& cache, std::string_view key,
                std::function<absl::Status(std::size_t)> after_piece = nullptr) {
  Streamed out;
  out.status = cache.GetStream(key, [&](std::string_view piece) {
    out.pieces.emplace_back(piece);
    return after_piece ? after_piece(out.pieces.size()) : absl::OkStatus();
  });
  return out;
}

// Hands items over one key at a time, and calls `on_item` after each item of a multi-key
// MultiGetEach (the chunks of an entry) was handed over.
class SteppingBackend : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      absl::Status s = inner_->MultiGetEach(
          {&keys[i], 1},
          [&](std::size_t, std::optional<ItemView> item) { return sink(i, std::move(item)); });
      if (!s.ok()) return s;
      if (keys.size() > 1 && on_item) on_item(i, keys.size());
    }
    return absl::OkStatus();
  }

  std::function<void(std::size_t index, std::size_t count)> on_item;
};

internal::Manifest StoredManifest(Backend& backend, const CacheOptions& options,
                                  std::string_view key) {
  const internal::StoredKeys keys(options.key_prefix, key);
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend.MultiGet({keys.manifest()});
  REQUIRE(got.ok());
  REQUIRE((*got)[0].has_value());
  absl::StatusOr<internal::DecodedManifest> decoded = internal::DecodeManifest(
      *(*got)[0], keys.manifest(), {options.max_payload_size, backend.max_item_size()});
  REQUIRE(decoded.ok());
  return decoded->manifest;
}

// Flips one byte of the stored payload at `offset` (chunked entries).
void FlipStoredByte(Backend& backend, const CacheOptions& options, std::string_view key,
                    std::uint64_t offset) {
  const internal::Manifest m = StoredManifest(backend, options, key);
  REQUIRE_FALSE(m.is_inline());
  const auto index = static_cast<std::uint32_t>(offset / m.chunk_size);
  const std::string chunk_key =
      internal::StoredKeys(options.key_prefix, key).Chunk(m.generation, index);
  absl::StatusOr<std::vector<std::optional<std::string>>> got = backend.MultiGet({chunk_key});
  REQUIRE(got.ok());
  std::string chunk = *(*got)[0];
  chunk[offset % m.chunk_size] ^= 0x40;
  const KeyValue item{chunk_key, chunk};
  REQUIRE(backend.MultiSet({&item, 1}, absl::Hours(1)).ok());
}

// Where frame `index` starts in the stored payload.
std::uint64_t FrameOffset(const internal::Manifest& m, std::size_t index) {
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < index; ++i) offset += m.frames[i].stored_size;
  return offset;
}

TEST_CASE("frames are about frame_size, evened out, and listed in one item") {
  using internal::PlanFrames;
  const std::size_t two_mib = std::size_t{2} << 20;
  // The reference catalogue's size: 6 even frames, not 5 full ones and a crumb.
  const internal::FramePlan catalogue = PlanFrames(10'506'016, two_mib, 1 << 20);
  CHECK(catalogue.count == 6);
  CHECK(catalogue.frame_size == 1'751'003);
  for (const std::uint64_t raw : {1ULL, 1000ULL, two_mib - 1ULL, two_mib + 0ULL, two_mib + 1ULL,
                                  10'506'016ULL, 64ULL << 20}) {
    for (const std::size_t chunk : {std::size_t{128}, std::size_t{4096}, std::size_t{1} << 20}) {
      CAPTURE(raw, chunk);
      const internal::FramePlan plan = PlanFrames(raw, two_mib, chunk);
      REQUIRE(plan.count >= 1);
      CHECK(plan.frame_size * (plan.count - 1) < raw);  // the last frame holds 1 byte or more
      CHECK(plan.frame_size * plan.count >= raw);
      CHECK(internal::ManifestSize(plan.count) <= chunk);  // the table fits the item
      if (chunk == (1 << 20)) CHECK(plan.frame_size <= two_mib);
    }
  }
}

TEST_CASE("a payload is stored as independent frames that zstd decodes as one stream") {
  auto backend = NewMemoryBackend();
  const CacheOptions options{.chunk_size = 64 << 10, .frame_size = kFrame};
  ChunkedCache cache(backend, options);
  const std::string json = SmallCatalogue(1.2);
  REQUIRE(cache.Put("k", json).ok());

  absl::StatusOr<EntryInfo> info = cache.Inspect("k");
  REQUIRE(info.ok());
  CHECK(info->format_version == 3);
  const internal::FramePlan plan = internal::PlanFrames(json.size(), kFrame, 64 << 10);
  CHECK(info->frame_count == plan.count);
  CHECK(info->frame_size == plan.frame_size);
  CHECK(info->frame_count > 10);
  CHECK(info->checksum_ok);

  absl::StatusOr<CompressedPayload> compressed = cache.GetCompressed("k");
  REQUIRE(compressed.ok());
  CHECK(testing::ZstdCliDecompress(*compressed->zstd) == json);
  // Each frame decodes alone, to its own bytes.
  const internal::Manifest m = StoredManifest(*backend, options, "k");
  internal::Codec codec(3, 0);
  for (std::size_t i = 0; i < m.frames.size(); ++i) {
    const std::string_view frame =
        std::string_view(*compressed->zstd).substr(FrameOffset(m, i), m.frames[i].stored_size);
    absl::StatusOr<std::string> decoded = codec.Decompress({&frame, 1}, m.FrameRawSize(i));
    REQUIRE(decoded.ok());
    CHECK(*decoded == json.substr(i * m.frame_size, m.FrameRawSize(i)));
  }
  CHECK(**cache.Get("k") == json);
}

TEST_CASE("every worker setting stores and reads the same bytes") {
  const std::string json = SmallCatalogue(1.5);
  for (const int compression_workers : {0, 1, 2}) {
    for (const int decode_workers : {0, 1, 2}) {
      CAPTURE(compression_workers, decode_workers);
      auto backend = NewMemoryBackend();
      ChunkedCache cache(backend, {.chunk_size = 32 << 10,
                                   .compression_workers = compression_workers,
                                   .decode_workers = decode_workers,
                                   .frame_size = kFrame});
      REQUIRE(cache.Put("k", json).ok());
      absl::StatusOr<Bytes> got = cache.Get("k");
      REQUIRE(got.ok());
      CHECK(**got == json);
      CHECK(Stream(cache, "k").Joined() == json);
      // Invalid JSON is refused whoever validates it, and nothing is stored.
      CHECK(absl::IsInvalidArgument(cache.Put("bad", json.substr(0, json.size() - 1))));
      CHECK(absl::IsNotFound(cache.Get("bad").status()));
    }
  }
}

TEST_CASE("threads reading and writing with worker pools get whole entries", "[concurrency]") {
  auto backend = NewMemoryBackend();
  ChunkedCache cache(backend, {.chunk_size = 16 << 10,
                               .compression_workers = 2,
                               .decode_workers = 2,
                               .frame_size = kFrame});
  const std::string a = SmallCatalogue(0.5);
  const std::string b = SmallCatalogue(0.4);
  REQUIRE(cache.Put("k", a).ok());
  std::atomic<bool> wrong{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        if (t == 0) {
          if (!cache.Put("k", i % 2 ? a : b).ok()) wrong = true;
          continue;
        }
        absl::StatusOr<Bytes> got = cache.Get("k");
        if (got.ok() && **got != a && **got != b) wrong = true;
        const Streamed streamed = Stream(cache, "k");
        if (streamed.status.ok() && streamed.Joined() != a && streamed.Joined() != b) wrong = true;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK_FALSE(wrong);
  CHECK(cache.Stats().corrupt_reads == 0);
}

TEST_CASE("a frame that fails its checksum is never decoded into a reply") {
  auto backend = NewMemoryBackend();
  const CacheOptions options{.chunk_size = 16 << 10, .frame_size = kFrame};
  const std::string json = SmallCatalogue(0.6);
  for (const int decode_workers : {0, 2}) {
    CAPTURE(decode_workers);
    CacheOptions with_workers = options;
    with_workers.decode_workers = decode_workers;
    ChunkedCache cache(backend, with_workers);
    REQUIRE(cache.Put("k", json).ok());
    const internal::Manifest m = StoredManifest(*backend, options, "k");
    REQUIRE(m.frames.size() >= 3);
    FlipStoredByte(*backend, options, "k", FrameOffset(m, 1) + 10);
    CHECK(absl::IsNotFound(cache.Get("k").status()));
    CHECK(cache.Stats().corrupt_reads == 1);
    CHECK_FALSE(cache.Inspect("k")->checksum_ok);
  }
}

TEST_CASE("GetStream hands the JSON over in order, one verified frame at a time") {
  auto backend = NewMemoryBackend();
  const CacheOptions options{.chunk_size = 16 << 10, .frame_size = kFrame};
  ChunkedCache cache(backend, options);
  const std::string json = SmallCatalogue(0.7);
  REQUIRE(cache.Put("k", json).ok());
  const internal::Manifest m = StoredManifest(*backend, options, "k");

  const Streamed streamed = Stream(cache, "k");
  REQUIRE(streamed.status.ok());
  CHECK(streamed.Joined() == json);
  CHECK(streamed.pieces.size() == m.frames.size());
  CHECK(streamed.pieces.front().size() == m.frame_size);
  CHECK(cache.Stats().hits == 1);
  CHECK(cache.Stats().bytes_returned == json.size());

  SECTION("a miss sends nothing") {
    const Streamed missing = Stream(cache, "absent");
    CHECK(absl::IsNotFound(missing.status));
    CHECK(missing.pieces.empty());
    CHECK(cache.Stats().misses == 1);
  }
  SECTION("an inline entry is one frame") {
    REQUIRE(cache.Put("small", R"({"a":1})").ok());
    const Streamed small = Stream(cache, "small");
    REQUIRE(small.status.ok());
    CHECK(small.pieces == std::vector<std::string>{R"({"a":1})"});
  }
  SECTION("the sink's error stops the read and is returned as it is") {
    const Streamed stopped = Stream(cache, "k", [](std::size_t pieces) {
      return pieces == 2 ? absl::CancelledError("client went away") : absl::OkStatus();
    });
    CHECK(stopped.status == absl::CancelledError("client went away"));
    CHECK(stopped.pieces.size() == 2);
    // Not the backend's failure: nothing counted against it, and the next read is whole.
    CHECK(cache.Stats().backend_errors == 0);
    CHECK(Stream(cache, "k").Joined() == json);
  }
  SECTION("a sink that throws ends the read with Internal") {
    const absl::Status thrown = cache.GetStream(
        "k", [](std::string_view) -> absl::Status { throw std::runtime_error("boom"); });
    CHECK(absl::IsInternal(thrown));
    CHECK(cache.Stats().backend_errors == 0);
    CHECK(**cache.Get("k") == json);
  }
  SECTION("an empty sink is InvalidArgument") {
    CHECK(absl::IsInvalidArgument(cache.GetStream("k", nullptr)));
  }
}

TEST_CASE("GetStream sends a near copy whole: fresh, or once its manifest confirms it") {
  testing::FakeClock clock;
  auto memory = NewMemoryBackend();
  auto counting = std::make_shared<testing::CountingBackend>(memory);
  ChunkedCache cache(counting, {.chunk_size = 16 << 10,
                                .frame_size = kFrame,
                                .l1_capacity_bytes = 16 << 20,
                                .l1_fresh_for = absl::Seconds(1),
                                .clock = clock.AsFunction()});
  const std::string json = SmallCatalogue(0.3);
  REQUIRE(cache.Put("k", json).ok());
  REQUIRE(cache.Get("k").ok());  // the near copy

  const int before = counting->multi_gets;
  const Streamed fresh = Stream(cache, "k");
  REQUIRE(fresh.status.ok());
  CHECK(fresh.pieces == std::vector<std::string>{json});
  CHECK(counting->multi_gets == before);  // no backend call at all

  clock.Advance(absl::Seconds(2));  // older than l1_fresh_for: the manifest confirms it
  const Streamed confirmed = Stream(cache, "k");
  REQUIRE(confirmed.status.ok());
  CHECK(confirmed.pieces == std::vector<std::string>{json});
  CHECK(counting->multi_gets == before + 1);  // the manifest only
  CHECK(cache.Stats().l1_revalidations == 1);

  // Another writer replaced it: the stream sends the new entry, frame by frame.
  ChunkedCache other(memory, {.chunk_size = 16 << 10, .frame_size = kFrame});
  const std::string newer = SmallCatalogue(0.2);
  REQUIRE(other.Put("k", newer).ok());
  clock.Advance(absl::Seconds(2));
  CHECK(Stream(cache, "k").Joined() == newer);
}

TEST_CASE("GetStream reports corruption found after output began as DataLoss") {
  auto backend = NewMemoryBackend();
  const CacheOptions options{.chunk_size = 16 << 10, .frame_size = kFrame};
  ChunkedCache cache(backend, options);
  const std::string json = SmallCatalogue(0.6);
  REQUIRE(cache.Put("k", json).ok());
  const internal::Manifest m = StoredManifest(*backend, options, "k");
  const std::size_t last = m.frames.size() - 1;
  FlipStoredByte(*backend, options, "k", FrameOffset(m, last) + 5);

  const Streamed streamed = Stream(cache, "k");
  CHECK(absl::IsDataLoss(streamed.status));
  // Every frame before the damaged one went out, and each was the entry's own bytes.
  CHECK(streamed.pieces.size() == last);
  CHECK(json.starts_with(streamed.Joined()));
  CHECK(cache.Stats().corrupt_reads == 1);

  // Damage in the first frame: nothing went out, a plain corrupt miss.
  REQUIRE(cache.Put("k", json).ok());
  FlipStoredByte(*backend, options, "k", 7);
  const Streamed first = Stream(cache, "k");
  CHECK(absl::IsNotFound(first.status));
  CHECK(first.pieces.empty());
}

TEST_CASE("GetStream decodes the first frame before the last chunk has arrived") {
  auto memory = NewMemoryBackend();
  auto stepping = std::make_shared<SteppingBackend>(memory);
  const CacheOptions options{.chunk_size = 16 << 10, .frame_size = kFrame};
  ChunkedCache cache(stepping, options);
  const std::string json = SmallCatalogue(0.6);
  REQUIRE(cache.Put("k", json).ok());
  const internal::Manifest m = StoredManifest(*memory, options, "k");
  REQUIRE(m.chunk_count > 4);

  std::vector<std::string> events;
  stepping->on_item = [&](std::size_t index, std::size_t) {
    events.push_back(absl::StrCat("chunk ", index));
  };
  REQUIRE(cache
              .GetStream("k",
                         [&](std::string_view) {
                           events.push_back("piece");
                           return absl::OkStatus();
                         })
              .ok());
  const auto first_piece = std::find(events.begin(), events.end(), "piece");
  const auto last_chunk =
      std::find(events.begin(), events.end(), absl::StrCat("chunk ", m.chunk_count - 1));
  CHECK(first_piece < last_chunk);
}

TEST_CASE("a stream whose entry is replaced after output began ends with NotFound") {
  auto memory = NewMemoryBackend();
  auto stepping = std::make_shared<SteppingBackend>(memory);
  const CacheOptions options{.chunk_size = 16 << 10, .frame_size = kFrame};
  ChunkedCache cache(stepping, options);
  ChunkedCache writer(memory, options);
  const std::string old_json = SmallCatalogue(0.6);
  REQUIRE(cache.Put("k", old_json).ok());
  bool replaced = false;
  stepping->on_item = [&](std::size_t index, std::size_t) {
    if (index == 2 && !replaced) {
      replaced = true;
      REQUIRE(writer.Put("k", R"({"new":true})").ok());  // deletes the old chunks
    }
  };
  const Streamed streamed = Stream(cache, "k");
  CHECK(absl::IsNotFound(streamed.status));
  CHECK_FALSE(streamed.pieces.empty());
  CHECK(old_json.starts_with(streamed.Joined()));
  CHECK(cache.Stats().corrupt_reads == 0);

  // Before any output, the same replacement makes Get start over and return the new entry.
  replaced = false;
  REQUIRE(cache.Put("k", old_json).ok());
  CHECK(**cache.Get("k") == R"({"new":true})");
}

TEST_CASE("a streamed read holds about one frame and one chunk, a Get the whole payload") {
  if (!testing::kHooked) return;  // the sanitizers own the allocator
  auto backend = NewMemoryBackend();
  const CacheOptions options{.frame_size = std::size_t{1} << 20};
  ChunkedCache cache(backend, options);
  const std::string json = SmallCatalogue(8);
  REQUIRE(cache.Put("k", json).ok());
  const internal::Manifest m = StoredManifest(*backend, options, "k");
  REQUIRE(m.chunk_count >= 2);

  std::size_t streamed = 0;
  testing::peak_live_bytes = testing::live_bytes.load();
  const std::int64_t before = testing::live_bytes.load();
  REQUIRE(cache
              .GetStream("k",
                         [&](std::string_view piece) {
                           streamed += piece.size();
                           return absl::OkStatus();
                         })
              .ok());
  const std::int64_t stream_peak = testing::peak_live_bytes.load() - before;
  CHECK(streamed == json.size());
  // One frame's output buffer and the chunks it is read from (memory backend: shared, not
  // copied), plus small change.
  CHECK(stream_peak < static_cast<std::int64_t>(m.frame_size + (256 << 10)));

  testing::peak_live_bytes = testing::live_bytes.load();
  const std::int64_t before_get = testing::live_bytes.load();
  {
    absl::StatusOr<Bytes> got = cache.Get("k");
    REQUIRE(got.ok());
  }
  const std::int64_t get_peak = testing::peak_live_bytes.load() - before_get;
  CHECK(get_peak >= static_cast<std::int64_t>(json.size()));
  // ... and nothing more than the payload: the stored chunks are shared by the memory backend,
  // not copied (copying them would add their 2+ MB).
  CHECK(m.stored_size > (1 << 20));
  CHECK(get_peak < static_cast<std::int64_t>(json.size() + (256 << 10)));
}

// A backend whose MultiGetEach breaks the contract the way `mode` says.
class MisorderingBackend : public ForwardingBackend {
 public:
  enum class Mode { kSkip, kTwice, kReverse };
  MisorderingBackend(std::shared_ptr<Backend> inner, Mode mode)
      : ForwardingBackend(std::move(inner)), mode_(mode) {}
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    absl::StatusOr<std::vector<std::optional<std::string>>> values = inner_->MultiGet(keys);
    if (!values.ok()) return values.status();
    const auto hand = [&](std::size_t i) {
      std::optional<ItemView> item;
      if ((*values)[i].has_value()) {
        auto owner = std::make_shared<std::string>(*(*values)[i]);
        item = ItemView{*owner, owner};
      }
      return sink(i, std::move(item));
    };
    if (keys.size() == 1) return hand(0);  // manifests are handed over right
    for (std::size_t n = 0; n < keys.size(); ++n) {
      std::size_t i = n;
      if (mode_ == Mode::kReverse) i = keys.size() - 1 - n;
      if (mode_ == Mode::kSkip && n == 1) continue;
      if (absl::Status s = hand(i); !s.ok()) return s;
      if (mode_ == Mode::kTwice && n == 0) {
        if (absl::Status s = hand(0); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  Mode mode_;
};

TEST_CASE("a backend that hands items over out of order gets an error, never wrong bytes") {
  const std::string json = SmallCatalogue(0.3);
  for (const auto mode : {MisorderingBackend::Mode::kSkip, MisorderingBackend::Mode::kTwice,
                          MisorderingBackend::Mode::kReverse}) {
    CAPTURE(static_cast<int>(mode));
    auto memory = NewMemoryBackend();
    ChunkedCache cache(std::make_shared<MisorderingBackend>(memory, mode),
                       {.chunk_size = 16 << 10, .frame_size = kFrame});
    REQUIRE(cache.Put("k", json).ok());
    const absl::Status got = cache.Get("k").status();
    CHECK(absl::IsInternal(got));
    CHECK(cache.Stats().backend_errors == 1);
    const Streamed streamed = Stream(cache, "k");
    CHECK_FALSE(streamed.status.ok());
    CHECK(json.starts_with(streamed.Joined()));
  }
}

TEST_CASE("frame_size and worker counts are checked") {
  auto backend = NewMemoryBackend();
  CHECK(absl::IsInvalidArgument(ValidateCacheOptions({.frame_size = (64 << 10) - 1})));
  CHECK(absl::IsInvalidArgument(ValidateCacheOptions({.frame_size = (std::size_t{1} << 30) + 1})));
  CHECK(absl::IsInvalidArgument(ValidateCacheOptions({.decode_workers = -1})));
  CHECK(absl::IsInvalidArgument(ValidateCacheOptions({.decode_workers = 65})));
  CHECK(absl::IsInvalidArgument(ValidateCacheOptions({.compression_workers = 65})));
  CHECK(ValidateCacheOptions({.compression_workers = 64, .decode_workers = 64}).ok());
  const absl::Status message = ValidateCacheOptions({.frame_size = 1000});
  CHECK(absl::StrContains(message.message(), "frame_size 1000"));
  // An empty payload has no frame: refused, whatever validate_json says.
  ChunkedCache cache(backend, {.validate_json = false});
  CHECK(absl::IsInvalidArgument(cache.Put("k", "")));
}

}  // namespace
}  // namespace chunkcache
