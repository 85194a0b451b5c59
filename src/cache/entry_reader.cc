#include "cache/entry_reader.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"

namespace chunkcache::internal {
namespace {

// Bytes of chunk keys that Inspect lists (a few thousand chunks of the longest keys, tens of
// thousands of usual ones); an entry with more chunks reports their count only.
constexpr std::size_t kMaxListedChunkKeyBytes = std::size_t{4} << 20;

// Bytes of chunk keys one read asks the backend for at a time (docs/FORMAT.md).
constexpr std::size_t kMaxChunkKeyBytesPerCall = std::size_t{256} << 10;

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

}  // namespace

std::vector<std::string_view> Fetched::Parts() const {
  if (manifest.is_inline()) return {std::string_view(manifest_bytes).substr(inline_offset)};
  std::vector<std::string_view> parts;
  parts.reserve(chunks.size());
  for (const std::optional<std::string>& chunk : chunks) parts.push_back(*chunk);
  return parts;
}

EntryReader::EntryReader(const CacheOptions& options, GuardedBackend& backend, Codec& codec,
                         CacheCounters& counters, RateLimitedLog& log)
    : options_(options), backend_(backend), codec_(codec), counters_(counters), log_(log) {}

absl::StatusOr<Found> EntryReader::Read(const StoredKeys& keys, const NearCache::Entry* known) {
  absl::StatusOr<Fetched> fetched = Fetch(keys, known);
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

absl::StatusOr<Fetched> EntryReader::Fetch(const StoredKeys& keys, const NearCache::Entry* known) {
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    Fetched fetched;
    absl::StatusOr<std::optional<std::string>> manifest_bytes = backend_.Get(keys.manifest());
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
    if (Checksum(fetched.Parts()) != manifest.checksum) {
      return CorruptMiss(absl::DataLossError("chunkcache: checksum mismatch"));
    }
    return fetched;
  }
  return absl::NotFoundError(
      "chunkcache: the entry kept changing while it was read; treated as a miss");
}

// In batches whose keys add up to about kMaxChunkKeyBytesPerCall, each checked before the next is
// asked for: whatever a manifest claims, a read holds at most its verified chunks (bounded by the
// payload limit) and one batch of keys. False if a chunk is missing because a writer replaced the
// entry meanwhile (start over); a corrupt miss if it is missing otherwise or has the wrong size.
absl::StatusOr<bool> EntryReader::FetchChunks(const StoredKeys& keys, const Manifest& manifest,
                                              Values& chunks) {
  chunks.clear();
  std::vector<std::string> batch;
  for (std::uint32_t next = 0; next < manifest.chunk_count;) {
    next = ChunkKeyBatch(keys, manifest, next, batch);
    const std::vector<std::string_view> views(batch.begin(), batch.end());
    absl::StatusOr<Values> got = backend_.MultiGet(views);
    if (!got.ok()) return got.status();
    Add(counters_.chunks_read, got->size());
    for (std::optional<std::string>& chunk : *got) {
      const auto index = static_cast<std::uint32_t>(chunks.size());
      if (!chunk.has_value()) {
        if (ManifestChanged(keys, manifest)) return false;
        return CorruptMiss(absl::DataLossError(
            absl::StrFormat("chunkcache: chunk %d of %d is missing", index, manifest.chunk_count)));
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

absl::StatusOr<CompressedPayload> EntryReader::ReadCompressed(const StoredKeys& keys) {
  absl::StatusOr<Fetched> fetched = Fetch(keys, nullptr);
  if (!fetched.ok()) {
    if (absl::IsNotFound(fetched.status())) Add(counters_.misses);
    return fetched.status();
  }
  auto zstd = std::make_shared<std::string>();
  zstd->reserve(fetched->manifest.stored_size);
  for (std::string_view part : fetched->Parts()) zstd->append(part);
  // Not decoded here, so at least the start must be a zstd frame (not, say, a skippable one).
  if (absl::Status s = CheckZstdFrameStart(*zstd); !s.ok()) {
    Add(counters_.misses);
    return CorruptMiss(s);
  }
  Add(counters_.compressed_gets);
  return CompressedPayload{std::move(zstd), fetched->manifest.raw_size};
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
  info.checksum_ok =
      info.complete && Checksum(parts) == manifest.checksum && StartsZstdFrame(parts);
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

absl::Status EntryReader::CorruptMiss(const absl::Status& why) {
  Add(counters_.corrupt_reads);
  log_.Warn(RateLimitedLog::kCorrupt, [&] {
    return absl::StrCat("chunkcache: a corrupt entry was read as a miss: ", why.message());
  });
  return absl::NotFoundError(absl::StrCat(why.message(), "; entry treated as a miss"));
}

}  // namespace chunkcache::internal
