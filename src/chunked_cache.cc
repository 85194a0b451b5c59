#include "chunkcache/chunked_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec.h"
#include "keys.h"
#include "latency_histogram.h"
#include "manifest.h"
#include "single_flight.h"

namespace chunkcache {
namespace {

using internal::CompressedBuffer;
using internal::DecodedManifest;
using internal::Manifest;
using internal::StoredKeys;

// How often a read starts over because a writer replaced the entry under it.
constexpr int kMaxReadAttempts = 4;

// With compression_workers > 0, payloads from this size on are validated on a thread of their
// own while they are compressed; below it a thread costs more than it saves.
constexpr std::size_t kOverlapValidationFrom = std::size_t{1} << 20;

using Values = std::vector<std::optional<std::string>>;

// Counters behind CacheStats; relaxed atomics, read one by one.
struct Counters {
  std::atomic<std::uint64_t> gets{0}, hits{0}, misses{0}, puts{0}, put_errors{0}, invalidates{0};
  std::atomic<std::uint64_t> loads{0}, load_errors{0}, coalesced{0}, wait_timeouts{0};
  std::atomic<std::uint64_t> fallbacks{0}, corrupt_reads{0}, torn_retries{0};
  std::atomic<std::uint64_t> backend_calls{0}, backend_errors{0}, chunks_read{0}, chunks_written{0};
  std::atomic<std::uint64_t> bytes_put_raw{0}, bytes_written{0}, bytes_read{0}, bytes_returned{0};
};

void Add(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

std::uint64_t CounterValue(const std::atomic<std::uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

// Measures the time from construction to destruction into a histogram.
class ScopedTimer {
 public:
  explicit ScopedTimer(internal::LatencyHistogram* histogram)
      : histogram_(histogram), start_(absl::Now()) {}
  ~ScopedTimer() { histogram_->Record(absl::Now() - start_); }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  internal::LatencyHistogram* const histogram_;
  const absl::Time start_;
};

// Generation ids: random per cache instance (so processes do not collide), then a counter
// scrambled by splitmix64 (so one process never repeats itself).
class GenerationSource {
 public:
  GenerationSource() {
    std::random_device device;
    base_ = (std::uint64_t{device()} << 32) ^ device();
  }
  std::uint64_t Next() {
    std::uint64_t z = base_ + 0x9e3779b97f4a7c15ULL * counter_.fetch_add(1) + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t base_;
  std::atomic<std::uint64_t> counter_{0};
};

absl::Status CheckOptions(const Backend* backend, const CacheOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("chunkcache: the backend is null");
  if (options.chunk_size < kMinChunkSize || backend->max_item_size() < kMinChunkSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: chunk_size %d and the backend's max_item_size %d must both be at least %d",
        options.chunk_size, backend->max_item_size(), kMinChunkSize));
  }
  if (options.ttl <= absl::ZeroDuration() || options.chunk_ttl_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "chunkcache: ttl must be positive and chunk_ttl_grace not negative");
  }
  if (options.max_payload_size == 0) {
    return absl::InvalidArgumentError("chunkcache: max_payload_size must be positive");
  }
  if (options.load_wait_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("chunkcache: load_wait_timeout must be positive");
  }
  return internal::CheckCompressionSettings(options.compression_level, options.compression_workers);
}

bool IsMiss(const absl::Status& status) { return absl::IsNotFound(status); }

bool IsUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

}  // namespace

class ChunkedCache::Impl {
 public:
  Impl(std::shared_ptr<Backend> backend, CacheOptions options)
      : backend_(std::move(backend)),
        options_(std::move(options)),
        options_status_(CheckOptions(backend_.get(), options_)),
        chunk_size_(options_status_.ok()
                        ? std::min({options_.chunk_size, backend_->max_item_size(),
                                    std::size_t{std::numeric_limits<std::uint32_t>::max()}})
                        : 0),
        codec_(options_.compression_level, options_.compression_workers) {}

  absl::StatusOr<Bytes> Get(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    return TimedRead(StoredKeys(options_.key_prefix, key));
  }

  absl::StatusOr<Bytes> GetOrLoad(std::string_view key, const Loader& loader) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    if (!loader) return absl::InvalidArgumentError("chunkcache: the loader is empty");
    const absl::Time deadline = absl::Now() + options_.load_wait_timeout;
    internal::SingleFlight::Outcome outcome =
        flights_.Do(key, deadline, [&] { return ReadOrLoad(key, loader); });
    if (outcome.role == internal::SingleFlight::Role::kWaiter) Add(counters_.coalesced);
    if (outcome.role == internal::SingleFlight::Role::kTimedOut) Add(counters_.wait_timeouts);
    return std::move(outcome.result);
  }

  absl::Status Put(std::string_view key, std::string_view json) {
    Add(counters_.puts);
    absl::Status status = CheckCall(key);
    if (status.ok()) {
      ScopedTimer timer(&put_latency_);
      status = EncodeAndStore(StoredKeys(options_.key_prefix, key), json);
    }
    if (!status.ok()) Add(counters_.put_errors);
    return status;
  }

  absl::Status Invalidate(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    Add(counters_.invalidates);
    const StoredKeys keys(options_.key_prefix, key);
    // Learn the chunk keys before the manifest goes; a failed read only costs the cleanup.
    std::optional<Manifest> current = ReadManifestQuietly(keys);
    const std::string_view manifest_key = keys.manifest();
    if (absl::Status s = BackendDelete({&manifest_key, 1}); !s.ok()) return s;
    if (current.has_value()) DeleteChunks(keys, *current);
    return absl::OkStatus();
  }

  CacheStats Stats() const {
    const Counters& c = counters_;
    CacheStats s;
    s.gets = CounterValue(c.gets);
    s.hits = CounterValue(c.hits);
    s.misses = CounterValue(c.misses);
    s.puts = CounterValue(c.puts);
    s.put_errors = CounterValue(c.put_errors);
    s.invalidates = CounterValue(c.invalidates);
    s.loads = CounterValue(c.loads);
    s.load_errors = CounterValue(c.load_errors);
    s.coalesced = CounterValue(c.coalesced);
    s.wait_timeouts = CounterValue(c.wait_timeouts);
    s.fallbacks = CounterValue(c.fallbacks);
    s.corrupt_reads = CounterValue(c.corrupt_reads);
    s.torn_retries = CounterValue(c.torn_retries);
    s.backend_calls = CounterValue(c.backend_calls);
    s.backend_errors = CounterValue(c.backend_errors);
    s.chunks_read = CounterValue(c.chunks_read);
    s.chunks_written = CounterValue(c.chunks_written);
    s.bytes_put_raw = CounterValue(c.bytes_put_raw);
    s.bytes_written = CounterValue(c.bytes_written);
    s.bytes_read = CounterValue(c.bytes_read);
    s.bytes_returned = CounterValue(c.bytes_returned);
    s.get_latency = get_latency_.Summary();
    s.put_latency = put_latency_.Summary();
    s.load_latency = load_latency_.Summary();
    return s;
  }

  const CacheOptions& options() const { return options_; }

 private:
  absl::Status CheckCall(std::string_view key) const {
    if (!options_status_.ok()) return options_status_;
    return internal::ValidateKey(key);
  }

  // ---- Reading -------------------------------------------------------------------------------

  absl::StatusOr<Bytes> TimedRead(const StoredKeys& keys) {
    Add(counters_.gets);
    ScopedTimer timer(&get_latency_);
    absl::StatusOr<Bytes> result = ReadEntry(keys);
    if (result.ok()) {
      Add(counters_.hits);
      Add(counters_.bytes_returned, (*result)->size());
    } else if (IsMiss(result.status())) {
      Add(counters_.misses);
    }
    return result;
  }

  // NotFound on a miss or a corrupt entry (counted); the backend's error if it failed.
  absl::StatusOr<Bytes> ReadEntry(const StoredKeys& keys) {
    for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
      absl::StatusOr<std::optional<std::string>> manifest_bytes = GetOne(keys.manifest());
      if (!manifest_bytes.ok()) return manifest_bytes.status();
      if (!manifest_bytes->has_value()) return absl::NotFoundError("chunkcache: no such key");

      absl::StatusOr<DecodedManifest> decoded =
          internal::DecodeManifest(**manifest_bytes, options_.max_payload_size);
      if (!decoded.ok()) return CorruptMiss(decoded.status());
      const Manifest& manifest = decoded->manifest;
      if (manifest.is_inline()) return Decode(manifest, {&decoded->inline_payload, 1});

      const std::vector<std::string> chunk_keys =
          keys.Chunks(manifest.generation, manifest.chunk_count);
      const std::vector<std::string_view> chunk_key_views(chunk_keys.begin(), chunk_keys.end());
      absl::StatusOr<Values> chunks = BackendGet(chunk_key_views);
      if (!chunks.ok()) return chunks.status();
      Add(counters_.chunks_read, chunks->size());

      std::vector<std::string_view> parts;
      parts.reserve(chunks->size());
      for (std::uint32_t i = 0; i < chunks->size(); ++i) {
        const std::optional<std::string>& chunk = (*chunks)[i];
        if (!chunk.has_value()) break;
        if (chunk->size() != manifest.ChunkSize(i)) {
          return CorruptMiss(absl::DataLossError(
              absl::StrFormat("chunkcache: chunk %d is %d bytes, the manifest says %d", i,
                              chunk->size(), manifest.ChunkSize(i))));
        }
        parts.push_back(*chunk);
      }
      if (parts.size() == chunks->size()) return Decode(manifest, parts);

      // A chunk is missing: a writer may have replaced this generation since the manifest was
      // read (start over), or the entry lost a chunk (corrupt).
      if (!ManifestChanged(keys, manifest.generation)) {
        return CorruptMiss(absl::DataLossError(absl::StrFormat(
            "chunkcache: chunk %d of %d is missing", parts.size(), manifest.chunk_count)));
      }
      Add(counters_.torn_retries);
    }
    return absl::NotFoundError(
        "chunkcache: the entry kept changing while it was read; treated as a miss");
  }

  absl::StatusOr<Bytes> Decode(const Manifest& manifest, absl::Span<const std::string_view> parts) {
    if (internal::Checksum(parts) != manifest.checksum) {
      return CorruptMiss(absl::DataLossError("chunkcache: checksum mismatch"));
    }
    absl::StatusOr<std::string> raw = codec_.Decompress(parts, manifest.raw_size);
    if (!raw.ok()) return CorruptMiss(raw.status());
    return std::make_shared<const std::string>(*std::move(raw));
  }

  absl::Status CorruptMiss(const absl::Status& why) {
    Add(counters_.corrupt_reads);
    return absl::NotFoundError(absl::StrCat(why.message(), "; entry treated as a miss"));
  }

  // True unless the manifest still names `generation` (an unreadable manifest counts as changed).
  bool ManifestChanged(const StoredKeys& keys, std::uint64_t generation) {
    std::optional<Manifest> now = ReadManifestQuietly(keys);
    return !now.has_value() || now->generation != generation;
  }

  // The current manifest, or nothing if it is absent, unreadable or the backend failed.
  std::optional<Manifest> ReadManifestQuietly(const StoredKeys& keys) {
    absl::StatusOr<std::optional<std::string>> bytes = GetOne(keys.manifest());
    if (!bytes.ok() || !bytes->has_value()) return std::nullopt;
    absl::StatusOr<DecodedManifest> decoded =
        internal::DecodeManifest(**bytes, options_.max_payload_size);
    if (!decoded.ok()) return std::nullopt;
    return decoded->manifest;
  }

  // ---- Loading -------------------------------------------------------------------------------

  absl::StatusOr<Bytes> ReadOrLoad(std::string_view key, const Loader& loader) {
    const StoredKeys keys(options_.key_prefix, key);
    absl::StatusOr<Bytes> cached = TimedRead(keys);
    if (cached.ok()) return cached;
    const bool backend_down = !IsMiss(cached.status());
    if (backend_down) Add(counters_.fallbacks);  // serve through the origin

    absl::StatusOr<std::string> loaded = CallLoader(loader);
    if (!loaded.ok()) return loaded.status();
    if (backend_down && IsUnreachable(cached.status())) {
      // Storing would most likely cost the caller another timeout for nothing; the next
      // caller's read tells whether the backend is back. The value is still checked.
      if (absl::Status s = CheckPayload(*loaded); !s.ok()) return s;
      return Bytes(std::make_shared<const std::string>(*std::move(loaded)));
    }
    Add(counters_.puts);
    ScopedTimer timer(&put_latency_);
    absl::Status stored = EncodeAndStore(keys, *loaded);
    if (!stored.ok()) {
      Add(counters_.put_errors);
      // The loaded value is bad: hand the reason to the callers rather than the value.
      if (absl::IsInvalidArgument(stored) || absl::IsResourceExhausted(stored)) return stored;
    }
    return std::make_shared<const std::string>(*std::move(loaded));
  }

  absl::StatusOr<std::string> CallLoader(const Loader& loader) {
    Add(counters_.loads);
    ScopedTimer timer(&load_latency_);
    absl::StatusOr<std::string> loaded = [&]() -> absl::StatusOr<std::string> {
      try {
        return loader();
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("chunkcache: the loader threw: ", e.what()));
      } catch (...) {
        return absl::InternalError("chunkcache: the loader threw a non-standard exception");
      }
    }();
    if (!loaded.ok()) Add(counters_.load_errors);
    return loaded;
  }

  // ---- Writing -------------------------------------------------------------------------------

  absl::Status CheckSize(std::string_view json) const {
    if (json.size() <= options_.max_payload_size) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrFormat("chunkcache: the payload is %d bytes; max_payload_size is %d", json.size(),
                        options_.max_payload_size));
  }

  // What Put checks before storing: the size bound and, if enabled, JSON validity.
  absl::Status CheckPayload(std::string_view json) {
    if (absl::Status s = CheckSize(json); !s.ok()) return s;
    return options_.validate_json ? codec_.ValidateJson(json) : absl::OkStatus();
  }

  absl::Status EncodeAndStore(const StoredKeys& keys, std::string_view json) {
    if (absl::Status s = CheckSize(json); !s.ok()) return s;
    absl::StatusOr<CompressedBuffer> compressed = ValidateAndCompress(json);
    if (!compressed.ok()) return compressed.status();
    Add(counters_.bytes_put_raw, json.size());
    return Store(keys, json.size(), compressed->view());
  }

  absl::StatusOr<CompressedBuffer> ValidateAndCompress(std::string_view json) {
    if (!options_.validate_json) return codec_.Compress(json);
    if (options_.compression_workers == 0 || json.size() < kOverlapValidationFrom) {
      if (absl::Status s = codec_.ValidateJson(json); !s.ok()) return s;
      return codec_.Compress(json);
    }
    // Extra threads are allowed: validate while zstd's workers compress.
    absl::Status valid;
    absl::StatusOr<CompressedBuffer> compressed;
    {
      std::jthread validator([&] { valid = codec_.ValidateJson(json); });
      compressed = codec_.Compress(json);
    }
    if (!valid.ok()) return valid;
    return compressed;
  }

  // Writes the chunks of a fresh generation, then the manifest that commits them, then removes
  // the chunks of the generation it replaced.
  absl::Status Store(const StoredKeys& keys, std::size_t raw_size, std::string_view stored) {
    Manifest manifest;
    manifest.generation = generations_.Next();
    manifest.raw_size = raw_size;
    manifest.stored_size = stored.size();
    manifest.chunk_size = static_cast<std::uint32_t>(chunk_size_);
    manifest.checksum = internal::Checksum({&stored, 1});
    manifest.created_unix_ms = absl::ToUnixMillis(absl::Now());

    const bool fits_inline = internal::kManifestHeaderSize + stored.size() <= chunk_size_;
    manifest.chunk_count =
        fits_inline ? 0
                    : static_cast<std::uint32_t>((stored.size() + chunk_size_ - 1) / chunk_size_);
    const std::optional<Manifest> replaced =
        options_.delete_replaced_chunks ? ReadManifestQuietly(keys) : std::nullopt;

    std::vector<std::string> chunk_keys;
    if (!fits_inline) {
      chunk_keys = keys.Chunks(manifest.generation, manifest.chunk_count);
      std::vector<KeyValue> items;
      items.reserve(chunk_keys.size());
      for (std::uint32_t i = 0; i < manifest.chunk_count; ++i) {
        items.push_back({chunk_keys[i], stored.substr(std::size_t{i} * chunk_size_, chunk_size_)});
      }
      if (absl::Status s = BackendSet(items, options_.ttl + options_.chunk_ttl_grace); !s.ok()) {
        return s;
      }
      Add(counters_.chunks_written, items.size());
    }

    const std::string manifest_bytes =
        internal::EncodeManifest(manifest, fits_inline ? stored : std::string_view());
    const KeyValue manifest_item{keys.manifest(), manifest_bytes};
    if (absl::Status s = BackendSet({&manifest_item, 1}, options_.ttl); !s.ok()) {
      DeleteChunks(keys, manifest);  // nothing refers to them
      return s;
    }
    if (replaced.has_value() && replaced->generation != manifest.generation) {
      DeleteChunks(keys, *replaced);
    }
    return absl::OkStatus();
  }

  // Best effort: chunks left behind expire with their TTL.
  void DeleteChunks(const StoredKeys& keys, const Manifest& manifest) {
    if (manifest.is_inline()) return;
    const std::vector<std::string> chunk_keys =
        keys.Chunks(manifest.generation, manifest.chunk_count);
    const std::vector<std::string_view> views(chunk_keys.begin(), chunk_keys.end());
    BackendDelete(views).IgnoreError();
  }

  // ---- Backend calls, counted; a throwing user backend becomes a status. -----------------------

  template <typename Call>
  auto CallBackend(Call call) -> decltype(call()) {
    Add(counters_.backend_calls);
    decltype(call()) result = [&]() -> decltype(call()) {
      try {
        return call();
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("chunkcache: the backend threw: ", e.what()));
      } catch (...) {
        return absl::InternalError("chunkcache: the backend threw a non-standard exception");
      }
    }();
    if (!result.ok()) Add(counters_.backend_errors);
    return result;
  }

  absl::StatusOr<Values> BackendGet(absl::Span<const std::string_view> keys) {
    absl::StatusOr<Values> values = CallBackend([&] { return backend_->MultiGet(keys); });
    if (!values.ok()) return values;
    if (values->size() != keys.size()) {
      Add(counters_.backend_errors);
      return absl::InternalError(absl::StrFormat(
          "chunkcache: the backend answered %d values for %d keys", values->size(), keys.size()));
    }
    for (const std::optional<std::string>& value : *values) {
      if (value.has_value()) Add(counters_.bytes_read, value->size());
    }
    return values;
  }

  absl::StatusOr<std::optional<std::string>> GetOne(std::string_view key) {
    absl::StatusOr<Values> values = BackendGet({&key, 1});
    if (!values.ok()) return values.status();
    return std::move((*values)[0]);
  }

  absl::Status BackendSet(absl::Span<const KeyValue> items, absl::Duration ttl) {
    absl::Status status = CallBackend([&] { return backend_->MultiSet(items, ttl); });
    if (status.ok()) {
      for (const KeyValue& item : items) Add(counters_.bytes_written, item.value.size());
    }
    return status;
  }

  absl::Status BackendDelete(absl::Span<const std::string_view> keys) {
    return CallBackend([&] { return backend_->Delete(keys); });
  }

  const std::shared_ptr<Backend> backend_;
  const CacheOptions options_;
  const absl::Status options_status_;
  const std::size_t chunk_size_;  // effective: min(chunk_size, backend's max_item_size)
  internal::Codec codec_;
  internal::SingleFlight flights_;
  GenerationSource generations_;
  Counters counters_;
  internal::LatencyHistogram get_latency_, put_latency_, load_latency_;
};

// ---- The public face: forwards to Impl, and keeps exceptions from crossing the API. ----------

namespace {

template <typename Call>
auto NoThrow(Call call) -> decltype(call()) {
  try {
    return call();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("chunkcache: out of memory");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("chunkcache: unexpected exception: ", e.what()));
  }
}

}  // namespace

ChunkedCache::ChunkedCache(std::shared_ptr<Backend> backend, CacheOptions options)
    : impl_(std::make_unique<Impl>(std::move(backend), std::move(options))) {}
ChunkedCache::~ChunkedCache() = default;
ChunkedCache::ChunkedCache(ChunkedCache&&) noexcept = default;
ChunkedCache& ChunkedCache::operator=(ChunkedCache&&) noexcept = default;

absl::StatusOr<Bytes> ChunkedCache::Get(std::string_view key) {
  return NoThrow([&] { return impl_->Get(key); });
}

absl::StatusOr<Bytes> ChunkedCache::GetOrLoad(std::string_view key, Loader loader) {
  return NoThrow([&] { return impl_->GetOrLoad(key, loader); });
}

absl::Status ChunkedCache::Put(std::string_view key, std::string_view json) {
  return NoThrow([&] { return impl_->Put(key, json); });
}

absl::Status ChunkedCache::Invalidate(std::string_view key) {
  return NoThrow([&] { return impl_->Invalidate(key); });
}

CacheStats ChunkedCache::Stats() const { return impl_->Stats(); }

const CacheOptions& ChunkedCache::options() const { return impl_->options(); }

}  // namespace chunkcache
