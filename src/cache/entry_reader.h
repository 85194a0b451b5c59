// Reading stored entries (docs/FORMAT.md, "Reading"): fetch the manifest, check it against this
// cache's limits, fetch the chunks in batches, verify them against the checksum, decode. A chunk
// missing because a writer replaced the entry meanwhile (a torn read) starts the read over, up to
// kMaxReadAttempts times; an entry found corrupt is a miss (NotFound), counted in corrupt_reads
// and logged. Chunks are taken as the backend hands them over (Backend::MultiGetEach) and cut
// into the payload's frames, each verified against its checksum as soon as its bytes are all
// there, then handed to a FrameConsumer: Read decodes them into one buffer (in parallel with
// decode_workers), a stream hands them on. Also the operators' view of an entry (Inspect) and the
// undecoded bytes (ReadCompressed).
//
//   internal::EntryReader reader(options, backend, codec, counters, log);
//   absl::StatusOr<internal::Found> found = reader.Read(StoredKeys(prefix, key), nullptr);
//
// The reader knows nothing of the near cache beyond the copy it may be handed (`known`), and
// writes nothing.
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_
#define CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/counters.h"
#include "cache/guarded_backend.h"
#include "cache/near_cache.h"
#include "cache/rate_limited_log.h"
#include "chunkcache/chunked_cache.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "internal/worker_pool.h"

namespace chunkcache::internal {

// How often a read starts over because a writer replaced the entry under it.
inline constexpr int kMaxReadAttempts = 4;

// A payload a read found, and where it came from.
struct Found {
  Bytes bytes;
  std::uint64_t generation = 0;
  absl::Time created;          // when the entry was written
  bool from_l1 = false;        // the near cache's bytes (fresh, or confirmed by the manifest)
  std::uint64_t checksum = 0;  // of the stored entry
};

// The compressed bytes of one frame, verified against its checksum: one part, or several when
// the frame straddles chunks. `owners` keep the parts valid.
struct FrameBytes {
  absl::InlinedVector<std::string_view, 2> parts;
  absl::InlinedVector<std::shared_ptr<const void>, 2> owners;
};

// What a read does with an entry's frames as they arrive (Get decodes them into one buffer,
// GetStream hands them to its caller, GetCompressed keeps them whole).
class FrameConsumer {
 public:
  virtual ~FrameConsumer() = default;
  // A manifest was read; its frames follow, in order. Called again if the read starts over.
  virtual absl::Status Begin(const Manifest& manifest) = 0;
  // Frame `index`, verified. An error stops the read; `corrupt` set means the bytes failed a
  // check (the entry is then a corrupt miss) rather than the consumer refusing them.
  virtual absl::Status Frame(std::size_t index, FrameBytes bytes, bool& corrupt) = 0;
  // The read must start over (a writer replaced the entry under it). False if the consumer cannot
  // take it back (output went out): the read then ends with NotFound.
  virtual bool Restart() = 0;
  // After the last frame: errors found by work the consumer left running, `corrupt` as in Frame.
  virtual absl::Status Finish(bool& /*corrupt*/) { return absl::OkStatus(); }
};

// How a Stream ended.
struct StreamOutcome {
  absl::Status status;  // as Read's, or the sink's error
  bool began = false;   // some output reached the sink
  bool known = false;   // the manifest named the near copy: nothing was handed over
  Manifest manifest;    // the entry's, when one was read
};

class EntryReader {
 public:
  // Every argument must outlive the reader. `pool` (may be null) lends options.decode_workers
  // threads to Read.
  EntryReader(const CacheOptions& options, GuardedBackend& backend, Codec& codec,
              CacheCounters& counters, RateLimitedLog& log, WorkerPool* pool = nullptr);
  EntryReader(const EntryReader&) = delete;
  EntryReader& operator=(const EntryReader&) = delete;

  // The decoded payload. NotFound on a miss or a corrupt entry (counted); the backend's error if
  // it failed. With `known` (a near copy), a manifest naming its generation and checksum returns
  // its bytes without fetching chunks. Frames are decoded as their chunks arrive, on the calling
  // thread and up to decode_workers pool threads.
  absl::StatusOr<Found> Read(const StoredKeys& keys, const NearCache::Entry* known);

  // Decodes the entry frame by frame, handing each frame's bytes to `sink` in order once the frame
  // is verified and decoded. With `known`, a manifest naming its generation and checksum ends the
  // read with nothing handed over (StreamOutcome::known: the caller has the bytes).
  StreamOutcome Stream(const StoredKeys& keys, const NearCache::Entry* known,
                       const PieceSink& sink);

  // Hands the entry's frames to `consumer` as their bytes arrive, each verified first. With
  // `known`, a manifest naming its generation and checksum ends the read (true) before any frame.
  // NotFound on a miss or a corrupt entry (counted), or when the entry was replaced after the
  // consumer could no longer start over; the backend's error; the consumer's.
  // `found_corrupt` (may be null) is set when the entry was found corrupt.
  absl::StatusOr<bool> ReadFrames(const StoredKeys& keys, const NearCache::Entry* known,
                                  FrameConsumer& consumer, Manifest& manifest,
                                  bool* found_corrupt = nullptr);

  // The stored payload (zstd frames), each frame verified and checked to start like one, not
  // decoded. Counts misses and compressed_gets.
  absl::StatusOr<CompressedPayload> ReadCompressed(const StoredKeys& keys);

  // ChunkedCache::Inspect: fetches every chunk, decodes nothing.
  absl::StatusOr<EntryInfo> Inspect(const StoredKeys& keys);

  // The current manifest; nothing if it is absent or unreadable (corrupt); the backend's error.
  absl::StatusOr<std::optional<Manifest>> ReadManifest(const StoredKeys& keys);

  // The current manifest, or nothing if it is absent, unreadable or the backend failed.
  std::optional<Manifest> ReadManifestQuietly(const StoredKeys& keys);

  // Counts and logs a corrupt entry (naming its logical key); the NotFound it is answered with.
  absl::Status CorruptMiss(const StoredKeys& keys, const absl::Status& why);

 private:
  enum class Chunks { kComplete, kReplaced };
  // `corrupt` is set when the error it returns is the entry's fault.
  absl::StatusOr<Chunks> StreamChunks(const StoredKeys& keys, const Manifest& manifest,
                                      FrameConsumer& consumer, bool& corrupt);
  absl::StatusOr<std::optional<ItemView>> GetItem(std::string_view key);
  bool ManifestChanged(const StoredKeys& keys, const Manifest& manifest);
  absl::StatusOr<DecodedManifest> DecodeStoredManifest(const StoredKeys& keys,
                                                       std::string_view bytes) const;

  const CacheOptions& options_;
  GuardedBackend& backend_;
  Codec& codec_;
  CacheCounters& counters_;
  RateLimitedLog& log_;
  WorkerPool* const pool_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_ENTRY_READER_H_
