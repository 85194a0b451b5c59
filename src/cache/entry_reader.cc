#include "cache/entry_reader.h"

#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "internal/mutex.h"

namespace chunkcache::internal {
namespace {

// Bytes of chunk keys that Inspect lists (a few thousand chunks of the longest keys, tens of
// thousands of usual ones); an entry with more chunks reports their count only.
constexpr std::size_t kMaxListedChunkKeyBytes = std::size_t{4} << 20;

// Bytes of chunk keys one read asks the backend for at a time (docs/FORMAT.md).
constexpr std::size_t kMaxChunkKeyBytesPerCall = std::size_t{256} << 10;

// Bytes of a logical key that a log message quotes; a longer key is cut short.
constexpr std::size_t kMaxLoggedKeyBytes = 100;

// `key` for a log message, C-escaped in double quotes: "k\001ey". A key longer than
// kMaxLoggedKeyBytes is cut short and says its size: "aaa"... (600 bytes).
std::string QuotedKey(std::string_view key) {
  const std::string_view shown = key.substr(0, kMaxLoggedKeyBytes);
  // Debian's absl::string_view is not std::string_view.
  std::string quoted =
      absl::StrCat("\"", absl::CEscape(absl::string_view(shown.data(), shown.size())), "\"");
  if (shown.size() < key.size()) absl::StrAppend(&quoted, "... (", key.size(), " bytes)");
  return quoted;
}

// True if the concatenated `parts` begin with a zstd frame's magic number.
bool StartsZstdFrame(absl::Span<const std::string_view> parts) {
  std::string start;
  for (std::size_t i = 0; i < parts.size() && start.size() < 4; ++i) {
    start.append(parts[i].substr(0, 4 - start.size()));
  }
  return CheckZstdFrameStart(start).ok();
}

// Fills `batch` with the keys of chunks `next`, `next + 1`, ... until they add up to
// kMaxChunkKeyBytesPerCall or the chunks end; returns the index after the last one.
std::uint32_t ChunkKeyBatch(const StoredKeys& keys, const Manifest& manifest, std::uint32_t next,
                            std::vector<std::string>& batch) {
  batch.clear();
  for (std::size_t key_bytes = 0;
       next < manifest.chunk_count && key_bytes < kMaxChunkKeyBytesPerCall; ++next) {
    batch.push_back(keys.Chunk(manifest.generation, next));
    key_bytes += batch.back().size();
  }
  return next;
}

// Cuts a payload arriving in pieces (its chunks, in order) into its frames, verifies each frame
// against its checksum once its bytes are all there, and hands it over.
class FrameSplitter {
 public:
  explicit FrameSplitter(const Manifest& manifest) : frames_(manifest.frames) {}

  // Takes the next `bytes` of the payload (kept valid by `owner`); calls
  // `on_frame(index, FrameBytes)` for each frame they complete and returns its first error. A
  // frame that fails its checksum is DataLoss, with `corrupt` set.
  template <typename OnFrame>
  absl::Status Add(std::string_view bytes, const std::shared_ptr<const void>& owner, bool& corrupt,
                   OnFrame&& on_frame) {
    while (!bytes.empty()) {
      if (next_ >= frames_.size()) {
        corrupt = true;
        return absl::DataLossError("chunkcache: bytes after the frames");
      }
      const Frame& frame = frames_[next_];
      const std::string_view part = bytes.substr(0, frame.stored_size - have_);
      bytes.remove_prefix(part.size());
      current_.parts.push_back(part);
      current_.owners.push_back(owner);
      have_ += part.size();
      if (have_ < frame.stored_size) continue;
      if (Checksum(current_.parts) != frame.checksum) {
        corrupt = true;
        return absl::DataLossError(absl::StrFormat(
            "chunkcache: frame %d of %d does not match its checksum", next_, frames_.size()));
      }
      if (absl::Status s = on_frame(next_, std::exchange(current_, {})); !s.ok()) return s;
      have_ = 0;
      ++next_;
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<Frame>& frames_;
  std::size_t next_ = 0;    // the frame being gathered
  std::uint64_t have_ = 0;  // its bytes so far
  FrameBytes current_;
};

// Decodes frames into one buffer of the payload's raw size: on the calling thread as they
// arrive, or on it and up to `helpers` pool threads.
class DecodingConsumer final : public FrameConsumer {
 public:
  DecodingConsumer(Codec& codec, WorkerPool* pool, int helpers)
      : codec_(codec), pool_(pool), helpers_(helpers) {}
  ~DecodingConsumer() override { Drop(); }

  absl::Status Begin(const Manifest& manifest) override {
    Drop();
    manifest_ = &manifest;
    // The size was bounded by max_payload_size when the manifest was decoded.
    out_ = std::make_shared<std::string>(manifest.raw_size, '\0');
    offsets_.assign(1, 0);
    for (std::size_t i = 0; i + 1 < manifest.frames.size(); ++i) {
      offsets_.push_back(offsets_.back() + manifest.FrameRawSize(i));
    }
    group_.emplace(pool_, helpers_);
    return absl::OkStatus();
  }

  absl::Status Frame(std::size_t index, FrameBytes bytes, bool& corrupt) override {
    group_->Add([this, index, bytes = std::move(bytes)] {
      if (failed_.load(std::memory_order_relaxed)) return;
      absl::Status s = codec_.DecodeFrame(
          bytes.parts, {out_->data() + offsets_[index], manifest_->FrameRawSize(index)});
      if (!s.ok()) Fail(std::move(s));
    });
    if (!failed_.load(std::memory_order_relaxed)) return absl::OkStatus();
    corrupt = true;
    return FirstError();
  }

  bool Restart() override {
    Drop();
    return true;
  }

  absl::Status Finish(bool& corrupt) override {
    group_->Wait();
    if (!failed_.load()) return absl::OkStatus();
    corrupt = true;
    return FirstError();
  }

  std::shared_ptr<std::string> TakeOutput() { return std::move(out_); }

 private:
  // Waits for the frames under way; forgets the output and any error.
  void Drop() {
    failed_.store(true);  // frames not yet decoded are skipped
    group_.reset();       // waits for those under way
    out_.reset();
    failed_.store(false);
    MutexLock lock(&mu_);
    first_error_ = absl::OkStatus();
  }

  void Fail(absl::Status s) {
    MutexLock lock(&mu_);
    if (first_error_.ok()) first_error_ = std::move(s);
    failed_.store(true);
  }

  absl::Status FirstError() {
    MutexLock lock(&mu_);
    return first_error_;
  }

  Codec& codec_;
  WorkerPool* const pool_;
  const int helpers_;
  const Manifest* manifest_ = nullptr;
  std::shared_ptr<std::string> out_;
  std::vector<std::size_t> offsets_;  // of each frame's raw bytes in out_
  std::atomic<bool> failed_{false};
  Mutex mu_;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
  std::optional<TaskGroup> group_;  // last: destroyed (waited for) first
};

// Gathers the frames, undecoded, into one buffer: the stored zstd stream.
class GatheringConsumer final : public FrameConsumer {
 public:
  absl::Status Begin(const Manifest& manifest) override {
    zstd_ = std::make_shared<std::string>();
    zstd_->reserve(manifest.stored_size);
    return absl::OkStatus();
  }
  absl::Status Frame(std::size_t /*index*/, FrameBytes bytes, bool& corrupt) override {
    const std::size_t start = zstd_->size();
    for (std::string_view part : bytes.parts) zstd_->append(part);
    // Not decoded here, so at least each frame must start like one (not, say, a skippable one).
    absl::Status s = CheckZstdFrameStart(std::string_view(*zstd_).substr(start));
    corrupt = !s.ok();
    return s;
  }
  bool Restart() override { return true; }

  std::shared_ptr<std::string> TakeOutput() { return std::move(zstd_); }

 private:
  std::shared_ptr<std::string> zstd_;
};

// Decodes each frame into one buffer, reused, and hands its bytes to a sink, in order.
class StreamingConsumer final : public FrameConsumer {
 public:
  StreamingConsumer(Codec& codec, const PieceSink& sink) : codec_(codec), sink_(sink) {}

  absl::Status Begin(const Manifest& manifest) override {
    // Frame 0 is the largest. Not frame_size: a one-frame entry may claim any frame size.
    const std::size_t largest = manifest.FrameRawSize(0);
    if (capacity_ < largest) {
      buffer_.reset(new char[largest]);
      capacity_ = largest;
    }
    manifest_ = &manifest;
    return absl::OkStatus();
  }

  absl::Status Frame(std::size_t index, FrameBytes bytes, bool& corrupt) override {
    const std::size_t size = manifest_->FrameRawSize(index);
    if (absl::Status s = codec_.DecodeFrame(bytes.parts, {buffer_.get(), size}); !s.ok()) {
      corrupt = true;
      return s;
    }
    bytes.owners.clear();  // the chunks go before the sink runs
    began_ = true;
    return sink_(std::string_view(buffer_.get(), size));
  }

  bool Restart() override { return !began_; }

  bool began() const { return began_; }

 private:
  Codec& codec_;
  const PieceSink& sink_;
  const Manifest* manifest_ = nullptr;
  std::unique_ptr<char[]> buffer_;  // one frame's raw bytes
  std::size_t capacity_ = 0;
  bool began_ = false;
};

}  // namespace

EntryReader::EntryReader(const CacheOptions& options, GuardedBackend& backend, Codec& codec,
                         CacheCounters& counters, RateLimitedLog& log, WorkerPool* pool)
    : options_(options),
      backend_(backend),
      codec_(codec),
      counters_(counters),
      log_(log),
      pool_(pool) {}

absl::StatusOr<Found> EntryReader::Read(const StoredKeys& keys, const NearCache::Entry* known) {
  DecodingConsumer decoder(codec_, pool_, options_.decode_workers);
  Manifest manifest;
  absl::StatusOr<bool> read = ReadFrames(keys, known, decoder, manifest);
  if (!read.ok()) return read.status();
  if (*read) return Found{known->bytes, known->generation, known->created, true, known->checksum};
  return Found{decoder.TakeOutput(), manifest.generation,
               absl::FromUnixMillis(manifest.created_unix_ms), false, manifest.checksum};
}

StreamOutcome EntryReader::Stream(const StoredKeys& keys, const NearCache::Entry* known,
                                  const PieceSink& sink) {
  StreamingConsumer streamer(codec_, sink);
  StreamOutcome outcome;
  bool corrupt = false;
  absl::StatusOr<bool> read = ReadFrames(keys, known, streamer, outcome.manifest, &corrupt);
  outcome.began = streamer.began();
  if (!read.ok()) {
    outcome.status = read.status();
    if (corrupt && outcome.began) {
      outcome.status = absl::DataLossError(
          absl::StrCat("chunkcache: the entry was found corrupt after part of it was streamed: ",
                       read.status().message()));
    }
    return outcome;
  }
  outcome.known = *read;
  return outcome;
}

absl::StatusOr<bool> EntryReader::ReadFrames(const StoredKeys& keys, const NearCache::Entry* known,
                                             FrameConsumer& consumer, Manifest& manifest,
                                             bool* found_corrupt) {
  bool corrupt = false;
  const auto corrupt_miss = [&](const absl::Status& why) {
    if (found_corrupt != nullptr) *found_corrupt = true;
    return CorruptMiss(keys, why);
  };
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    absl::StatusOr<std::optional<ItemView>> item = GetItem(keys.manifest());
    if (!item.ok()) return item.status();
    if (!item->has_value()) return absl::NotFoundError("chunkcache: no such key");
    absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, (*item)->value);
    if (!decoded.ok()) return corrupt_miss(decoded.status());
    manifest = std::move(decoded->manifest);
    if (known != nullptr && known->generation == manifest.generation &&
        known->checksum == manifest.checksum) {
      return true;
    }
    if (absl::Status s = consumer.Begin(manifest); !s.ok()) return s;
    absl::StatusOr<Chunks> chunks = Chunks::kComplete;
    if (manifest.is_inline()) {
      FrameSplitter splitter(manifest);
      absl::Status s = splitter.Add(decoded->inline_payload, (*item)->owner, corrupt,
                                    [&](std::size_t index, FrameBytes bytes) {
                                      return consumer.Frame(index, std::move(bytes), corrupt);
                                    });
      if (!s.ok()) return corrupt ? corrupt_miss(s) : s;
    } else {
      chunks = StreamChunks(keys, manifest, consumer, corrupt);
    }
    if (!chunks.ok()) return corrupt ? corrupt_miss(chunks.status()) : chunks.status();
    if (*chunks == Chunks::kReplaced) {
      Add(counters_.torn_retries);
      if (consumer.Restart()) continue;
      return absl::NotFoundError(
          "chunkcache: the entry was replaced while it was streamed; the output is incomplete");
    }
    if (absl::Status s = consumer.Finish(corrupt); !s.ok()) return corrupt ? corrupt_miss(s) : s;
    return false;
  }
  return absl::NotFoundError(
      "chunkcache: the entry kept changing while it was read; treated as a miss");
}

// In batches whose keys add up to about kMaxChunkKeyBytesPerCall, each checked before the next is
// asked for: whatever a manifest claims, a read holds at most one batch of keys, and of chunks
// only those holding a frame not yet handed over. kReplaced if a chunk is missing because a
// writer replaced the entry meanwhile (start over); a corrupt miss if it is missing otherwise,
// has the wrong size, or a frame fails its checks.
absl::StatusOr<EntryReader::Chunks> EntryReader::StreamChunks(const StoredKeys& keys,
                                                              const Manifest& manifest,
                                                              FrameConsumer& consumer,
                                                              bool& corrupt) {
  FrameSplitter splitter(manifest);
  std::vector<std::string> batch;
  std::uint32_t first = 0;
  bool replaced = false;
  const auto take = [&](std::size_t i, std::optional<ItemView> chunk) -> absl::Status {
    const auto index = static_cast<std::uint32_t>(first + i);
    Add(counters_.chunks_read);
    if (!chunk.has_value()) {
      if (ManifestChanged(keys, manifest)) {
        replaced = true;
        return absl::AbortedError("chunkcache: replaced");
      }
      corrupt = true;
      return absl::DataLossError(
          absl::StrFormat("chunkcache: chunk %d of %d is missing", index, manifest.chunk_count));
    }
    if (chunk->value.size() != manifest.ChunkSize(index)) {
      corrupt = true;
      return absl::DataLossError(
          absl::StrFormat("chunkcache: chunk %d is %d bytes, the manifest says %d", index,
                          chunk->value.size(), manifest.ChunkSize(index)));
    }
    return splitter.Add(chunk->value, chunk->owner, corrupt,
                        [&](std::size_t frame, FrameBytes bytes) {
                          return consumer.Frame(frame, std::move(bytes), corrupt);
                        });
  };
  while (first < manifest.chunk_count) {
    const std::uint32_t next = ChunkKeyBatch(keys, manifest, first, batch);
    const std::vector<std::string_view> views(batch.begin(), batch.end());
    absl::Status s = backend_.MultiGetEach(views, take);
    if (replaced) return Chunks::kReplaced;
    if (!s.ok()) return s;
    first = next;
  }
  return Chunks::kComplete;
}

absl::StatusOr<std::optional<ItemView>> EntryReader::GetItem(std::string_view key) {
  std::optional<ItemView> item;
  absl::Status s = backend_.MultiGetEach({&key, 1}, [&](std::size_t, std::optional<ItemView> got) {
    item = std::move(got);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return item;
}

absl::StatusOr<CompressedPayload> EntryReader::ReadCompressed(const StoredKeys& keys) {
  GatheringConsumer gatherer;
  Manifest manifest;
  absl::StatusOr<bool> read = ReadFrames(keys, nullptr, gatherer, manifest);
  if (!read.ok()) {
    if (absl::IsNotFound(read.status())) Add(counters_.misses);
    return read.status();
  }
  Add(counters_.compressed_gets);
  return CompressedPayload{gatherer.TakeOutput(), manifest.raw_size};
}

absl::StatusOr<EntryInfo> EntryReader::Inspect(const StoredKeys& keys) {
  absl::StatusOr<std::optional<std::string>> manifest_bytes = backend_.Get(keys.manifest());
  if (!manifest_bytes.ok()) return manifest_bytes.status();
  if (!manifest_bytes->has_value()) return absl::NotFoundError("chunkcache: no such key");
  absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, **manifest_bytes);
  if (!decoded.ok()) return decoded.status();
  const Manifest& manifest = decoded->manifest;
  EntryInfo info;
  info.manifest_key = keys.manifest();
  info.manifest_size = (*manifest_bytes)->size();
  info.format_version = decoded->version;
  info.generation = manifest.generation;
  info.raw_size = manifest.raw_size;
  info.stored_size = manifest.stored_size;
  info.chunk_size = manifest.chunk_size;
  info.checksum = manifest.checksum;
  info.created = absl::FromUnixMillis(manifest.created_unix_ms);
  info.is_inline = manifest.is_inline();
  info.chunk_count = manifest.chunk_count;
  info.frame_size = manifest.frame_size;
  info.frame_count = manifest.frames.size();
  std::vector<std::string_view> parts;
  std::vector<std::string> kept;  // chunks of the expected size: at most stored_size bytes
  if (info.is_inline) {
    parts.push_back(decoded->inline_payload);
    info.complete = true;
  } else {
    // In batches, as a read: whatever the manifest claims, this holds one batch of keys, the
    // chunks that can be part of the entry, and kMaxListedChunkKeyBytes of descriptions.
    info.complete = true;
    std::size_t listed_key_bytes = 0;
    std::vector<std::string> batch;
    for (std::uint32_t next = 0; next < manifest.chunk_count;) {
      const std::uint32_t first = next;
      next = ChunkKeyBatch(keys, manifest, next, batch);
      const std::vector<std::string_view> views(batch.begin(), batch.end());
      absl::StatusOr<Values> fetched = backend_.MultiGet(views);
      if (!fetched.ok()) return fetched.status();
      for (std::uint32_t i = first; i < next; ++i) {
        std::optional<std::string>& chunk = (*fetched)[i - first];
        const bool whole = chunk.has_value() && chunk->size() == manifest.ChunkSize(i);
        info.complete = info.complete && whole;
        if (listed_key_bytes + batch[i - first].size() <= kMaxListedChunkKeyBytes &&
            info.chunks.size() == i) {
          listed_key_bytes += batch[i - first].size();
          info.chunks.push_back({std::move(batch[i - first]), manifest.ChunkSize(i),
                                 chunk.has_value() ? std::optional(chunk->size()) : std::nullopt});
        }
        if (whole && info.complete) kept.push_back(*std::move(chunk));
      }
    }
    parts.assign(kept.begin(), kept.end());
  }
  // What a read checks before decoding: every frame's checksum, and that each starts a zstd frame.
  info.checksum_ok = info.complete;
  FrameSplitter splitter(manifest);
  for (std::size_t i = 0; i < parts.size() && info.checksum_ok; ++i) {
    bool corrupt = false;
    info.checksum_ok = splitter
                           .Add(parts[i], nullptr, corrupt,
                                [](std::size_t, const FrameBytes& frame) {
                                  return StartsZstdFrame(frame.parts)
                                             ? absl::OkStatus()
                                             : absl::DataLossError("not a zstd frame");
                                })
                           .ok();
  }
  return info;
}

absl::StatusOr<std::optional<Manifest>> EntryReader::ReadManifest(const StoredKeys& keys) {
  absl::StatusOr<std::optional<std::string>> bytes = backend_.Get(keys.manifest());
  if (!bytes.ok()) return bytes.status();
  if (!bytes->has_value()) return std::nullopt;
  absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, **bytes);
  if (!decoded.ok()) return std::nullopt;
  return decoded->manifest;
}

std::optional<Manifest> EntryReader::ReadManifestQuietly(const StoredKeys& keys) {
  absl::StatusOr<std::optional<Manifest>> manifest = ReadManifest(keys);
  if (!manifest.ok()) return std::nullopt;
  return *std::move(manifest);
}

// True unless the manifest still names the generation and checksum of `manifest` (an absent or
// unreadable manifest counts as changed: the entry was replaced or removed meanwhile).
bool EntryReader::ManifestChanged(const StoredKeys& keys, const Manifest& manifest) {
  std::optional<Manifest> now = ReadManifestQuietly(keys);
  return !now.has_value() || now->generation != manifest.generation ||
         now->checksum != manifest.checksum;
}

// A manifest read from `keys.manifest()`, checked against this reader's limits: no entry is
// larger than max_payload_size, no chunk (or inline manifest) larger than what the backend could
// have stored; refused if it was written under another key.
absl::StatusOr<DecodedManifest> EntryReader::DecodeStoredManifest(const StoredKeys& keys,
                                                                  std::string_view bytes) const {
  return DecodeManifest(
      bytes, keys.manifest(),
      {.max_payload_size = options_.max_payload_size, .max_chunk_size = backend_.max_item_size()});
}

absl::Status EntryReader::CorruptMiss(const StoredKeys& keys, const absl::Status& why) {
  Add(counters_.corrupt_reads);
  log_.Warn(RateLimitedLog::kCorrupt, [&] {
    return absl::StrCat("chunkcache: a corrupt entry was read as a miss, key ",
                        QuotedKey(keys.key()), ": ", why.message());
  });
  return absl::NotFoundError(absl::StrCat(why.message(), "; entry treated as a miss"));
}

}  // namespace chunkcache::internal
