// Writing stored entries (docs/FORMAT.md, "Writing"): check a payload (size, JSON), compress it,
// write the chunks of a fresh generation, then the manifest that commits them, then remove the
// chunks of the generation it replaced. A reader sees the old entry or the new one, never a mix.
// Chunks a failed write leaves behind are deleted when nothing can refer to them, else left to
// expire with ttl + chunk_ttl_grace.
//
//   internal::EntryWriter writer(options, chunk_size, backend, reader, codec, clock, counters);
//   absl::StatusOr<internal::Manifest> stored = writer.EncodeAndStore(keys, json);
//
// Thread safety: safe for concurrent use; concurrent writers of one key each leave a whole
// entry, the last manifest written wins.

#ifndef CHUNKCACHE_SRC_CACHE_ENTRY_WRITER_H_
#define CHUNKCACHE_SRC_CACHE_ENTRY_WRITER_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/clock.h"
#include "cache/counters.h"
#include "cache/entry_reader.h"
#include "cache/guarded_backend.h"
#include "chunkcache/options.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "internal/mutex.h"
#include "internal/worker_pool.h"

namespace chunkcache::internal {

// Generation ids: random per instance and process (so processes do not collide, a forked child
// included: it reseeds when it sees its pid change), then a counter scrambled by splitmix64 (so
// one process never repeats itself). Safe for concurrent use.
class GenerationSource {
 public:
  GenerationSource();
  std::uint64_t Next();

 private:
  void Reseed(pid_t pid);

  Mutex reseed_mu_;
  std::atomic<pid_t> pid_{0};
  std::atomic<std::uint64_t> base_{0};
  std::atomic<std::uint64_t> counter_{0};
};

// A payload compressed as independent frames (docs/FORMAT.md, "Payload"), ready to store.
struct EncodedPayload {
  CompressedBuffer stored;  // the frames, concatenated
  std::uint64_t raw_size = 0;
  std::uint64_t frame_size = 0;
  std::vector<Frame> frames;
};

// How a payload of `raw_size` bytes (at least 1) is cut into frames: about `frame_size` raw
// bytes each, evened out, and no more than a manifest of one `chunk_size` item can list. The
// frame size, and the frame count.
struct FramePlan {
  std::uint64_t frame_size = 0;
  std::size_t count = 0;
};
FramePlan PlanFrames(std::uint64_t raw_size, std::size_t frame_size, std::size_t chunk_size);

class EntryWriter {
 public:
  // `chunk_size` is the effective one: min(options.chunk_size, the backend's max_item_size).
  // Every reference must outlive the writer. `pool` (may be null) lends
  // options.compression_workers threads to Encode.
  EntryWriter(const CacheOptions& options, std::size_t chunk_size, GuardedBackend& backend,
              EntryReader& reader, Codec& codec, const CacheClock& clock, CacheCounters& counters,
              WorkerPool* pool = nullptr);
  EntryWriter(const EntryWriter&) = delete;
  EntryWriter& operator=(const EntryWriter&) = delete;

  // A fresh generation id (also a good unique token for this cache).
  std::uint64_t NextGeneration() { return generations_.Next(); }

  // What a stored payload must pass: at most max_payload_size bytes (else ResourceExhausted) and,
  // with validate_json, one JSON document (else InvalidArgument). Nothing is written.
  absl::Status CheckPayload(std::string_view json);

  // The payload's checks and its compressed frames, in parallel on the calling thread and up to
  // compression_workers pool threads, the JSON validated alongside: nothing here asks the
  // backend. An empty payload is InvalidArgument.
  absl::StatusOr<EncodedPayload> Encode(std::string_view json);

  // Stores `payload` as the key's new entry; the manifest that committed it.
  absl::StatusOr<Manifest> Store(const StoredKeys& keys, const EncodedPayload& payload);

  // Encode, then Store; counts bytes_put_raw.
  absl::StatusOr<Manifest> EncodeAndStore(const StoredKeys& keys, std::string_view json);

  // Deletes the key's manifest (absent is not an error).
  absl::Status DeleteManifest(const StoredKeys& keys);

  // Deletes the chunks `manifest` names, best effort: chunks left behind expire with their TTL.
  void DeleteChunks(const StoredKeys& keys, const Manifest& manifest);

 private:
  absl::Status CheckSize(std::string_view json) const;

  const CacheOptions& options_;
  const std::size_t chunk_size_;
  GuardedBackend& backend_;
  EntryReader& reader_;
  Codec& codec_;
  const CacheClock& clock_;
  CacheCounters& counters_;
  WorkerPool* const pool_;
  GenerationSource generations_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_ENTRY_WRITER_H_
