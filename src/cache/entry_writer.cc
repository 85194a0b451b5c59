#include "cache/entry_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
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
                         const CacheClock& clock, CacheCounters& counters, WorkerPool* pool)
    : options_(options),
      chunk_size_(chunk_size),
      backend_(backend),
      reader_(reader),
      codec_(codec),
      clock_(clock),
      counters_(counters),
      pool_(pool) {}

absl::Status EntryWriter::CheckSize(std::string_view json) const {
  if (json.empty()) return absl::InvalidArgumentError("chunkcache: the payload is empty");
  if (json.size() <= options_.max_payload_size) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrFormat("chunkcache: the payload is %d bytes; max_payload_size is %d", json.size(),
                      options_.max_payload_size));
}

absl::Status EntryWriter::CheckPayload(std::string_view json) {
  if (absl::Status s = CheckSize(json); !s.ok()) return s;
  return options_.validate_json ? codec_.ValidateJson(json) : absl::OkStatus();
}

FramePlan PlanFrames(std::uint64_t raw_size, std::size_t frame_size, std::size_t chunk_size) {
  const auto ceil_div = [](std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); };
  // The manifest lists every frame and must fit in one item.
  const std::uint64_t most = (chunk_size - kManifestHeaderSize) / kFrameEntrySize;
  std::uint64_t count = std::clamp<std::uint64_t>(ceil_div(raw_size, frame_size), 1, most);
  // Even frames: 10.5 MB in frames of about 2 MiB is 6 of 1.75 MB, not 5 of 2 MiB and a crumb.
  const std::uint64_t even = ceil_div(raw_size, count);
  return {even, static_cast<std::size_t>(ceil_div(raw_size, even))};
}

absl::StatusOr<EncodedPayload> EntryWriter::Encode(std::string_view json) {
  if (absl::Status s = CheckSize(json); !s.ok()) return s;
  const FramePlan plan = PlanFrames(json.size(), options_.frame_size, chunk_size_);
  if (plan.frame_size > kMaxFrameSize) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "chunkcache: a payload of %d bytes needs frames over %d bytes to be listed in one item "
        "of %d",
        json.size(), kMaxFrameSize, chunk_size_));
  }
  EncodedPayload out;
  out.raw_size = json.size();
  out.frame_size = plan.frame_size;
  out.frames.resize(plan.count);
  // Frame i is compressed into its own slot, at the sum of the earlier frames' bounds, so frames
  // can be compressed in any order; on the calling thread alone each goes straight after the
  // previous one instead. Untouched pages of the buffer cost nothing.
  const int helpers = pool_ == nullptr ? 0 : options_.compression_workers;
  const bool parallel = helpers > 0 && plan.count > 1;
  std::vector<std::size_t> slots(plan.count + 1, 0);
  for (std::size_t i = 0; i < plan.count; ++i) {
    const std::size_t raw =
        std::min<std::uint64_t>(plan.frame_size, json.size() - i * plan.frame_size);
    slots[i + 1] = slots[i] + CompressBound(raw);
  }
  out.stored.data.reset(new char[slots.back()]);
  std::vector<absl::Status> failures(plan.count);
  std::size_t end = 0;  // of the frames written so far, on the calling thread alone
  const auto compress = [&](std::size_t i) {
    const std::string_view raw = json.substr(i * plan.frame_size, plan.frame_size);
    const std::size_t at = parallel ? slots[i] : end;
    // One frame of a payload worth it: zstd's own workers, if the codec has any.
    const bool zstd_workers = plan.count == 1 && raw.size() >= kOverlapValidationFrom;
    absl::StatusOr<std::size_t> size =
        codec_.CompressFrame(raw, {out.stored.data.get() + at, slots.back() - at}, zstd_workers);
    if (!size.ok()) {
      failures[i] = size.status();
      return;
    }
    out.frames[i] = {*size, Checksum({std::string_view(out.stored.data.get() + at, *size)})};
    if (!parallel) end += *size;
  };

  // With workers, they compress (the frames, or zstd's own threads the one frame) while the
  // calling thread validates; it joins them only if none is free. N workers are N busy threads,
  // as with zstd's own: more threads than cores would cost more than it gains.
  const bool overlap =
      parallel || (helpers > 0 && plan.count == 1 && json.size() >= kOverlapValidationFrom);
  if (!overlap) {
    // Alone: validate first, so invalid JSON costs no compression.
    if (options_.validate_json) {
      if (absl::Status s = codec_.ValidateJson(json); !s.ok()) return s;
    }
    for (std::size_t i = 0; i < plan.count; ++i) compress(i);
  } else {
    TaskGroup group(pool_, helpers);
    for (std::size_t i = 0; i < plan.count; ++i) group.Add([&compress, i] { compress(i); });
    const absl::Status valid =
        options_.validate_json ? codec_.ValidateJson(json) : absl::OkStatus();
    group.WaitForHelpers();
    if (!valid.ok()) return valid;
  }
  for (const absl::Status& failure : failures) {
    if (!failure.ok()) return failure;
  }
  // Close the gaps between slots, in order: each frame moves down, never over a later one.
  std::size_t size = 0;
  for (std::size_t i = 0; i < plan.count; ++i) {
    if (parallel && size != slots[i]) {
      std::memmove(out.stored.data.get() + size, out.stored.data.get() + slots[i],
                   out.frames[i].stored_size);
    }
    size += out.frames[i].stored_size;
  }
  out.stored.size = size;
  return out;
}

absl::StatusOr<Manifest> EntryWriter::EncodeAndStore(const StoredKeys& keys,
                                                     std::string_view json) {
  absl::StatusOr<EncodedPayload> encoded = Encode(json);
  if (!encoded.ok()) return encoded.status();
  Add(counters_.bytes_put_raw, json.size());
  return Store(keys, *encoded);
}

absl::StatusOr<Manifest> EntryWriter::Store(const StoredKeys& keys, const EncodedPayload& payload) {
  const std::string_view stored = payload.stored.view();
  Manifest manifest;
  manifest.generation = generations_.Next();
  manifest.raw_size = payload.raw_size;
  manifest.stored_size = stored.size();
  manifest.chunk_size = static_cast<std::uint32_t>(chunk_size_);
  manifest.frame_size = payload.frame_size;
  manifest.frames = payload.frames;
  manifest.checksum = FrameTableChecksum(manifest.frames);
  manifest.created_unix_ms = absl::ToUnixMillis(clock_.Now());

  // The header and frame table EncodeManifest writes plus the payload, in one item.
  const bool fits_inline = ManifestSize(manifest.frames.size()) + stored.size() <= chunk_size_;
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
