// chunkcache/chunked_cache.h — a cache of large JSON documents over small-item stores.
//
// ChunkedCache validates a JSON payload, compresses it with zstd, and stores it through a Backend
// as one small manifest plus chunks no larger than the backend's item limit; reads fetch the
// chunks in one batch, verify them and decode them into one buffer. GetOrLoad makes concurrent
// callers of a cold key share a single origin load (single-flight).
//
//   auto cache = chunkcache::ChunkedCache(chunkcache::NewMemoryBackend());
//   absl::StatusOr<chunkcache::Bytes> doc = cache.GetOrLoad("catalogue", [] {
//     return FetchCatalogueFromOrigin();  // absl::StatusOr<std::string>
//   });
//
// Thread safety: a ChunkedCache is safe for concurrent use by any number of threads.
// The stored format is described in docs/FORMAT.md.

#ifndef CHUNKCACHE_CHUNKED_CACHE_H_
#define CHUNKCACHE_CHUNKED_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"
#include "chunkcache/options.h"
#include "chunkcache/stats.h"

namespace chunkcache {

// An immutable payload. Callers that coalesced on one load share it without copying.
using Bytes = std::shared_ptr<const std::string>;

// The stored, compressed form of a payload: a standard zstd stream of one or more frames
// (`zstd -d` gives the JSON), each frame verified against its checksum. For services that answer
// with Content-Encoding: zstd.
struct CompressedPayload {
  Bytes zstd;                  // the zstd frames
  std::uint64_t raw_size = 0;  // size of the JSON it decodes to
};

// What is stored under a key, for operators (`chunkcache inspect`, `chunkcache verify`).
struct ChunkInfo {
  std::string key;                         // the backend key of the chunk
  std::size_t expected_size = 0;           // its size according to the manifest
  std::optional<std::size_t> actual_size;  // its size in the backend; empty if it is missing
};
struct EntryInfo {
  std::string manifest_key;       // the backend key of the manifest
  std::size_t manifest_size = 0;  // bytes of the manifest item (with an inline payload)
  int format_version = 0;         // the entry's stored format version (docs/FORMAT.md); this
                                  // library writes 3 and reads 1 to 3
  std::uint64_t generation = 0;   // the version's id; chunk keys carry it
  std::uint64_t raw_size = 0;     // JSON bytes
  std::uint64_t stored_size = 0;  // compressed bytes
  std::uint32_t chunk_size = 0;   // every chunk but the last
  std::uint64_t checksum = 0;     // XXH3-64 of the frame table (format version 3) or of the
                                  // compressed bytes (earlier versions)
  absl::Time created;             // when it was written
  bool is_inline = false;         // the payload sits in the manifest: no chunks
  std::uint32_t chunk_count = 0;  // chunks the manifest names
  std::uint64_t frame_size = 0;   // raw bytes of every zstd frame but the last (one frame before
                                  // format version 3: the raw size)
  std::size_t frame_count = 0;    // independent zstd frames in the payload
  std::vector<ChunkInfo> chunks;  // in order: all, or as many as 4 MiB of keys describe
  bool complete = false;          // every chunk present with its expected size
  bool checksum_ok = false;       // complete, every frame matches its checksum and begins a
                                  // zstd frame: what a read accepts before decoding
};

// Produces the JSON text of a key from the origin. It may be called from any thread; it may
// return an error (passed to the callers waiting on it, never stored, and held back for a short
// backoff: see CacheOptions::load_retry_initial) and should not throw (an exception is caught and
// becomes an Internal status, std::bad_alloc ResourceExhausted).
//
// Lifetime: with soft_ttl set, GetOrLoad keeps a copy of its loader for a background refresh that
// may run after GetOrLoad returned, until the ChunkedCache is destroyed (the destructor waits for
// a refresh under way and drops queued ones). Capture by value, or only what outlives the cache.
// A loader may hold a std::shared_ptr to its own cache: if a refresh task ends up holding the
// last reference, the cache is destroyed on the refresh thread, which then ends.
using Loader = std::function<absl::StatusOr<std::string>()>;

// Receives the JSON of a GetStream, piece by piece, in order. The piece is valid only during the
// call. An error it returns stops the read and is what GetStream returns.
using PieceSink = std::function<absl::Status(std::string_view piece)>;

// Settings of one call.
struct CallOptions {
  // The caller's own deadline (its request's, a Lambda invocation's). A call that starts past it
  // fails at once with DeadlineExceeded; a GetOrLoad caller waiting for another caller's load
  // gives up at it (DeadlineExceeded), and a wait for another process's lease ends at it (the
  // caller then loads). Backend calls keep their own timeouts and a running loader is not
  // interrupted. Default: none (absl::InfiniteFuture()).
  absl::Time deadline = absl::InfiniteFuture();
};

class ChunkedCache {
 public:
  // `backend` must not be null; it is shared, and may be shared with other caches. With a null
  // backend, or options that fail ValidateCacheOptions, every operation returns InvalidArgument.
  explicit ChunkedCache(std::shared_ptr<Backend> backend, CacheOptions options = {});
  ~ChunkedCache();

  ChunkedCache(ChunkedCache&&) noexcept;
  ChunkedCache& operator=(ChunkedCache&&) noexcept;
  ChunkedCache(const ChunkedCache&) = delete;
  ChunkedCache& operator=(const ChunkedCache&) = delete;

  // Returns the payload stored under `key`.
  // NotFound on a miss, including an entry found corrupt (counted in corrupt_reads);
  // InvalidArgument for a bad key or options; the backend's error if it failed.
  absl::StatusOr<Bytes> Get(std::string_view key);
  absl::StatusOr<Bytes> Get(std::string_view key, const CallOptions& call);

  // Returns the payload stored under `key`; on a miss, calls `loader` once however many callers
  // are waiting for the same key in this process, stores its result and hands it to all of them.
  // A backend failure is answered through the loader rather than failing the caller (the
  // loaded value is then not stored if the backend was unreachable: Unavailable or
  // DeadlineExceeded); if storing the loaded value fails (whatever the backend's reason), the
  // callers still get it, and it answers the key's callers in this process for unstored_hold
  // without another load. Errors: the loader's error, which is not stored, and answers the key's
  // callers in this process until its backoff passes (load_retry_initial .. load_retry_max);
  // Internal if it threw; InvalidArgument or ResourceExhausted if it produced invalid JSON or an
  // oversize payload; DeadlineExceeded for a caller that waited longer than load_wait_timeout for
  // another caller's load.
  //
  // After a Put or Invalidate of `key` by this process returns, no GetOrLoad (or Get) in this
  // process returns what was stored, read or loaded before it: callers arriving later do not join
  // a load that was under way, and nothing that load found enters the near cache.
  absl::StatusOr<Bytes> GetOrLoad(std::string_view key, Loader loader);
  absl::StatusOr<Bytes> GetOrLoad(std::string_view key, Loader loader, const CallOptions& call);

  // Hands the payload stored under `key` to `sink` in order, frame by frame (a frame is
  // CacheOptions::frame_size bytes of JSON, 2 MiB by default): each frame's stored bytes are
  // verified against their checksum and decoded before any of its bytes reach the sink, and the
  // first frame is decoded while later chunks are still being fetched. A near-cache copy that is
  // fresh (or confirmed by the manifest) goes out as one piece. What a stream reads does not
  // enter the near cache, and a miss does not load: pair it with GetOrLoad for that. Decoding
  // runs on the calling thread (decode_workers are not used); it holds one frame and about one
  // chunk at a time, however large the entry.
  //
  // Errors, before any piece went out: as Get (NotFound for a miss or a corrupt entry, the
  // backend's error). After some pieces went out, the stream stops and reports why, and the
  // caller must discard what it received (it was verified, but it is not the whole payload):
  // DataLoss if a later frame or chunk was corrupt (counted in corrupt_reads), NotFound if the
  // entry was replaced or removed meanwhile, the backend's error if it failed. The sink's own
  // error is returned as it is (a sink that throws: Internal). Thread safety as every call.
  absl::Status GetStream(std::string_view key, const PieceSink& sink, const CallOptions& call = {});

  // Returns the stored zstd bytes of `key` without decoding them (an L1 entry is not used: it
  // holds decoded bytes). Errors as Get.
  absl::StatusOr<CompressedPayload> GetCompressed(std::string_view key);

  // Describes what is stored under `key`: the manifest's fields, each chunk's presence and size,
  // and whether the stored bytes match the checksum (all chunks are fetched; nothing is decoded).
  // NotFound if there is no manifest; DataLoss if the manifest cannot be decoded or was written
  // under another key; the backend's error if it failed.
  absl::StatusOr<EntryInfo> Inspect(std::string_view key);

  // Stores `json` under `key`, replacing any previous value; readers see the old value or the
  // new one, never a mix. On error, readers see either the old value or the complete new one,
  // never a broken entry:
  //  - InvalidArgument (invalid JSON, a bad key or options) or ResourceExhausted (a payload over
  //    max_payload_size): checked before anything is written; nothing changes.
  //  - A definite refusal by the backend (e.g. ResourceExhausted for a store out of memory,
  //    PermissionDenied): the old value stays; the new chunks written are deleted.
  //  - An outcome the client cannot know (DeadlineExceeded, Unavailable, a lost connection,
  //    Internal): the manifest write may or may not have been applied, so readers see the old
  //    value or the complete new one; chunks that nothing refers to expire with ttl +
  //    chunk_ttl_grace. Retrying the Put is safe.
  // In every case this process's near cache and held load results for `key` are dropped.
  absl::Status Put(std::string_view key, std::string_view json);

  // Removes `key`: its manifest, then (best effort) its chunks. Absent keys are not an error.
  // Whatever the outcome, this process's near copy and held load results for `key` are dropped
  // once the manifest delete has been attempted.
  absl::Status Invalidate(std::string_view key);

  // Counters and latency figures since construction.
  CacheStats Stats() const;

  // The options in force (as given to the constructor).
  const CacheOptions& options() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkcache

#endif  // CHUNKCACHE_CHUNKED_CACHE_H_
