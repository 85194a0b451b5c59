// ChunkedCache: the public face, composed of the parts in this folder.
//
//   options_check    the configuration's ranges (ValidateCacheOptions) and the backend's
//   guarded_backend  every backend call: deadline, circuit_breaker, counting, exceptions
//   entry_reader     fetch, verify, torn-read retry, decode; Inspect
//   entry_writer     check, compress, store, replace; generation ids
//   l1_policy        when the near_cache answers, what reads and stores leave in it
//   single_flight    one load per key in this process; load_memo what a failed or unstored load
//                    leaves for the next callers
//   lease            one load per key across processes
//   refresher        stale-while-revalidate: the queue and threads of background refreshes
//   counters         CacheStats' counters and histograms; rate_limited_log the warnings
//
// What stays here is the order of things: a read through the near cache, a miss through the
// load memo, the lease and the loader into the writer, a stale hit into the refresher.

#include "chunkcache/chunked_cache.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/entry_reader.h"
#include "cache/entry_writer.h"
#include "cache/exception_status.h"
#include "cache/guarded_backend.h"
#include "cache/l1_policy.h"
#include "cache/lease.h"
#include "cache/load_memo.h"
#include "cache/options_check.h"
#include "cache/rate_limited_log.h"
#include "cache/refresher.h"
#include "cache/single_flight.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"

namespace chunkcache {
namespace {

using internal::Add;
using internal::EncodedPayload;
using internal::Found;
using internal::Manifest;
using internal::RateLimitedLog;
using internal::RefreshOutcome;
using internal::RefreshTask;
using internal::ScopedTimer;
using internal::StoredKeys;

// A call whose deadline is this close has run out of it: a backend giving up a little early
// must not make the call start a load it has no time for.
constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(5);

bool IsUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

// The threads compression_workers and decode_workers lend from; none if both are 0.
std::unique_ptr<internal::WorkerPool> MakePool(const CacheOptions& options,
                                               const absl::Status& options_status) {
  const int threads = std::max(options.compression_workers, options.decode_workers);
  if (!options_status.ok() || threads == 0) return nullptr;
  return std::make_unique<internal::WorkerPool>(threads);
}

}  // namespace

class ChunkedCache::Impl {
 public:
  Impl(std::shared_ptr<Backend> backend, CacheOptions options)
      : options_(std::move(options)),
        options_status_(internal::CheckCacheSetup(backend.get(), options_)),
        clock_(options_.clock),
        log_(options_.log),
        backend_(std::move(backend), options_, clock_, counters_, log_),
        chunk_size_(options_status_.ok()
                        ? std::min({options_.chunk_size, backend_.max_item_size(),
                                    std::size_t{std::numeric_limits<std::uint32_t>::max()}})
                        : 0),
        codec_(options_.compression_level, options_.compression_workers),
        pool_(MakePool(options_, options_status_)),
        l1_(options_, clock_, counters_),
        reader_(options_, backend_, codec_, counters_, log_, pool_.get()),
        writer_(options_, chunk_size_, backend_, reader_, codec_, clock_, counters_, pool_.get()),
        leases_(options_, absl::StrFormat("%016x", writer_.NextGeneration()), backend_, reader_,
                clock_, counters_, log_),
        load_memo_({options_.load_retry_initial, options_.load_retry_max, options_.unstored_hold,
                    std::max(options_.l1_capacity_bytes, options_.max_payload_size)}),
        refresher_(
            options_, [this](const RefreshTask& task) { return Refresh(task); }, clock_, counters_,
            log_) {}

  // Background refreshes reference this object: stop them before anything is destroyed.
  ~Impl() { refresher_.Stop(); }

  absl::StatusOr<Bytes> Get(std::string_view key, const CallOptions& call) {
    if (absl::Status s = CheckCall(key, call); !s.ok()) return s;
    if (std::optional<Found> hit = l1_.FreshHit(key); hit.has_value()) {
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
    if (std::optional<Found> hit = l1_.FreshHit(key); hit.has_value()) {
      if (NoteAge(*hit)) refresher_.Schedule(key, loader);
      return std::move(hit->bytes);
    }
    ScopedTimer timer(&counters_.get_or_load_latency);
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

  absl::Status GetStream(std::string_view key, const PieceSink& sink, const CallOptions& call) {
    if (absl::Status s = CheckCall(key, call); !s.ok()) return s;
    if (!sink) return absl::InvalidArgumentError("chunkcache: the sink is empty");
    // The backend calls the sink: an exception must not unwind through it.
    const PieceSink guarded = [&sink](std::string_view piece) {
      return internal::CatchExceptions("the sink", internal::BadAlloc::kResourceExhausted,
                                       [&] { return sink(piece); });
    };
    if (std::optional<Found> hit = l1_.FreshHit(key); hit.has_value()) {
      NoteAge(*hit);
      return guarded(*hit->bytes);
    }
    const ScopedCallDeadline scoped_deadline(call.deadline);  // bounds every backend call
    Add(counters_.gets);
    ScopedTimer timer(&counters_.get_latency);
    const absl::Time now = clock_.Now();
    std::optional<internal::NearCache::Entry> live = l1_.Live(key, now);
    const std::uint64_t epoch = l1_.Epoch(key);
    internal::StreamOutcome streamed =
        reader_.Stream(StoredKeys(options_.key_prefix, key), live ? &*live : nullptr, guarded);
    if (streamed.status.ok() && !streamed.known) {  // streamed whole
      Add(counters_.hits);
      Add(counters_.bytes_returned, streamed.manifest.raw_size);
      l1_.DropIfOlder(key, streamed.manifest);  // a stream leaves no copy: keep none of an older
      return absl::OkStatus();
    }
    if (streamed.began) return streamed.status;  // the caller has part: it must drop it
    // Nothing went out: settle as Get does, the near copy answering if confirmed (or if the
    // backend failed).
    absl::StatusOr<Found> found =
        streamed.known ? absl::StatusOr<Found>(Found{live->bytes, live->generation, live->created,
                                                     true, live->checksum})
                       : absl::StatusOr<Found>(streamed.status);
    l1_.AfterRead(key, found, live, epoch, now);
    if (!found.ok()) {
      if (absl::IsNotFound(found.status())) Add(counters_.misses);
      return found.status();
    }
    Add(counters_.hits);
    Add(counters_.bytes_returned, found->bytes->size());
    NoteAge(*found);
    return guarded(*found->bytes);
  }

  absl::StatusOr<CompressedPayload> GetCompressed(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    return reader_.ReadCompressed(StoredKeys(options_.key_prefix, key));
  }

  absl::StatusOr<EntryInfo> Inspect(std::string_view key) {
    if (absl::Status s = CheckCall(key); !s.ok()) return s;
    return reader_.Inspect(StoredKeys(options_.key_prefix, key));
  }

  absl::Status Put(std::string_view key, std::string_view json) {
    Add(counters_.puts);
    absl::Status status = CheckCall(key);
    if (status.ok()) {
      ScopedTimer timer(&counters_.put_latency);
      status = writer_.EncodeAndStore(StoredKeys(options_.key_prefix, key), json).status();
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
    std::optional<Manifest> current = reader_.ReadManifestQuietly(keys);
    absl::Status deleted = writer_.DeleteManifest(keys);
    // After the delete, not before: a read that starts before the delete could otherwise find
    // the entry still there and put it back into the near cache once this erase is behind it.
    ForgetLocalCopies(key);
    if (!deleted.ok()) return deleted;
    if (current.has_value()) writer_.DeleteChunks(keys, *current);
    return absl::OkStatus();
  }

  CacheStats Stats() const {
    CacheStats stats;
    counters_.Snapshot(stats);
    stats.l1_evictions = l1_.evictions();
    stats.l1_bytes = l1_.bytes();
    stats.breaker_open = backend_.breaker_open();
    return stats;
  }

  const CacheOptions& options() const { return options_; }

 private:
  // The per-key write counts a load reads before it starts: an insert by the load is dropped if
  // this process wrote the key since.
  struct Epochs {
    std::uint64_t l1 = 0;
    std::uint64_t memo = 0;
  };

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

  // After this process wrote `key`: drops the near copy (and holds back inserts by reads and
  // loads already under way), detaches callers arriving from now on from a flight under way, and
  // forgets what an earlier load left to answer with.
  void ForgetLocalCopies(std::string_view key) {
    l1_.Erase(key);
    flights_.Forget(key);
    load_memo_.Clear(key);
  }

  Epochs EpochsOf(std::string_view key) const { return {l1_.Epoch(key), load_memo_.Epoch(key)}; }

  // True (and counted) if `found` is older than soft_ttl: stale, due for a refresh.
  bool NoteAge(const Found& found) {
    if (options_.soft_ttl == absl::ZeroDuration()) return false;
    if (clock_.Now() - found.created < options_.soft_ttl) return false;
    Add(counters_.stale_served);
    return true;
  }

  // A read that goes to the backend: the whole entry, or only its manifest when the near cache
  // holds a copy. Counted and timed.
  absl::StatusOr<Found> Read(std::string_view key, const StoredKeys& keys) {
    Add(counters_.gets);
    ScopedTimer timer(&counters_.get_latency);
    const absl::Time now = clock_.Now();
    std::optional<internal::NearCache::Entry> live = l1_.Live(key, now);
    // An Invalidate or Put from now on makes what this read finds unfit for the near cache.
    const std::uint64_t epoch = l1_.Epoch(key);
    absl::StatusOr<Found> found = reader_.Read(keys, live.has_value() ? &*live : nullptr);
    l1_.AfterRead(key, found, live, epoch, now);
    if (found.ok()) {
      Add(counters_.hits);
      Add(counters_.bytes_returned, found->bytes->size());
    } else if (absl::IsNotFound(found.status())) {
      Add(counters_.misses);
    }
    return found;
  }

  // ---- Loading -------------------------------------------------------------------------------

  absl::StatusOr<Bytes> ReadOrLoad(std::string_view key, const Loader& loader,
                                   absl::Time deadline) {
    const StoredKeys keys(options_.key_prefix, key);
    absl::StatusOr<Found> cached = Read(key, keys);
    if (cached.ok()) {
      if (NoteAge(*cached)) refresher_.Schedule(key, loader);
      return std::move(cached->bytes);
    }
    // What an earlier load of the key left: its failure, while the backoff lasts, or a value the
    // backend would not store. Either answers instead of the origin.
    if (std::optional<absl::StatusOr<Bytes>> held = load_memo_.Answer(key, clock_.Now())) {
      Add(held->ok() ? counters_.unstored_served : counters_.load_backoffs);
      return *std::move(held);
    }
    const bool backend_down = !absl::IsNotFound(cached.status());
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
      // A Put or Invalidate by this process from now on makes what the wait finds unfit for L1.
      const std::uint64_t l1_epoch = l1_.Epoch(key);
      internal::Leases::Outcome lease = leases_.TakeOrAwait(keys, deadline);
      if (lease.found.has_value()) {
        // Kept as a read keeps what it fetched: the next read needs at most the manifest.
        l1_.KeepRead(key, *lease.found, l1_epoch, lease.found_read_at);
        return std::move(lease.found->bytes);
      }
      if (!lease.held && absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            "chunkcache: the call's deadline passed while another process held the key's lease");
      }
      lease_held = lease.held;
    }
    absl::StatusOr<Bytes> result = LoadAndStore(key, keys, loader, cached.status());
    if (lease_held) leases_.Release(keys);
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
      load_memo_.Failed(key, loaded.status(), clock_.Now(), epochs.memo);
      return loaded.status();
    }
    if (IsUnreachable(read_status)) {
      // Storing would most likely cost the caller another timeout for nothing; the next
      // caller's read tells whether the backend is back. The value is still checked.
      if (absl::Status s = writer_.CheckPayload(*loaded); !s.ok()) {
        load_memo_.Failed(key, s, clock_.Now(), epochs.memo);
        return s;
      }
      Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
      load_memo_.Unstored(key, bytes, clock_.Now(), epochs.memo);
      return bytes;
    }
    absl::StatusOr<EncodedPayload> encoded = writer_.Encode(*loaded);
    if (!encoded.ok()) {
      load_memo_.Failed(key, encoded.status(), clock_.Now(), epochs.memo);
      return encoded.status();
    }
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    if (StoreLoaded(key, keys, bytes, *encoded, epochs).ok()) {
      load_memo_.Clear(key);
    } else {
      load_memo_.Unstored(key, bytes, clock_.Now(), epochs.memo);
    }
    return bytes;
  }

  // Stores a loaded and compressed payload, and keeps it in the near cache unless this process
  // wrote the key since `epochs` were read. The store's status.
  absl::Status StoreLoaded(std::string_view key, const StoredKeys& keys, const Bytes& bytes,
                           const EncodedPayload& encoded, const Epochs& epochs) {
    Add(counters_.puts);
    ScopedTimer timer(&counters_.put_latency);
    Add(counters_.bytes_put_raw, bytes->size());
    absl::StatusOr<Manifest> stored = writer_.Store(keys, encoded);
    if (!stored.ok()) {
      Add(counters_.put_errors);
      log_.Warn(RateLimitedLog::kStore, [&] {
        return absl::StrCat("chunkcache: storing the loaded value of ", keys.manifest(),
                            " failed: ", stored.status().ToString());
      });
      return stored.status();
    }
    l1_.KeepStored(key, bytes, *stored, epochs.l1);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> CallLoader(const Loader& loader) {
    Add(counters_.loads);
    ScopedTimer timer(&counters_.load_latency);
    absl::StatusOr<std::string> loaded = internal::CatchExceptions(
        "the loader", internal::BadAlloc::kResourceExhausted, [&] { return loader(); });
    if (!loaded.ok()) Add(counters_.load_errors);
    return loaded;
  }

  // ---- Stale-while-revalidate: what the refresher runs for one key -------------------------

  // OK if the key was refreshed or found fresh already; deferred if another process holds its
  // lease (it is refreshing the key).
  RefreshOutcome Refresh(const RefreshTask& task) {
    const StoredKeys keys(options_.key_prefix, task.key);
    // Someone may have refreshed the entry since it was found stale: another process, or this
    // one before the near copy caught up. Then there is nothing to load.
    absl::StatusOr<std::optional<Manifest>> current = reader_.ReadManifest(keys);
    if (!current.ok()) return {.status = current.status()};  // it could not be stored either
    if (current->has_value() &&
        clock_.Now() - absl::FromUnixMillis((*current)->created_unix_ms) < options_.soft_ttl) {
      Add(counters_.refreshes_skipped);
      l1_.DropIfOlder(task.key, **current);
      return {};
    }
    // With a lease, one process of the fleet refreshes a key; the others keep serving, and do
    // not try again before that lease could have ended.
    bool held = false;
    if (leases_.enabled()) {
      absl::StatusOr<bool> taken = leases_.Take(keys);
      if (taken.ok() && !*taken) {
        Add(counters_.refreshes_lease_held);
        return {.defer_until = clock_.Now() + options_.lease_ttl};
      }
      held = taken.ok();  // on an error, refresh without it
    }
    absl::Status status = RefreshUnderLease(task, keys);
    if (held) leases_.Release(keys);
    return {.status = std::move(status)};
  }

  absl::Status RefreshUnderLease(const RefreshTask& task, const StoredKeys& keys) {
    Add(counters_.refreshes);
    const Epochs epochs = EpochsOf(task.key);
    absl::StatusOr<std::string> loaded = CallLoader(task.loader);
    if (!loaded.ok()) return loaded.status();
    absl::StatusOr<EncodedPayload> encoded = writer_.Encode(*loaded);
    if (!encoded.ok()) return encoded.status();
    Bytes bytes = std::make_shared<const std::string>(*std::move(loaded));
    return StoreLoaded(task.key, keys, bytes, *encoded, epochs);
  }

  const CacheOptions options_;
  const absl::Status options_status_;
  const internal::CacheClock clock_;
  internal::CacheCounters counters_;
  RateLimitedLog log_;
  internal::GuardedBackend backend_;
  const std::size_t chunk_size_;  // effective: min(chunk_size, backend's max_item_size)
  internal::Codec codec_;
  const std::unique_ptr<internal::WorkerPool> pool_;  // null without workers
  internal::SingleFlight flights_;
  internal::L1Policy l1_;
  internal::EntryReader reader_;
  internal::EntryWriter writer_;
  internal::Leases leases_;
  internal::LoadMemo load_memo_;  // failed loads backing off, unstored values held
  internal::Refresher refresher_;
};

// ---- The public face: forwards to Impl, and keeps exceptions from crossing the API. ----------

namespace {

template <typename Call>
auto NoThrow(Call call) -> decltype(call()) {
  return internal::CatchExceptions("the cache", internal::BadAlloc::kResourceExhausted, call);
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

absl::Status ChunkedCache::GetStream(std::string_view key, const PieceSink& sink,
                                     const CallOptions& call) {
  return NoThrow([&] { return impl_->GetStream(key, sink, call); });
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
