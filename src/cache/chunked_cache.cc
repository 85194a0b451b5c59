#include "chunkcache/chunked_cache.h"

#include <time.h>
#include <unistd.h>

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
#include "format/codec.h"
#include "internal/striped_counter.h"
#include "format/keys.h"
#include "metrics/latency_histogram.h"
#include "cache/load_memo.h"
#include "format/manifest.h"
#include "cache/near_cache.h"
#include "cache/single_flight.h"

namespace chunkcache {
namespace {

using internal::CompressedBuffer;
using internal::DecodedManifest;
using internal::Manifest;
using internal::StoredKeys;

// How often a read starts over because a writer replaced the entry under it.
constexpr int kMaxReadAttempts = 4;

// A call whose deadline is this close has run out of it: a backend giving up a little early
// must not make the call start a load it has no time for.
constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(5);

// Bytes of chunk keys that Inspect lists (a few thousand chunks of the longest keys, tens of
// thousands of usual ones); an entry with more chunks reports their count only.
constexpr std::size_t kMaxListedChunkKeyBytes = std::size_t{4} << 20;

// Bytes of chunk keys one read asks the backend for at a time (docs/FORMAT.md).
constexpr std::size_t kMaxChunkKeyBytesPerCall = std::size_t{256} << 10;

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
  std::atomic<std::uint64_t> load_backoffs{0}, unstored_served{0}, refreshes_skipped{0},
      refreshes_deferred{0};
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
    try {
      sink_(LogLevel::kWarning, text);
    } catch (...) {
      // A log sink that throws loses its message, never the caller's call or a refresh thread.
    }
  }

 private:
  static constexpr std::int64_t kInterval = 1'000'000'000;
  const std::function<void(LogLevel, std::string_view)> sink_;
  std::array<std::atomic<std::int64_t>, kKinds> last_ns_{};
  std::array<std::atomic<std::uint64_t>, kKinds> held_back_{};
};

// Generation ids: random per cache instance and process (so processes do not collide, a forked
// child included: it reseeds when it sees its pid change), then a counter scrambled by splitmix64
// (so one process never repeats itself).
class GenerationSource {
 public:
  GenerationSource() { Reseed(getpid()); }
  std::uint64_t Next() {
    if (const pid_t pid = getpid(); pid != pid_.load(std::memory_order_acquire)) {
      internal::MutexLock lock(&reseed_mu_);
      if (pid != pid_.load(std::memory_order_relaxed)) Reseed(pid);
    }
    std::uint64_t z = base_.load(std::memory_order_relaxed) +
                      0x9e3779b97f4a7c15ULL * counter_.fetch_add(1) + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  void Reseed(pid_t pid) {
    std::random_device device;
    base_.store((std::uint64_t{device()} << 32) ^ device() ^ (std::uint64_t(pid) << 16),
                std::memory_order_relaxed);
    pid_.store(pid, std::memory_order_release);
  }

  internal::Mutex reseed_mu_;
  std::atomic<pid_t> pid_{0};
  std::atomic<std::uint64_t> base_{0};
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
  if (options.load_retry_initial <= absl::ZeroDuration() ||
      options.load_retry_max < options.load_retry_initial ||
      options.unstored_hold < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "chunkcache: 0 < load_retry_initial <= load_retry_max, and unstored_hold at least zero");
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

// Outcomes after which a write may or may not have been applied: the client cannot tell.
bool IsAmbiguous(const absl::Status& status) {
  return IsUnreachable(status) || absl::IsInternal(status) || absl::IsUnknown(status) ||
         absl::IsAborted(status) || absl::IsCancelled(status) || absl::IsDataLoss(status);
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
  absl::Time created;          // when the entry was written
  bool from_l1 = false;        // the near cache's bytes (fresh, or confirmed by the manifest)
  std::uint64_t checksum = 0;  // of the stored entry
};

// A stored entry fetched and verified against its checksum, not yet decoded.
struct Fetched {
  Manifest manifest;
  std::string manifest_bytes;     // holds an inline payload
  std::size_t inline_offset = 0;  // where it starts: after the header of the manifest's version
  Values chunks;
  bool known = false;  // the manifest names the generation the reader has; nothing else fetched

  std::vector<std::string_view> Parts() const {
    if (manifest.is_inline()) return {std::string_view(manifest_bytes).substr(inline_offset)};
    std::vector<std::string_view> parts;
    parts.reserve(chunks.size());
    for (const std::optional<std::string>& chunk : chunks) parts.push_back(*chunk);
    return parts;
  }
};

// Set on a refresh thread whose task destroyed the cache that ran it (its loader held the last
// reference): the thread then returns without touching that cache again.
thread_local bool tls_cache_destroyed_on_this_thread = false;

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
        log_(options_.log),
        load_memo_({options_.load_retry_initial, options_.load_retry_max, options_.unstored_hold,
                    std::max(options_.l1_capacity_bytes, options_.max_payload_size)}),
        refresh_memo_(
            {options_.load_retry_initial, options_.load_retry_max, absl::ZeroDuration(), 0}) {}

  // Background refreshes reference this object: stop them before anything is destroyed.
  ~Impl() { StopRefreshes(); }

  absl::StatusOr<Bytes> Get(std::string_view key, const CallOptions& call) {
    if (absl::Status s = CheckCall(key, call); !s.ok()) return s;
    if (std::optional<Found> hit = FreshL1(key); hit.has_value()) {
      NoteAge(*hit);
      return std::move(hit->bytes);
    }
    const ScopedCallDeadline scoped_deadline(call.deadline);  // bounds every backend call
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
    const ScopedCallDeadline scoped_deadline(call.deadline);  // bounds every backend call
    const absl::Time wait_deadline =
        std::min(absl::Now() + options_.load_wait_timeout, call.deadline);
    for (int flight = 0;; ++flight) {
      internal::SingleFlight::Outcome outcome =
          flights_.Do(key, wait_deadline, [&] { return ReadOrLoad(key, loader, call.deadline); });
      if (outcome.role == internal::SingleFlight::Role::kWaiter) Add(counters_.coalesced);
      if (outcome.role == internal::SingleFlight::Role::kTimedOut) Add(counters_.wait_timeouts);
      // A flight whose leader ran out of its own, earlier deadline says nothing about this
      // caller's: it tries once more (as a leader, or with a newer flight).
      if (outcome.role == internal::SingleFlight::Role::kWaiter && flight == 0 &&
          absl::IsDeadlineExceeded(outcome.result.status()) && absl::Now() < wait_deadline) {
        continue;
      }
      return std::move(outcome.result);
    }
  }

  absl::StatusOr<CompressedPayload> GetCompressed(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    absl::StatusOr<Fetched> fetched = FetchEntry(StoredKeys(options_.key_prefix, key), nullptr);
    if (!fetched.ok()) {
      if (IsMiss(fetched.status())) Add(counters_.misses);
      return fetched.status();
    }
    auto zstd = std::make_shared<std::string>();
    zstd->reserve(fetched->manifest.stored_size);
    for (std::string_view part : fetched->Parts()) zstd->append(part);
    // Not decoded here, so at least the start must be a zstd frame (not, say, a skippable one).
    if (absl::Status s = internal::CheckZstdFrameStart(*zstd); !s.ok()) {
      Add(counters_.misses);
      return CorruptMiss(s);
    }
    Add(counters_.compressed_gets);
    return CompressedPayload{std::move(zstd), fetched->manifest.raw_size};
  }

  absl::StatusOr<EntryInfo> Inspect(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    const StoredKeys keys(options_.key_prefix, key);
    absl::StatusOr<std::optional<std::string>> manifest_bytes = GetOne(keys.manifest());
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
        absl::StatusOr<Values> fetched = BackendGet(views);
        if (!fetched.ok()) return fetched.status();
        for (std::uint32_t i = first; i < next; ++i) {
          std::optional<std::string>& chunk = (*fetched)[i - first];
          const bool whole = chunk.has_value() && chunk->size() == manifest.ChunkSize(i);
          info.complete = info.complete && whole;
          if (listed_key_bytes + batch[i - first].size() <= kMaxListedChunkKeyBytes &&
              info.chunks.size() == i) {
            listed_key_bytes += batch[i - first].size();
            info.chunks.push_back(
                {std::move(batch[i - first]), manifest.ChunkSize(i),
                 chunk.has_value() ? std::optional(chunk->size()) : std::nullopt});
          }
          if (whole && info.complete) kept.push_back(*std::move(chunk));
        }
      }
      parts.assign(kept.begin(), kept.end());
    }
    info.checksum_ok =
        info.complete && internal::Checksum(parts) == manifest.checksum && StartsZstdFrame(parts);
    return info;
  }

  absl::Status Put(std::string_view key, std::string_view json) {
    Add(counters_.puts);
    absl::Status status = CheckCall(key);
    if (status.ok()) {
      ScopedTimer timer(&put_latency_);
      status = EncodeAndStore(StoredKeys(options_.key_prefix, key), json).status();
      // Whatever the outcome, nothing this process read or loaded before may answer from now on.
      // The next read fetches the new entry (a copy of the payload here would cost as much).
      ForgetLocalCopies(key);
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
    const absl::Status deleted = BackendDelete({&manifest_key, 1});
    // After the delete, not before: a read that starts before the delete could otherwise find
    // the entry still there and put it back into the near cache once this erase is behind it.
    ForgetLocalCopies(key);
    if (!deleted.ok()) return deleted;
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
    s.refreshes_skipped = CounterValue(c.refreshes_skipped);
    s.refreshes_deferred = CounterValue(c.refreshes_deferred);
    s.load_backoffs = CounterValue(c.load_backoffs);
    s.unstored_served = CounterValue(c.unstored_served);
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
  // After this process wrote `key`: drops the near copy (and holds back inserts by reads and
  // loads already under way), detaches callers arriving from now on from a flight under way, and
  // forgets what an earlier load left to answer with.
  void ForgetLocalCopies(std::string_view key) {
    if (l1_ != nullptr) l1_->Erase(key);
    flights_.Forget(key);
    load_memo_.Clear(key);
  }

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
    return Found{std::move(entry->bytes), entry->generation, entry->created, true, entry->checksum};
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
    const std::uint64_t epoch = l1_ != nullptr ? l1_->Epoch(key) : 0;
    absl::StatusOr<Found> found = ReadEntry(keys, cached.has_value() ? &*cached : nullptr);
    if (l1_ != nullptr) {
      if (found.ok() && found->from_l1) {
        l1_->MarkValidated(key, found->generation, now);
        Add(counters_.l1_revalidations);
      } else if (found.ok()) {
        l1_->Insert(key, L1Entry(*found, now), epoch);
      } else if (IsMiss(found.status())) {
        l1_->Erase(key);
      } else if (cached.has_value()) {
        // The backend failed: the near copy, younger than ttl, beats failing or loading.
        found = Found{std::move(cached->bytes), cached->generation, cached->created, true,
                      cached->checksum};
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
  // `known`, a manifest naming its generation and checksum returns its bytes without fetching
  // chunks.
  absl::StatusOr<Found> ReadEntry(const StoredKeys& keys, const internal::NearCache::Entry* known) {
    absl::StatusOr<Fetched> fetched = FetchEntry(keys, known);
    if (!fetched.ok()) return fetched.status();
    const Manifest& manifest = fetched->manifest;
    if (fetched->known) {
      return Found{known->bytes, known->generation, known->created, true, known->checksum};
    }
    absl::StatusOr<std::string> raw = codec_.Decompress(fetched->Parts(), manifest.raw_size);
    if (!raw.ok()) return CorruptMiss(raw.status());
    return Found{std::make_shared<const std::string>(*std::move(raw)), manifest.generation,
                 absl::FromUnixMillis(manifest.created_unix_ms), false, manifest.checksum};
  }

  static internal::NearCache::Entry L1Entry(const Found& found, absl::Time validated) {
    return {found.bytes, found.generation,    found.created,
            validated,   found.bytes->size(), found.checksum};
  }

  // The manifest and stored bytes of the entry, checksum verified. With `known`, a manifest of
  // that generation and checksum is all that is fetched.
  absl::StatusOr<Fetched> FetchEntry(const StoredKeys& keys,
                                     const internal::NearCache::Entry* known) {
    for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
      Fetched fetched;
      absl::StatusOr<std::optional<std::string>> manifest_bytes = GetOne(keys.manifest());
      if (!manifest_bytes.ok()) return manifest_bytes.status();
      if (!manifest_bytes->has_value()) return absl::NotFoundError("chunkcache: no such key");
      fetched.manifest_bytes = **std::move(manifest_bytes);

      absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, fetched.manifest_bytes);
      if (!decoded.ok()) return CorruptMiss(decoded.status());
      fetched.manifest = decoded->manifest;
      // An offset, not the view: the view would not follow the bytes when `fetched` moves.
      fetched.inline_offset = fetched.manifest_bytes.size() - decoded->inline_payload.size();
      const Manifest& manifest = fetched.manifest;
      if (known != nullptr && known->generation == manifest.generation &&
          known->checksum == manifest.checksum) {
        fetched.known = true;
        return fetched;
      }
      if (!manifest.is_inline()) {
        absl::StatusOr<bool> complete = FetchChunks(keys, manifest, fetched.chunks);
        if (!complete.ok()) return complete.status();
        if (!*complete) {
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

  // Fetches the chunks of `manifest` into `chunks`, in batches whose keys add up to about
  // kMaxChunkKeyBytesPerCall, each checked before the next is asked for: whatever a manifest
  // claims, a read holds at most its verified chunks (bounded by the payload limit) and one
  // batch of keys. False if a chunk is missing because a writer replaced the entry meanwhile
  // (start over); a corrupt miss if it is missing otherwise or has the wrong size.
  absl::StatusOr<bool> FetchChunks(const StoredKeys& keys, const Manifest& manifest,
                                   Values& chunks) {
    chunks.clear();
    std::vector<std::string> batch;
    for (std::uint32_t next = 0; next < manifest.chunk_count;) {
      next = ChunkKeyBatch(keys, manifest, next, batch);
      const std::vector<std::string_view> views(batch.begin(), batch.end());
      absl::StatusOr<Values> got = BackendGet(views);
      if (!got.ok()) return got.status();
      Add(counters_.chunks_read, got->size());
      for (std::optional<std::string>& chunk : *got) {
        const auto index = static_cast<std::uint32_t>(chunks.size());
        if (!chunk.has_value()) {
          if (ManifestChanged(keys, manifest)) return false;
          return CorruptMiss(absl::DataLossError(absl::StrFormat(
              "chunkcache: chunk %d of %d is missing", index, manifest.chunk_count)));
        }
        if (chunk->size() != manifest.ChunkSize(index)) {
          return CorruptMiss(absl::DataLossError(
              absl::StrFormat("chunkcache: chunk %d is %d bytes, the manifest says %d", index,
                              chunk->size(), manifest.ChunkSize(index))));
        }
        chunks.push_back(std::move(chunk));
      }
    }
    return true;
  }

  // A manifest, checked against this reader's limits: no entry is larger than max_payload_size,
  // and no chunk (or inline manifest) larger than what the backend could have stored.
  // True if the concatenated `parts` begin with a zstd frame's magic number.
  static bool StartsZstdFrame(absl::Span<const std::string_view> parts) {
    std::string start;
    for (std::size_t i = 0; i < parts.size() && start.size() < 4; ++i) {
      start.append(parts[i].substr(0, 4 - start.size()));
    }
    return internal::CheckZstdFrameStart(start).ok();
  }

  // Fills `batch` with the keys of chunks `next`, `next + 1`, ... until they add up to
  // kMaxChunkKeyBytesPerCall or the chunks end; returns the index after the last one.
  static std::uint32_t ChunkKeyBatch(const StoredKeys& keys, const Manifest& manifest,
                                     std::uint32_t next, std::vector<std::string>& batch) {
    batch.clear();
    for (std::size_t key_bytes = 0;
         next < manifest.chunk_count && key_bytes < kMaxChunkKeyBytesPerCall; ++next) {
      batch.push_back(keys.Chunk(manifest.generation, next));
      key_bytes += batch.back().size();
    }
    return next;
  }

  // A manifest read from `keys.manifest()`: refused if it was written under another key.
  absl::StatusOr<DecodedManifest> DecodeStoredManifest(const StoredKeys& keys,
                                                       std::string_view bytes) const {
    return internal::DecodeManifest(bytes, keys.manifest(),
                                    {.max_payload_size = options_.max_payload_size,
                                     .max_chunk_size = backend_->max_item_size()});
  }

  absl::Status CorruptMiss(const absl::Status& why) {
    Add(counters_.corrupt_reads);
    log_.Warn(RateLimitedLog::kCorrupt, [&] {
      return absl::StrCat("chunkcache: a corrupt entry was read as a miss: ", why.message());
    });
    return absl::NotFoundError(absl::StrCat(why.message(), "; entry treated as a miss"));
  }

  // True unless the manifest still names the generation and checksum of `manifest` (an absent
  // or unreadable manifest counts as changed: the entry was replaced or removed meanwhile).
  bool ManifestChanged(const StoredKeys& keys, const Manifest& manifest) {
    std::optional<Manifest> now = ReadManifestQuietly(keys);
    return !now.has_value() || now->generation != manifest.generation ||
           now->checksum != manifest.checksum;
  }

  // The current manifest; nothing if it is absent or unreadable (corrupt); the backend's error.
  absl::StatusOr<std::optional<Manifest>> ReadManifest(const StoredKeys& keys) {
    absl::StatusOr<std::optional<std::string>> bytes = GetOne(keys.manifest());
    if (!bytes.ok()) return bytes.status();
    if (!bytes->has_value()) return std::nullopt;
    absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, **bytes);
    if (!decoded.ok()) return std::nullopt;
    return decoded->manifest;
  }

  // The current manifest, or nothing if it is absent, unreadable or the backend failed.
  std::optional<Manifest> ReadManifestQuietly(const StoredKeys& keys) {
    absl::StatusOr<std::optional<std::string>> bytes = GetOne(keys.manifest());
    if (!bytes.ok() || !bytes->has_value()) return std::nullopt;
    absl::StatusOr<DecodedManifest> decoded = DecodeStoredManifest(keys, **bytes);
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
    // What an earlier load of the key left: its failure, while the backoff lasts, or a value the
    // backend would not store. Either answers instead of the origin.
    if (std::optional<absl::StatusOr<Bytes>> held = load_memo_.Answer(key, Now())) {
      Add(held->ok() ? counters_.unstored_served : counters_.load_backoffs);
      return *std::move(held);
    }
    const bool backend_down = !IsMiss(cached.status());
    if (deadline != absl::InfiniteFuture() && absl::Now() + kDeadlineSlack >= deadline) {
      // Past the caller's deadline (a backend call ran into it): a load would only make the
      // caller later; the next caller loads if it must.
      return absl::DeadlineExceededError(
          absl::StrCat("chunkcache: the call's deadline passed while reading the entry: ",
                       cached.status().message()));
    }
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
      if (!lease.held && absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            "chunkcache: the call's deadline passed while another process held the key's lease");
      }
      lease_held = lease.held;
    }
    absl::StatusOr<Bytes> result = LoadAndStore(key, keys, loader, cached.status());
    if (lease_held) ReleaseLease(keys);
    return result;
  }

  // Loads `key` and stores the value. The call fails only if the loader did, or the value fails
  // its own checks (JSON, size); a backend that cannot store it leaves the value to answer the
  // key's next callers for unstored_hold.
  absl::StatusOr<Bytes> LoadAndStore(std::string_view key, const StoredKeys& keys,
                                     const Loader& loader, const absl::Status& read_status) {
    // A Put or Invalidate of the key by this process from now on outranks what this load finds.
    const Epochs epochs = EpochsOf(key);
    absl::StatusOr<std::string> loaded = CallLoader(loader);
    if (!loaded.ok()) {
      load_memo_.Failed(key, loaded.status(), Now(), epochs.memo);
      return loaded.status();
    }
    if (IsUnreachable(read_status)) {
      // Storing would most likely cost the caller another timeout for nothing; the next
      // caller's read tells whether the backend is back. The value is still checked.
      if (absl::Status s = CheckPayload(*loaded); !s.ok()) {
        load_memo_.Failed(key, s, Now(), epochs.memo);
        return s;
      }
      Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
      load_memo_.Unstored(key, bytes, Now(), epochs.memo);
      return bytes;
    }
    absl::StatusOr<CompressedBuffer> encoded = Encode(*loaded);
    if (!encoded.ok()) {
      load_memo_.Failed(key, encoded.status(), Now(), epochs.memo);
      return encoded.status();
    }
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    if (StoreLoaded(key, keys, bytes, encoded->view(), epochs).ok()) {
      load_memo_.Clear(key);
    } else {
      load_memo_.Unstored(key, bytes, Now(), epochs.memo);
    }
    return bytes;
  }

  // The per-key write counts a load reads before it starts: an insert by the load is dropped if
  // this process wrote the key since.
  struct Epochs {
    std::uint64_t l1 = 0;
    std::uint64_t memo = 0;
  };
  Epochs EpochsOf(std::string_view key) const {
    return {l1_ != nullptr ? l1_->Epoch(key) : 0, load_memo_.Epoch(key)};
  }

  // Stores a loaded and compressed payload, and keeps it in the near cache unless this process
  // wrote the key since `epochs` were read. The store's status.
  absl::Status StoreLoaded(std::string_view key, const StoredKeys& keys, const Bytes& bytes,
                           std::string_view compressed, const Epochs& epochs) {
    Add(counters_.puts);
    ScopedTimer timer(&put_latency_);
    Add(counters_.bytes_put_raw, bytes->size());
    absl::StatusOr<Manifest> stored = Store(keys, bytes->size(), compressed);
    if (!stored.ok()) {
      Add(counters_.put_errors);
      log_.Warn(RateLimitedLog::kStore, [&] {
        return absl::StrCat("chunkcache: storing the loaded value of ", keys.manifest(),
                            " failed: ", stored.status().ToString());
      });
      return stored.status();
    }
    if (l1_ != nullptr) {
      const Found found{bytes, stored->generation, absl::FromUnixMillis(stored->created_unix_ms),
                        false, stored->checksum};
      l1_->Insert(key, L1Entry(found, Now()), epochs.l1, /*is_write=*/true);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> CallLoader(const Loader& loader) {
    Add(counters_.loads);
    ScopedTimer timer(&load_latency_);
    absl::StatusOr<std::string> loaded = [&]() -> absl::StatusOr<std::string> {
      try {
        return loader();
      } catch (const std::bad_alloc&) {
        return absl::ResourceExhaustedError("chunkcache: the loader ran out of memory");
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

  // Queues one background refresh of `key` unless one is queued or running already, or the key's
  // refreshes are backing off (a failure, or another process holding its lease).
  void ScheduleRefresh(std::string_view key, const Loader& loader) {
    if (refresh_memo_.Deferred(key, Now())) {
      Add(counters_.refreshes_deferred);
      return;
    }
    internal::MutexLock lock(&refresh_mu_);
    AdoptRefreshesAfterForkLocked();
    if (stopping_ || refreshing_.contains(absl::string_view(key.data(), key.size()))) return;
    // Again under the lock: a refresh that ended since the check above backed off before it
    // unmarked the key (a stale read racing it must not queue another one at once).
    if (refresh_memo_.Deferred(key, Now())) {
      Add(counters_.refreshes_deferred);
      return;
    }
    if (refresh_queue_.size() >= options_.max_queued_refreshes) {
      Add(counters_.refreshes_dropped);
      return;
    }
    if (refresh_threads_.size() < static_cast<std::size_t>(options_.refresh_threads)) {
      try {
        refresh_threads_.emplace_back([this] { RefreshLoop(); });
      } catch (...) {  // std::system_error: no thread could be started
        if (refresh_threads_.empty()) {
          Add(counters_.refreshes_dropped);
          log_.Warn(RateLimitedLog::kRefresh, [] {
            return "chunkcache: no refresh thread could be started; the stale entry is served "
                   "until its ttl";
          });
          return;  // nothing marked: a later stale hit tries again
        }
      }
    }
    refreshing_.insert(std::string(key));
    refresh_queue_.push_back({std::string(key), loader});
    refresh_cv_.SignalAll();
  }

  // A forked child inherits the parent's refresh state but none of its threads: it forgets them
  // (never joining a thread of another process) and the keys they were refreshing.
  void AdoptRefreshesAfterForkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(refresh_mu_) {
    const pid_t pid = getpid();
    if (pid == refresh_pid_) return;
    refresh_pid_ = pid;
    for (std::thread& thread : refresh_threads_) thread.detach();
    refresh_threads_.clear();
    refreshing_.clear();
    refresh_queue_.clear();
  }

  void RefreshLoop() {
    while (true) {
      std::unique_ptr<RefreshTask> task;
      {
        internal::MutexLock lock(&refresh_mu_);
        while (!stopping_ && refresh_queue_.empty()) refresh_cv_.Wait(&refresh_mu_);
        if (stopping_) return;
        task = std::make_unique<RefreshTask>(std::move(refresh_queue_.front()));
        refresh_queue_.pop_front();
      }
      RunRefresh(*task);
      {
        internal::MutexLock lock(&refresh_mu_);
        refreshing_.erase(task->key);
      }
      // The task's loader may hold the last reference to this cache (a loader capturing a
      // shared_ptr to it): destroy it with no lock held, and if that destroyed the cache, touch
      // nothing of it any more.
      task.reset();
      if (tls_cache_destroyed_on_this_thread) return;
    }
  }

  // A refresh never lets anything escape to the thread: an exception (the loader's, the log
  // sink's, std::bad_alloc) is an error of that refresh, counted and backed off.
  void RunRefresh(const RefreshTask& task) {
    absl::Status status;
    try {
      status = Refresh(task);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("chunkcache: a refresh threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("chunkcache: a refresh threw a non-standard exception");
    }
    if (status.ok()) return;
    Add(counters_.refresh_errors);
    refresh_memo_.Failed(task.key, status, Now());
    log_.Warn(RateLimitedLog::kRefresh, [&] {
      return absl::StrCat(
          "chunkcache: the background refresh of a stale entry failed; it is served until its "
          "ttl: ",
          status.ToString());
    });
  }

  // OK if the key was refreshed, found fresh already, or left to the process holding its lease.
  absl::Status Refresh(const RefreshTask& task) {
    const StoredKeys keys(options_.key_prefix, task.key);
    // Someone may have refreshed the entry since it was found stale: another process, or this
    // one before the near copy caught up. Then there is nothing to load.
    absl::StatusOr<std::optional<Manifest>> current = ReadManifest(keys);
    if (!current.ok()) return current.status();  // it could not be stored either
    if (current->has_value() &&
        Now() - absl::FromUnixMillis((*current)->created_unix_ms) < options_.soft_ttl) {
      Add(counters_.refreshes_skipped);
      refresh_memo_.Clear(task.key);
      DropOlderNearCopy(task.key, **current);
      return absl::OkStatus();
    }
    // With a lease, one process of the fleet refreshes a key; the others keep serving, and do
    // not try again before that lease could have ended.
    const bool leasing = options_.lease_ttl > absl::ZeroDuration() &&
                         !lease_unsupported_.load(std::memory_order_relaxed);
    bool held = false;
    if (leasing) {
      absl::StatusOr<bool> taken = TakeLease(keys.Lease());
      if (taken.ok() && !*taken) {
        Add(counters_.refreshes_dropped);
        const absl::Time now = Now();
        refresh_memo_.Defer(task.key, now, now + options_.lease_ttl);
        return absl::OkStatus();
      }
      held = taken.ok();  // on an error, refresh without it
    }
    absl::Status status = RefreshUnderLease(task, keys);
    if (held) ReleaseLease(keys);
    if (status.ok()) refresh_memo_.Clear(task.key);
    return status;
  }

  absl::Status RefreshUnderLease(const RefreshTask& task, const StoredKeys& keys) {
    Add(counters_.refreshes);
    const Epochs epochs = EpochsOf(task.key);
    absl::StatusOr<std::string> loaded = CallLoader(task.loader);
    if (!loaded.ok()) return loaded.status();
    absl::StatusOr<CompressedBuffer> encoded = Encode(*loaded);
    if (!encoded.ok()) return encoded.status();
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    return StoreLoaded(task.key, keys, bytes, encoded->view(), epochs);
  }

  // The near copy of `key`, if it is of another entry than `current`, is dropped: the next read
  // fetches the current one.
  void DropOlderNearCopy(std::string_view key, const Manifest& current) {
    if (l1_ == nullptr) return;
    std::optional<internal::NearCache::Entry> copy = l1_->Lookup(key);
    if (copy.has_value() &&
        (copy->generation != current.generation || copy->checksum != current.checksum)) {
      l1_->Erase(key);
    }
  }

  void ReleaseLease(const StoredKeys& keys) {
    const std::string lease_key = keys.Lease();
    const std::string_view lease_view = lease_key;
    BackendDelete({&lease_view, 1}).IgnoreError();  // else it expires with lease_ttl
  }

  void StopRefreshes() {
    std::vector<std::thread> threads;
    std::deque<RefreshTask> queued;
    {
      internal::MutexLock lock(&refresh_mu_);
      AdoptRefreshesAfterForkLocked();
      stopping_ = true;
      queued.swap(refresh_queue_);
      threads.swap(refresh_threads_);
      refresh_cv_.SignalAll();
    }
    queued.clear();  // loaders destroyed with no lock held
    for (std::thread& thread : threads) {
      if (thread.get_id() == std::this_thread::get_id()) {
        // The last reference went with a refresh task on this very thread: it cannot join
        // itself; it returns as soon as this destructor is done, touching nothing of the cache.
        thread.detach();
        tls_cache_destroyed_on_this_thread = true;
      } else {
        thread.join();  // waits for a refresh under way
      }
    }
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
    absl::StatusOr<CompressedBuffer> compressed = Encode(json);
    if (!compressed.ok()) return compressed.status();
    Add(counters_.bytes_put_raw, json.size());
    return Store(keys, json.size(), compressed->view());
  }

  // The payload's own checks (size, JSON) and its compressed form: nothing here asks the backend.
  absl::StatusOr<CompressedBuffer> Encode(std::string_view json) {
    if (absl::Status s = CheckSize(json); !s.ok()) return s;
    return ValidateAndCompress(json);
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

    // The header EncodeManifest writes (the current version's) plus the payload, in one item.
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

    const std::string manifest_bytes = internal::EncodeManifest(
        manifest, keys.manifest(), fits_inline ? stored : std::string_view());
    const KeyValue manifest_item{keys.manifest(), manifest_bytes};
    if (absl::Status s = BackendSet({&manifest_item, 1}, options_.ttl); !s.ok()) {
      // Only a definite refusal means nothing refers to the new chunks. After an outcome the
      // client cannot know (a timeout, a lost connection), the manifest may have been written:
      // deleting its chunks would break the entry; they are left to expire instead.
      if (!IsAmbiguous(s)) DeleteChunks(keys, manifest);
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
    if (const absl::Time deadline = CallDeadline();
        deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          "chunkcache: the call's deadline passed before the backend was asked");
    }
    const bool breaker = options_.breaker_failure_threshold > 0;
    const Gate gate = breaker ? PassBreaker(Now()) : Gate::kClosed;
    if (gate == Gate::kReject) {
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
    if (breaker) RecordOutcome(StatusOf(result), gate == Gate::kProbe);
    return result;
  }

  void CountBackendError(const absl::Status& status) {
    Add(counters_.backend_errors);
    const auto code = static_cast<std::size_t>(status.code());
    if (code < counters_.backend_errors_by_code.size()) {
      Add(counters_.backend_errors_by_code[code]);
    }
  }

  // Closed: calls pass. Open: calls are rejected until the cool-down ends. Half-open (after it):
  // exactly one call, the probe, passes; the others are rejected until its outcome closes the
  // breaker (success) or opens it again (failure).
  enum class Gate { kClosed, kProbe, kReject };

  Gate PassBreaker(absl::Time now) {
    if (failures_in_a_row_.load(std::memory_order_relaxed) < options_.breaker_failure_threshold) {
      return Gate::kClosed;
    }
    if (absl::ToUnixNanos(now) < breaker_open_until_ns_.load(std::memory_order_relaxed)) {
      return Gate::kReject;
    }
    return probe_in_flight_.exchange(true, std::memory_order_acq_rel) ? Gate::kReject
                                                                      : Gate::kProbe;
  }

  bool BreakerOpen(absl::Time now) const {
    return failures_in_a_row_.load(std::memory_order_relaxed) >=
               options_.breaker_failure_threshold &&
           (absl::ToUnixNanos(now) < breaker_open_until_ns_.load(std::memory_order_relaxed) ||
            probe_in_flight_.load(std::memory_order_relaxed));
  }

  // Counts failures in a row; the threshold-th opens the breaker, and so does a failed probe.
  void RecordOutcome(const absl::Status& status, bool probe) {
    if (!IsBackendFailure(status)) {
      failures_in_a_row_.store(0, std::memory_order_relaxed);
      if (probe) probe_in_flight_.store(false, std::memory_order_release);
      return;
    }
    const int failures = failures_in_a_row_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (probe || failures >= options_.breaker_failure_threshold) {
      breaker_open_until_ns_.store(absl::ToUnixNanos(Now() + options_.breaker_cooldown),
                                   std::memory_order_relaxed);
      Add(counters_.breaker_opens);
      log_.Warn(RateLimitedLog::kBreaker, [&] {
        return absl::StrCat("chunkcache: circuit breaker open for ",
                            absl::FormatDuration(options_.breaker_cooldown), " after ", failures,
                            " backend failures in a row; last: ", status.ToString());
      });
    }
    if (probe) probe_in_flight_.store(false, std::memory_order_release);
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
  std::atomic<bool> probe_in_flight_{false};  // the half-open breaker's one call is under way
  Counters counters_;
  internal::LatencyHistogram get_latency_, get_or_load_latency_, put_latency_, load_latency_,
      backend_latency_;
  RateLimitedLog log_;
  internal::LoadMemo load_memo_;     // failed loads backing off, unstored values held
  internal::LoadMemo refresh_memo_;  // refreshes backing off (failures, leases held elsewhere)

  internal::Mutex refresh_mu_;
  internal::CondVar refresh_cv_;
  bool stopping_ ABSL_GUARDED_BY(refresh_mu_) = false;
  std::deque<RefreshTask> refresh_queue_ ABSL_GUARDED_BY(refresh_mu_);
  absl::flat_hash_set<std::string> refreshing_ ABSL_GUARDED_BY(refresh_mu_);  // queued or running
  std::vector<std::thread> refresh_threads_ ABSL_GUARDED_BY(refresh_mu_);
  pid_t refresh_pid_ ABSL_GUARDED_BY(refresh_mu_) = getpid();  // the process owning the threads
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
