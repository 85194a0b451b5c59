#include "chunkcache/chunked_cache.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec.h"
#include "internal/striped_counter.h"
#include "keys.h"
#include "latency_histogram.h"
#include "manifest.h"
#include "near_cache.h"
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
  std::atomic<std::uint64_t> l1_revalidations{0}, stale_served{0}, refreshes{0}, refresh_errors{0},
      refreshes_dropped{0};
  std::atomic<std::uint64_t> leases_won{0}, leases_waited{0}, lease_wait_hits{0},
      lease_wait_loads{0};
  std::atomic<std::uint64_t> breaker_opens{0}, breaker_rejections{0}, compressed_gets{0};
  std::array<std::atomic<std::uint64_t>, 17> backend_errors_by_code{};
  // Bumped by every near-cache hit: striped, so concurrent hits do not share a cache line.
  internal::StripedCounter l1_hits, l1_bytes_returned;
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

// CacheOptions::log, at most one message per kind per second; the ones held back are counted and
// mentioned with the next one let through.
class RateLimitedLog {
 public:
  enum Kind { kCorrupt, kFallback, kRefresh, kStore, kBreaker, kKinds };

  explicit RateLimitedLog(std::function<void(LogLevel, std::string_view)> sink)
      : sink_(std::move(sink)) {}

  // `message` is only called (and the string built) when the message goes out.
  template <typename Message>
  void Warn(Kind kind, Message message) {
    if (!sink_) return;
    const std::int64_t now = absl::GetCurrentTimeNanos();
    std::int64_t last = last_ns_[kind].load(std::memory_order_relaxed);
    if (now - last < kInterval ||
        !last_ns_[kind].compare_exchange_strong(last, now, std::memory_order_relaxed)) {
      held_back_[kind].fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::string text = message();
    if (const std::uint64_t held = held_back_[kind].exchange(0, std::memory_order_relaxed)) {
      absl::StrAppend(&text, " (and ", held, " more like it in the last second)");
    }
    sink_(LogLevel::kWarning, text);
  }

 private:
  static constexpr std::int64_t kInterval = 1'000'000'000;
  const std::function<void(LogLevel, std::string_view)> sink_;
  std::array<std::atomic<std::int64_t>, kKinds> last_ns_{};
  std::array<std::atomic<std::uint64_t>, kKinds> held_back_{};
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
  if (options.l1_fresh_for < absl::ZeroDuration() ||
      (options.l1_capacity_bytes > 0 && options.l1_fresh_for >= options.ttl)) {
    return absl::InvalidArgumentError(
        "chunkcache: l1_fresh_for must be at least zero and less than ttl");
  }
  if (options.soft_ttl < absl::ZeroDuration() || options.soft_ttl >= options.ttl ||
      options.refresh_threads < 1) {
    return absl::InvalidArgumentError(
        "chunkcache: soft_ttl must be at least zero and less than ttl, refresh_threads positive");
  }
  if (options.lease_ttl < absl::ZeroDuration() ||
      (options.lease_ttl > absl::ZeroDuration() &&
       (options.lease_poll_initial <= absl::ZeroDuration() ||
        options.lease_poll_max < options.lease_poll_initial))) {
    return absl::InvalidArgumentError(
        "chunkcache: lease_ttl must be at least zero; with a lease, 0 < lease_poll_initial <= "
        "lease_poll_max");
  }
  if (options.breaker_failure_threshold < 0 ||
      (options.breaker_failure_threshold > 0 && options.breaker_cooldown <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "chunkcache: breaker_failure_threshold must be at least zero, breaker_cooldown positive");
  }
  return internal::CheckCompressionSettings(options.compression_level, options.compression_workers);
}

bool IsMiss(const absl::Status& status) { return absl::IsNotFound(status); }

bool IsUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

// Failures that say the backend is unwell (rather than the call being wrong): they count towards
// opening the circuit breaker.
bool IsBackendFailure(const absl::Status& status) {
  return IsUnreachable(status) || absl::IsResourceExhausted(status) || absl::IsInternal(status);
}

const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

// A payload a read found, and where it came from.
struct Found {
  Bytes bytes;
  std::uint64_t generation = 0;
  absl::Time created;    // when the entry was written
  bool from_l1 = false;  // the near cache's bytes (fresh, or confirmed by the manifest)
};

// A stored entry fetched and verified against its checksum, not yet decoded.
struct Fetched {
  Manifest manifest;
  std::string manifest_bytes;  // holds an inline payload
  Values chunks;
  bool known = false;  // the manifest names the generation the reader has; nothing else fetched

  std::vector<std::string_view> Parts() const {
    if (manifest.is_inline()) {
      return {std::string_view(manifest_bytes).substr(internal::kManifestHeaderSize)};
    }
    std::vector<std::string_view> parts;
    parts.reserve(chunks.size());
    for (const std::optional<std::string>& chunk : chunks) parts.push_back(*chunk);
    return parts;
  }
};

// A background refresh: the key and the loader a GetOrLoad gave for it.
struct RefreshTask {
  std::string key;
  Loader loader;
};

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
        codec_(options_.compression_level, options_.compression_workers),
        l1_(options_.l1_capacity_bytes > 0
                ? std::make_unique<internal::NearCache>(options_.l1_capacity_bytes)
                : nullptr),
        lease_token_(absl::StrFormat("%016x", generations_.Next())),
        log_(options_.log) {}

  // Background refreshes reference this object: stop them before anything is destroyed.
  ~Impl() { StopRefreshes(); }

  absl::StatusOr<Bytes> Get(std::string_view key, const CallOptions& call) {
    if (absl::Status s = CheckCall(key, call); !s.ok()) return s;
    if (std::optional<Found> hit = FreshL1(key); hit.has_value()) {
      NoteAge(*hit);
      return std::move(hit->bytes);
    }
    absl::StatusOr<Found> found = Read(key, StoredKeys(options_.key_prefix, key));
    if (!found.ok()) return found.status();
    NoteAge(*found);
    return std::move(found->bytes);
  }

  absl::StatusOr<Bytes> GetOrLoad(std::string_view key, const Loader& loader,
                                  const CallOptions& call) {
    if (absl::Status s = CheckCall(key, call); !s.ok()) return s;
    if (!loader) return absl::InvalidArgumentError("chunkcache: the loader is empty");
    if (std::optional<Found> hit = FreshL1(key); hit.has_value()) {
      if (NoteAge(*hit)) ScheduleRefresh(key, loader);
      return std::move(hit->bytes);
    }
    ScopedTimer timer(&get_or_load_latency_);
    const absl::Time deadline = std::min(absl::Now() + options_.load_wait_timeout, call.deadline);
    internal::SingleFlight::Outcome outcome =
        flights_.Do(key, deadline, [&] { return ReadOrLoad(key, loader, call.deadline); });
    if (outcome.role == internal::SingleFlight::Role::kWaiter) Add(counters_.coalesced);
    if (outcome.role == internal::SingleFlight::Role::kTimedOut) Add(counters_.wait_timeouts);
    return std::move(outcome.result);
  }

  absl::StatusOr<CompressedPayload> GetCompressed(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    absl::StatusOr<Fetched> fetched =
        FetchEntry(StoredKeys(options_.key_prefix, key), std::nullopt);
    if (!fetched.ok()) {
      if (IsMiss(fetched.status())) Add(counters_.misses);
      return fetched.status();
    }
    auto zstd = std::make_shared<std::string>();
    zstd->reserve(fetched->manifest.stored_size);
    for (std::string_view part : fetched->Parts()) zstd->append(part);
    Add(counters_.compressed_gets);
    return CompressedPayload{std::move(zstd), fetched->manifest.raw_size};
  }

  absl::StatusOr<EntryInfo> Inspect(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    const StoredKeys keys(options_.key_prefix, key);
    absl::StatusOr<std::optional<std::string>> manifest_bytes = GetOne(keys.manifest());
    if (!manifest_bytes.ok()) return manifest_bytes.status();
    if (!manifest_bytes->has_value()) return absl::NotFoundError("chunkcache: no such key");
    absl::StatusOr<DecodedManifest> decoded =
        internal::DecodeManifest(**manifest_bytes, options_.max_payload_size);
    if (!decoded.ok()) return decoded.status();
    const Manifest& manifest = decoded->manifest;
    EntryInfo info;
    info.manifest_key = keys.manifest();
    info.manifest_size = (*manifest_bytes)->size();
    info.format_version = internal::kFormatVersion;
    info.generation = manifest.generation;
    info.raw_size = manifest.raw_size;
    info.stored_size = manifest.stored_size;
    info.chunk_size = manifest.chunk_size;
    info.checksum = manifest.checksum;
    info.created = absl::FromUnixMillis(manifest.created_unix_ms);
    info.is_inline = manifest.is_inline();
    std::vector<std::string_view> parts;
    Values chunks;
    if (info.is_inline) {
      parts.push_back(decoded->inline_payload);
    } else {
      const std::vector<std::string> chunk_keys =
          keys.Chunks(manifest.generation, manifest.chunk_count);
      const std::vector<std::string_view> views(chunk_keys.begin(), chunk_keys.end());
      absl::StatusOr<Values> fetched = BackendGet(views);
      if (!fetched.ok()) return fetched.status();
      chunks = *std::move(fetched);
      for (std::uint32_t i = 0; i < manifest.chunk_count; ++i) {
        ChunkInfo chunk{chunk_keys[i], manifest.ChunkSize(i), std::nullopt};
        if (chunks[i].has_value()) {
          chunk.actual_size = chunks[i]->size();
          parts.push_back(*chunks[i]);
        }
        info.chunks.push_back(std::move(chunk));
      }
    }
    info.complete = std::all_of(info.chunks.begin(), info.chunks.end(), [](const ChunkInfo& c) {
      return c.actual_size == c.expected_size;
    });
    info.checksum_ok = info.complete && internal::Checksum(parts) == manifest.checksum;
    return info;
  }

  absl::Status Put(std::string_view key, std::string_view json) {
    Add(counters_.puts);
    absl::Status status = CheckCall(key);
    if (status.ok()) {
      ScopedTimer timer(&put_latency_);
      status = EncodeAndStore(StoredKeys(options_.key_prefix, key), json).status();
      // The next read fetches the new entry (a copy of the payload here would cost as much).
      if (l1_ != nullptr) l1_->Erase(key);
    }
    if (!status.ok()) Add(counters_.put_errors);
    return status;
  }

  absl::Status Invalidate(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    Add(counters_.invalidates);
    if (l1_ != nullptr) l1_->Erase(key);
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
    const std::uint64_t l1_hits = c.l1_hits.Value();
    s.gets = CounterValue(c.gets) + l1_hits;
    s.hits = CounterValue(c.hits) + l1_hits;
    s.misses = CounterValue(c.misses);
    s.puts = CounterValue(c.puts);
    s.put_errors = CounterValue(c.put_errors);
    s.invalidates = CounterValue(c.invalidates);
    s.loads = CounterValue(c.loads);
    s.load_errors = CounterValue(c.load_errors);
    s.coalesced = CounterValue(c.coalesced);
    s.wait_timeouts = CounterValue(c.wait_timeouts);
    s.fallbacks = CounterValue(c.fallbacks);
    s.l1_hits = l1_hits;
    s.l1_revalidations = CounterValue(c.l1_revalidations);
    s.l1_evictions = l1_ != nullptr ? l1_->evictions() : 0;
    s.l1_bytes = l1_ != nullptr ? l1_->bytes() : 0;
    s.stale_served = CounterValue(c.stale_served);
    s.refreshes = CounterValue(c.refreshes);
    s.refresh_errors = CounterValue(c.refresh_errors);
    s.refreshes_dropped = CounterValue(c.refreshes_dropped);
    s.leases_won = CounterValue(c.leases_won);
    s.leases_waited = CounterValue(c.leases_waited);
    s.lease_wait_hits = CounterValue(c.lease_wait_hits);
    s.lease_wait_loads = CounterValue(c.lease_wait_loads);
    s.breaker_open = BreakerOpen(Now());
    s.breaker_opens = CounterValue(c.breaker_opens);
    s.breaker_rejections = CounterValue(c.breaker_rejections);
    s.compressed_gets = CounterValue(c.compressed_gets);
    s.corrupt_reads = CounterValue(c.corrupt_reads);
    s.torn_retries = CounterValue(c.torn_retries);
    s.backend_calls = CounterValue(c.backend_calls);
    s.backend_errors = CounterValue(c.backend_errors);
    s.chunks_read = CounterValue(c.chunks_read);
    s.chunks_written = CounterValue(c.chunks_written);
    s.bytes_put_raw = CounterValue(c.bytes_put_raw);
    s.bytes_written = CounterValue(c.bytes_written);
    s.bytes_read = CounterValue(c.bytes_read);
    s.bytes_returned = CounterValue(c.bytes_returned) + c.l1_bytes_returned.Value();
    for (std::size_t i = 0; i < s.backend_errors_by_code.size(); ++i) {
      s.backend_errors_by_code[i] = CounterValue(c.backend_errors_by_code[i]);
    }
    s.get_latency = get_latency_.Summary();
    s.get_or_load_latency = get_or_load_latency_.Summary();
    s.put_latency = put_latency_.Summary();
    s.load_latency = load_latency_.Summary();
    s.backend_latency = backend_latency_.Summary();
    return s;
  }

  const CacheOptions& options() const { return options_; }

 private:
  absl::Status CheckCall(std::string_view key) const {
    if (!options_status_.ok()) return options_status_;
    return internal::ValidateKey(key);
  }

  absl::Status CheckCall(std::string_view key, const CallOptions& call) const {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    if (call.deadline != absl::InfiniteFuture() && absl::Now() >= call.deadline) {
      return absl::DeadlineExceededError("chunkcache: the call's deadline has passed");
    }
    return absl::OkStatus();
  }

  // The coarse system clock (a few ms of resolution, ample for TTLs): a vDSO read with no lock,
  // where absl::Now() can take a process-wide spin lock that concurrent near-cache hits would
  // fight over.
  absl::Time Now() const {
    if (options_.clock) return options_.clock();
    timespec now;
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    return absl::TimeFromTimespec(now);
  }

  // ---- Near cache and entry age --------------------------------------------------------------

  // The near cache's entry for `key` if it may be served with no backend call at all.
  std::optional<Found> FreshL1(std::string_view key) {
    if (l1_ == nullptr) return std::nullopt;
    std::optional<internal::NearCache::Entry> entry = l1_->Lookup(key);
    if (!entry.has_value()) return std::nullopt;
    const absl::Time now = Now();
    if (now - entry->validated >= options_.l1_fresh_for || now - entry->created >= options_.ttl) {
      return std::nullopt;
    }
    counters_.l1_hits.Add();
    counters_.l1_bytes_returned.Add(entry->size);
    return Found{std::move(entry->bytes), entry->generation, entry->created, true};
  }

  // The near cache's entry for `key` unless it has outlived ttl (then it is dropped).
  std::optional<internal::NearCache::Entry> LiveL1(std::string_view key, absl::Time now) {
    if (l1_ == nullptr) return std::nullopt;
    std::optional<internal::NearCache::Entry> entry = l1_->Lookup(key);
    if (entry.has_value() && now - entry->created >= options_.ttl) {
      l1_->Erase(key);
      return std::nullopt;
    }
    return entry;
  }

  // True (and counted) if `found` is older than soft_ttl: stale, due for a refresh.
  bool NoteAge(const Found& found) {
    if (options_.soft_ttl == absl::ZeroDuration()) return false;
    if (Now() - found.created < options_.soft_ttl) return false;
    Add(counters_.stale_served);
    return true;
  }

  // ---- Reading -------------------------------------------------------------------------------

  // A read that goes to the backend: the whole entry, or only its manifest when the near cache
  // holds a copy. Counted and timed.
  absl::StatusOr<Found> Read(std::string_view key, const StoredKeys& keys) {
    Add(counters_.gets);
    ScopedTimer timer(&get_latency_);
    const absl::Time now = Now();
    std::optional<internal::NearCache::Entry> cached = LiveL1(key, now);
    // An Invalidate or Put from now on makes what this read finds unfit for the near cache.
    const std::uint64_t epoch = l1_ != nullptr ? l1_->Epoch() : 0;
    absl::StatusOr<Found> found = ReadEntry(keys, cached.has_value() ? &*cached : nullptr);
    if (l1_ != nullptr) {
      if (found.ok() && found->from_l1) {
        l1_->MarkValidated(key, found->generation, now);
        Add(counters_.l1_revalidations);
      } else if (found.ok()) {
        l1_->Insert(key, {found->bytes, found->generation, found->created, now}, epoch);
      } else if (IsMiss(found.status())) {
        l1_->Erase(key);
      } else if (cached.has_value()) {
        // The backend failed: the near copy, younger than ttl, beats failing or loading.
        found = Found{std::move(cached->bytes), cached->generation, cached->created, true};
      }
    }
    if (found.ok()) {
      Add(counters_.hits);
      Add(counters_.bytes_returned, found->bytes->size());
    } else if (IsMiss(found.status())) {
      Add(counters_.misses);
    }
    return found;
  }

  // NotFound on a miss or a corrupt entry (counted); the backend's error if it failed. With
  // `known`, a manifest naming its generation returns its bytes without fetching chunks.
  absl::StatusOr<Found> ReadEntry(const StoredKeys& keys, const internal::NearCache::Entry* known) {
    absl::StatusOr<Fetched> fetched = FetchEntry(
        keys, known != nullptr ? std::optional<std::uint64_t>(known->generation) : std::nullopt);
    if (!fetched.ok()) return fetched.status();
    const Manifest& manifest = fetched->manifest;
    if (fetched->known) return Found{known->bytes, known->generation, known->created, true};
    absl::StatusOr<std::string> raw = codec_.Decompress(fetched->Parts(), manifest.raw_size);
    if (!raw.ok()) return CorruptMiss(raw.status());
    return Found{std::make_shared<const std::string>(*std::move(raw)), manifest.generation,
                 absl::FromUnixMillis(manifest.created_unix_ms), false};
  }

  // The manifest and stored bytes of the entry, checksum verified.
  absl::StatusOr<Fetched> FetchEntry(const StoredKeys& keys,
                                     std::optional<std::uint64_t> known_generation) {
    for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
      Fetched fetched;
      absl::StatusOr<std::optional<std::string>> manifest_bytes = GetOne(keys.manifest());
      if (!manifest_bytes.ok()) return manifest_bytes.status();
      if (!manifest_bytes->has_value()) return absl::NotFoundError("chunkcache: no such key");
      fetched.manifest_bytes = **std::move(manifest_bytes);

      absl::StatusOr<DecodedManifest> decoded =
          internal::DecodeManifest(fetched.manifest_bytes, options_.max_payload_size);
      if (!decoded.ok()) return CorruptMiss(decoded.status());
      fetched.manifest = decoded->manifest;
      const Manifest& manifest = fetched.manifest;
      if (known_generation == manifest.generation) {
        fetched.known = true;
        return fetched;
      }
      if (!manifest.is_inline()) {
        const std::vector<std::string> chunk_keys =
            keys.Chunks(manifest.generation, manifest.chunk_count);
        const std::vector<std::string_view> chunk_key_views(chunk_keys.begin(), chunk_keys.end());
        absl::StatusOr<Values> chunks = BackendGet(chunk_key_views);
        if (!chunks.ok()) return chunks.status();
        Add(counters_.chunks_read, chunks->size());
        fetched.chunks = *std::move(chunks);

        std::uint32_t present = 0;
        for (; present < fetched.chunks.size() && fetched.chunks[present].has_value(); ++present) {
          if (fetched.chunks[present]->size() != manifest.ChunkSize(present)) {
            return CorruptMiss(absl::DataLossError(
                absl::StrFormat("chunkcache: chunk %d is %d bytes, the manifest says %d", present,
                                fetched.chunks[present]->size(), manifest.ChunkSize(present))));
          }
        }
        if (present < fetched.chunks.size()) {
          // A chunk is missing: a writer may have replaced this generation since the manifest
          // was read (start over), or the entry lost a chunk (corrupt).
          if (!ManifestChanged(keys, manifest.generation)) {
            return CorruptMiss(absl::DataLossError(absl::StrFormat(
                "chunkcache: chunk %d of %d is missing", present, manifest.chunk_count)));
          }
          Add(counters_.torn_retries);
          continue;
        }
      }
      if (internal::Checksum(fetched.Parts()) != manifest.checksum) {
        return CorruptMiss(absl::DataLossError("chunkcache: checksum mismatch"));
      }
      return fetched;
    }
    return absl::NotFoundError(
        "chunkcache: the entry kept changing while it was read; treated as a miss");
  }

  absl::Status CorruptMiss(const absl::Status& why) {
    Add(counters_.corrupt_reads);
    log_.Warn(RateLimitedLog::kCorrupt, [&] {
      return absl::StrCat("chunkcache: a corrupt entry was read as a miss: ", why.message());
    });
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

  absl::StatusOr<Bytes> ReadOrLoad(std::string_view key, const Loader& loader,
                                   absl::Time deadline) {
    const StoredKeys keys(options_.key_prefix, key);
    absl::StatusOr<Found> cached = Read(key, keys);
    if (cached.ok()) {
      if (NoteAge(*cached)) ScheduleRefresh(key, loader);
      return std::move(cached->bytes);
    }
    const bool backend_down = !IsMiss(cached.status());
    if (backend_down) {  // serve through the origin
      Add(counters_.fallbacks);
      log_.Warn(RateLimitedLog::kFallback, [&] {
        return absl::StrCat("chunkcache: the backend failed, loading key ", keys.manifest(),
                            " from the origin: ", cached.status().ToString());
      });
    }

    bool lease_held = false;
    if (!backend_down && options_.lease_ttl > absl::ZeroDuration()) {
      LeaseOutcome lease = TakeOrAwaitLease(keys, deadline);
      if (lease.found.has_value()) return std::move(lease.found->bytes);
      lease_held = lease.held;
    }
    absl::StatusOr<Bytes> result = LoadAndStore(key, keys, loader, cached.status());
    if (lease_held) {
      const std::string lease_key = keys.Lease();
      const std::string_view lease_view = lease_key;
      BackendDelete({&lease_view, 1}).IgnoreError();  // else it expires with lease_ttl
    }
    return result;
  }

  absl::StatusOr<Bytes> LoadAndStore(std::string_view key, const StoredKeys& keys,
                                     const Loader& loader, const absl::Status& read_status) {
    absl::StatusOr<std::string> loaded = CallLoader(loader);
    if (!loaded.ok()) return loaded.status();
    if (IsUnreachable(read_status)) {
      // Storing would most likely cost the caller another timeout for nothing; the next
      // caller's read tells whether the backend is back. The value is still checked.
      if (absl::Status s = CheckPayload(*loaded); !s.ok()) return s;
      return Bytes(std::make_shared<const std::string>(*std::move(loaded)));
    }
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    const absl::Status stored = StoreLoaded(key, keys, bytes);
    // The loaded value is bad: hand the reason to the callers rather than the value.
    if (absl::IsInvalidArgument(stored) || absl::IsResourceExhausted(stored)) return stored;
    return bytes;
  }

  // Stores a loaded payload (and keeps it in the near cache). The store's status.
  absl::Status StoreLoaded(std::string_view key, const StoredKeys& keys, const Bytes& bytes) {
    Add(counters_.puts);
    ScopedTimer timer(&put_latency_);
    absl::StatusOr<Manifest> stored = EncodeAndStore(keys, *bytes);
    if (!stored.ok()) {
      Add(counters_.put_errors);
      log_.Warn(RateLimitedLog::kStore, [&] {
        return absl::StrCat("chunkcache: storing the loaded value of ", keys.manifest(),
                            " failed: ", stored.status().ToString());
      });
      return stored.status();
    }
    if (l1_ != nullptr) {
      l1_->Insert(
          key, {bytes, stored->generation, absl::FromUnixMillis(stored->created_unix_ms), Now()});
    }
    return absl::OkStatus();
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

  // ---- Cross-process lease -------------------------------------------------------------------

  struct LeaseOutcome {
    std::optional<Found> found;  // the entry another process stored while this one waited
    bool held = false;           // this process holds the lease: load, store, release
  };

  // Takes the key's lease, or waits for the process holding it to store the entry. Loads are
  // left to the caller: with the lease held, or without one when the backend cannot lease, the
  // holder vanished without storing, or lease_ttl passed.
  LeaseOutcome TakeOrAwaitLease(const StoredKeys& keys, absl::Time deadline) {
    if (lease_unsupported_.load(std::memory_order_relaxed)) return {};
    const std::string lease_key = keys.Lease();
    absl::StatusOr<bool> taken = TakeLease(lease_key);
    if (!taken.ok()) return {};
    if (*taken) {
      Add(counters_.leases_won);
      return {.found = std::nullopt, .held = true};
    }
    Add(counters_.leases_waited);
    const absl::Time give_up = std::min(absl::Now() + options_.lease_ttl, deadline);
    absl::Duration pause = options_.lease_poll_initial;
    while (true) {
      absl::SleepFor(std::min(pause, std::max(give_up - absl::Now(), absl::ZeroDuration())));
      pause = std::min(pause * 2, options_.lease_poll_max);
      absl::StatusOr<Found> found = ReadEntry(keys, nullptr);
      if (found.ok()) {
        Add(counters_.lease_wait_hits);
        return {.found = *std::move(found), .held = false};
      }
      if (!IsMiss(found.status())) return {};  // the backend failed: load without it
      taken = TakeLease(lease_key);
      if (!taken.ok() || *taken || absl::Now() >= give_up) {
        Add(counters_.lease_wait_loads);
        return {.found = std::nullopt, .held = taken.ok() && *taken};
      }
    }
  }

  absl::StatusOr<bool> TakeLease(const std::string& lease_key) {
    absl::StatusOr<bool> taken = CallBackend(
        [&] { return backend_->SetIfAbsent(lease_key, lease_token_, options_.lease_ttl); });
    if (absl::IsUnimplemented(taken.status())) {
      lease_unsupported_.store(true, std::memory_order_relaxed);
    }
    return taken;
  }

  // ---- Stale-while-revalidate ----------------------------------------------------------------

  // Queues one background refresh of `key` unless one is queued or running already.
  void ScheduleRefresh(std::string_view key, const Loader& loader) {
    internal::MutexLock lock(&refresh_mu_);
    if (stopping_ || refreshing_.contains(absl::string_view(key.data(), key.size()))) return;
    if (refresh_queue_.size() >= options_.max_queued_refreshes) {
      Add(counters_.refreshes_dropped);
      return;
    }
    refreshing_.insert(std::string(key));
    refresh_queue_.push_back({std::string(key), loader});
    if (refresh_threads_.size() < static_cast<std::size_t>(options_.refresh_threads)) {
      refresh_threads_.emplace_back([this] { RefreshLoop(); });
    }
    refresh_cv_.SignalAll();
  }

  void RefreshLoop() {
    internal::MutexLock lock(&refresh_mu_);
    while (true) {
      while (!stopping_ && refresh_queue_.empty()) refresh_cv_.Wait(&refresh_mu_);
      if (stopping_) return;
      RefreshTask task = std::move(refresh_queue_.front());
      refresh_queue_.pop_front();
      refresh_mu_.Unlock();
      Refresh(task);
      refresh_mu_.Lock();
      refreshing_.erase(task.key);
    }
  }

  void Refresh(const RefreshTask& task) {
    const StoredKeys keys(options_.key_prefix, task.key);
    // With a lease, one process of the fleet refreshes a key; the others keep serving.
    const bool leasing = options_.lease_ttl > absl::ZeroDuration() &&
                         !lease_unsupported_.load(std::memory_order_relaxed);
    const std::string lease_key = leasing ? keys.Lease() : std::string();
    bool held = false;
    if (leasing) {
      absl::StatusOr<bool> taken = TakeLease(lease_key);
      if (taken.ok() && !*taken) {
        Add(counters_.refreshes_dropped);
        return;
      }
      held = taken.ok();  // on an error, refresh without it
    }
    RefreshUnderLease(task, keys);
    if (held) {
      const std::string_view lease_view = lease_key;
      BackendDelete({&lease_view, 1}).IgnoreError();
    }
  }

  void RefreshUnderLease(const RefreshTask& task, const StoredKeys& keys) {
    Add(counters_.refreshes);
    absl::StatusOr<std::string> loaded = CallLoader(task.loader);
    if (!loaded.ok()) {
      Add(counters_.refresh_errors);
      log_.Warn(RateLimitedLog::kRefresh, [&] {
        return absl::StrCat(
            "chunkcache: the background refresh of a stale entry failed; it is "
            "served until its ttl: ",
            loaded.status().ToString());
      });
      return;
    }
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    if (!StoreLoaded(task.key, keys, bytes).ok()) Add(counters_.refresh_errors);
  }

  void StopRefreshes() {
    std::vector<std::thread> threads;
    {
      internal::MutexLock lock(&refresh_mu_);
      stopping_ = true;
      refresh_queue_.clear();
      threads.swap(refresh_threads_);
      refresh_cv_.SignalAll();
    }
    for (std::thread& thread : threads) thread.join();  // waits for a refresh under way
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

  // The manifest that committed the new entry.
  absl::StatusOr<Manifest> EncodeAndStore(const StoredKeys& keys, std::string_view json) {
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
  absl::StatusOr<Manifest> Store(const StoredKeys& keys, std::size_t raw_size,
                                 std::string_view stored) {
    Manifest manifest;
    manifest.generation = generations_.Next();
    manifest.raw_size = raw_size;
    manifest.stored_size = stored.size();
    manifest.chunk_size = static_cast<std::uint32_t>(chunk_size_);
    manifest.checksum = internal::Checksum({&stored, 1});
    manifest.created_unix_ms = absl::ToUnixMillis(Now());

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
    return manifest;
  }

  // Best effort: chunks left behind expire with their TTL.
  void DeleteChunks(const StoredKeys& keys, const Manifest& manifest) {
    if (manifest.is_inline()) return;
    const std::vector<std::string> chunk_keys =
        keys.Chunks(manifest.generation, manifest.chunk_count);
    const std::vector<std::string_view> views(chunk_keys.begin(), chunk_keys.end());
    BackendDelete(views).IgnoreError();
  }

  // ---- Backend calls: counted, guarded by the circuit breaker; a throwing user backend becomes
  // a status. ------------------------------------------------------------------------------------

  template <typename Call>
  auto CallBackend(Call call) -> decltype(call()) {
    const bool breaker = options_.breaker_failure_threshold > 0;
    if (breaker && BreakerOpen(Now())) {
      Add(counters_.breaker_rejections);
      return absl::UnavailableError(absl::StrCat("chunkcache: the backend is skipped for ",
                                                 absl::FormatDuration(options_.breaker_cooldown),
                                                 " after ", options_.breaker_failure_threshold,
                                                 " failures in a row (circuit breaker)"));
    }
    Add(counters_.backend_calls);
    ScopedTimer timer(&backend_latency_);
    decltype(call()) result = [&]() -> decltype(call()) {
      try {
        return call();
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("chunkcache: the backend threw: ", e.what()));
      } catch (...) {
        return absl::InternalError("chunkcache: the backend threw a non-standard exception");
      }
    }();
    if (!result.ok()) CountBackendError(StatusOf(result));
    if (breaker) RecordOutcome(StatusOf(result));
    return result;
  }

  void CountBackendError(const absl::Status& status) {
    Add(counters_.backend_errors);
    const auto code = static_cast<std::size_t>(status.code());
    if (code < counters_.backend_errors_by_code.size()) {
      Add(counters_.backend_errors_by_code[code]);
    }
  }

  bool BreakerOpen(absl::Time now) const {
    return absl::ToUnixNanos(now) < breaker_open_until_ns_.load(std::memory_order_relaxed);
  }

  // Counts failures in a row; the threshold-th opens the breaker. The count is not reset when it
  // opens, so the first failure after the cool-down reopens it at once.
  void RecordOutcome(const absl::Status& status) {
    if (!IsBackendFailure(status)) {
      failures_in_a_row_.store(0, std::memory_order_relaxed);
      return;
    }
    const int failures = failures_in_a_row_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (failures >= options_.breaker_failure_threshold) {
      breaker_open_until_ns_.store(absl::ToUnixNanos(Now() + options_.breaker_cooldown),
                                   std::memory_order_relaxed);
      Add(counters_.breaker_opens);
      log_.Warn(RateLimitedLog::kBreaker, [&] {
        return absl::StrCat("chunkcache: circuit breaker open for ",
                            absl::FormatDuration(options_.breaker_cooldown), " after ", failures,
                            " backend failures in a row; last: ", status.ToString());
      });
    }
  }

  absl::StatusOr<Values> BackendGet(absl::Span<const std::string_view> keys) {
    absl::StatusOr<Values> values = CallBackend([&] { return backend_->MultiGet(keys); });
    if (!values.ok()) return values;
    if (values->size() != keys.size()) {
      absl::Status wrong = absl::InternalError(absl::StrFormat(
          "chunkcache: the backend answered %d values for %d keys", values->size(), keys.size()));
      CountBackendError(wrong);
      return wrong;
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
  const std::unique_ptr<internal::NearCache> l1_;  // null when off
  const std::string lease_token_;                  // the value of the leases this cache takes
  std::atomic<bool> lease_unsupported_{false};
  std::atomic<int> failures_in_a_row_{0};
  std::atomic<std::int64_t> breaker_open_until_ns_{std::numeric_limits<std::int64_t>::min()};
  Counters counters_;
  internal::LatencyHistogram get_latency_, get_or_load_latency_, put_latency_, load_latency_,
      backend_latency_;
  RateLimitedLog log_;

  internal::Mutex refresh_mu_;
  internal::CondVar refresh_cv_;
  bool stopping_ ABSL_GUARDED_BY(refresh_mu_) = false;
  std::deque<RefreshTask> refresh_queue_ ABSL_GUARDED_BY(refresh_mu_);
  absl::flat_hash_set<std::string> refreshing_ ABSL_GUARDED_BY(refresh_mu_);  // queued or running
  std::vector<std::thread> refresh_threads_ ABSL_GUARDED_BY(refresh_mu_);
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

absl::StatusOr<Bytes> ChunkedCache::Get(std::string_view key) { return Get(key, CallOptions()); }

absl::StatusOr<Bytes> ChunkedCache::Get(std::string_view key, const CallOptions& call) {
  return NoThrow([&] { return impl_->Get(key, call); });
}

absl::StatusOr<Bytes> ChunkedCache::GetOrLoad(std::string_view key, Loader loader) {
  return GetOrLoad(key, std::move(loader), CallOptions());
}

absl::StatusOr<Bytes> ChunkedCache::GetOrLoad(std::string_view key, Loader loader,
                                              const CallOptions& call) {
  return NoThrow([&] { return impl_->GetOrLoad(key, loader, call); });
}

absl::StatusOr<CompressedPayload> ChunkedCache::GetCompressed(std::string_view key) {
  return NoThrow([&] { return impl_->GetCompressed(key); });
}

absl::StatusOr<EntryInfo> ChunkedCache::Inspect(std::string_view key) {
  return NoThrow([&] { return impl_->Inspect(key); });
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
