#include "cache/entry_writer.h"

#include <unistd.h>

#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"

namespace chunkcache::internal {
namespace {

// With compression_workers > 0, payloads from this size on are validated on a thread of their
// own while they are compressed; below it a thread costs more than it saves.
constexpr std::size_t kOverlapValidationFrom = std::size_t{1} << 20;

// Outcomes after which a write may or may not have been applied: the client cannot tell.
bool IsAmbiguous(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsInternal(status) || absl::IsUnknown(status) || absl::IsAborted(status) ||
         absl::IsCancelled(status) || absl::IsDataLoss(status);
}

}  // namespace

GenerationSource::GenerationSource() { Reseed(getpid()); }

std::uint64_t GenerationSource::Next() {
  if (const pid_t pid = getpid(); pid != pid_.load(std::memory_order_acquire)) {
    MutexLock lock(&reseed_mu_);
    if (pid != pid_.load(std::memory_order_relaxed)) Reseed(pid);
  }
  std::uint64_t z = base_.load(std::memory_order_relaxed) +
                    0x9e3779b97f4a7c15ULL * counter_.fetch_add(1) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void GenerationSource::Reseed(pid_t pid) {
  std::random_device device;
  base_.store((std::uint64_t{device()} << 32) ^ device() ^ (std::uint64_t(pid) << 16),
              std::memory_order_relaxed);
  pid_.store(pid, std::memory_order_release);
}

EntryWriter::EntryWriter(const CacheOptions& options, std::size_t chunk_size,
                         GuardedBackend& backend, EntryReader& reader, Codec& codec,
                         const CacheClock& clock, CacheCounters& counters)
    : options_(options),
      chunk_size_(chunk_size),
      backend_(backend),
      reader_(reader),
      codec_(codec),
      clock_(clock),
      counters_(counters) {}

absl::Status EntryWriter::CheckSize(std::string_view json) const {
  if (json.size() <= options_.max_payload_size) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrFormat("chunkcache: the payload is %d bytes; max_payload_size is %d", json.size(),
                      options_.max_payload_size));
}

absl::Status EntryWriter::CheckPayload(std::string_view json) {
  if (absl::Status s = CheckSize(json); !s.ok()) return s;
  return options_.validate_json ? codec_.ValidateJson(json) : absl::OkStatus();
}

absl::StatusOr<CompressedBuffer> EntryWriter::Encode(std::string_view json) {
  if (absl::Status s = CheckSize(json); !s.ok()) return s;
  return ValidateAndCompress(json);
}

absl::StatusOr<CompressedBuffer> EntryWriter::ValidateAndCompress(std::string_view json) {
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

absl::StatusOr<Manifest> EntryWriter::EncodeAndStore(const StoredKeys& keys,
                                                     std::string_view json) {
  absl::StatusOr<CompressedBuffer> compressed = Encode(json);
  if (!compressed.ok()) return compressed.status();
  Add(counters_.bytes_put_raw, json.size());
  return Store(keys, json.size(), compressed->view());
}

absl::StatusOr<Manifest> EntryWriter::Store(const StoredKeys& keys, std::size_t raw_size,
                                            std::string_view stored) {
  Manifest manifest;
  manifest.generation = generations_.Next();
  manifest.raw_size = raw_size;
  manifest.stored_size = stored.size();
  manifest.chunk_size = static_cast<std::uint32_t>(chunk_size_);
  manifest.checksum = Checksum({&stored, 1});
  manifest.created_unix_ms = absl::ToUnixMillis(clock_.Now());

  // The header EncodeManifest writes (the current version's) plus the payload, in one item.
  const bool fits_inline = kManifestHeaderSize + stored.size() <= chunk_size_;
  manifest.chunk_count =
      fits_inline ? 0 : static_cast<std::uint32_t>((stored.size() + chunk_size_ - 1) / chunk_size_);
  const std::optional<Manifest> replaced =
      options_.delete_replaced_chunks ? reader_.ReadManifestQuietly(keys) : std::nullopt;

  if (!fits_inline) {
    const std::vector<std::string> chunk_keys =
        keys.Chunks(manifest.generation, manifest.chunk_count);
    std::vector<KeyValue> items;
    items.reserve(chunk_keys.size());
    for (std::uint32_t i = 0; i < manifest.chunk_count; ++i) {
      items.push_back({chunk_keys[i], stored.substr(std::size_t{i} * chunk_size_, chunk_size_)});
    }
    if (absl::Status s = backend_.MultiSet(items, options_.ttl + options_.chunk_ttl_grace);
        !s.ok()) {
      return s;
    }
    Add(counters_.chunks_written, items.size());
  }

  const std::string manifest_bytes =
      EncodeManifest(manifest, keys.manifest(), fits_inline ? stored : std::string_view());
  const KeyValue manifest_item{keys.manifest(), manifest_bytes};
  if (absl::Status s = backend_.MultiSet({&manifest_item, 1}, options_.ttl); !s.ok()) {
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

absl::Status EntryWriter::DeleteManifest(const StoredKeys& keys) {
  const std::string_view manifest_key = keys.manifest();
  return backend_.Delete({&manifest_key, 1});
}

void EntryWriter::DeleteChunks(const StoredKeys& keys, const Manifest& manifest) {
  if (manifest.is_inline()) return;
  const std::vector<std::string> chunk_keys =
      keys.Chunks(manifest.generation, manifest.chunk_count);
  const std::vector<std::string_view> views(chunk_keys.begin(), chunk_keys.end());
  backend_.Delete(views).IgnoreError();
}

}  // namespace chunkcache::internal
