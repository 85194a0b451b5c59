// fuzz_read_path — the whole read path (ChunkedCache::Get, GetCompressed, Inspect) over a backend
// whose stored bytes come from the fuzzer.
//
// Input: one options byte, then pieces (fuzz_util.h): piece 0 is the manifest of the logical key
// (stored key "cc:{doc}", or the long key of bit 3), pieces 1.. its chunks. No piece at all: the
// key is absent.
//   bit 0  reseal: recompute the header checksum of every manifest served (for the version its
//          byte 4 names: 1 at bytes 56..63, else at 64..71), so that mutations of the header get
//          past it to the checks behind it.
//   bit 1  rechecksum: rewrite the payload checksum of every manifest served to that of the bytes
//          a reader will take as its payload (the inline bytes, or the chunk pieces after it), so
//          that mutations of the payload reach the zstd decoder.
//   bit 2  keyed: the backend is a static store: "cc:{doc}" holds piece 0 and chunk i of the
//          generation piece 0 names (internal::StoredKeys) holds piece 1+i; other keys are absent.
//          Without it the backend is scripted: each call (Get, GetCompressed, Inspect) replays
//          the pieces from the start, answering every key asked, in order, with the next piece
//          (absent if that piece is empty — an empty value is never a valid manifest or chunk —
//          or once none is left), so a reader that re-reads the manifest after a missing chunk
//          may see a writer that replaced the entry meanwhile.
//   bit 3  long key: the logical key is 1,024 bytes (kMaxKeySize) that escape to 3,072, so that
//          every chunk key a read builds costs ~3 KB (issue 15 item 5: a 64-byte manifest of
//          ~500 K chunks made one Get hold gigabytes of keys). Otherwise the key is "doc".
//   bit 4  rebind: a version-2 manifest served is bound to the key read (its key hash, bytes
//          56..63, set to that of the stored key, and the header resealed), so that manifests
//          written for another key (the seeds are "doc"'s) get past the key check. Without it,
//          a manifest names the key it names: one of another key is refused.
// Cache options: max_payload_size 4 MiB, chunk_size 1 KiB, no near cache. The backend's
// max_item_size is 1 MiB (MemoryBackend's default).
//
// Properties:
//   - no crash; Get and GetCompressed are OK or NotFound (a miss, corrupt included); Inspect is
//     OK, NotFound or DataLoss (an undecodable manifest);
//   - every entry used (Get, GetCompressed or Inspect OK) has a version-1 manifest or a version-2
//     one bound to the key read (issue 16 item 1: never another key's entry);
//   - Get OK: the payload has the raw size of the manifest the read used (the last one served),
//     GetCompressed is OK too, its bytes are a zstd frame (magic 28 B5 2F FD: FORMAT.md "Reading"
//     step 5) that declares that size, and ZSTD_decompress gives back exactly Get's payload;
//   - GetCompressed OK: its bytes have the stored size and the XXH3 the manifest records;
//   - keyed store: GetCompressed OK <=> Inspect OK with checksum_ok; Inspect's fields are the
//     manifest's (format_version its byte 4), each chunk's presence and size are the store's,
//     `complete` is what they say;
//   - (sanitizer builds) Get and GetCompressed never hold more than ReadBound() of heap at once:
//     max_payload_size + 8 x the input size + 2 MiB. "A hostile entry costs at most about
//     max_payload_size plus a small constant" (issue 15 item 5; DESIGN.md: a read never allocates
//     more than max_payload_size whatever the stored bytes claim). The terms: the decoded payload,
//     allocated once at the manifest's raw size (<= max_payload_size); the bytes the backend
//     returned, which are the input's (its copies and the reader's, with per-chunk overhead:
//     every chunk but the last is >= kMinChunkSize of input); and a constant for one batch of
//     chunk keys, the zstd context and small objects. Nothing may scale with the chunk count a
//     manifest claims. Inspect may hold that plus its own result (a ChunkInfo, key included, per
//     chunk the manifest names).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/backend.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/options.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "fuzz_util.h"
#include "zstd.h"

namespace chunkcache::fuzz {
namespace read_path_target {

constexpr std::size_t kMaxPayload = std::size_t{4} << 20;
constexpr std::size_t kMaxItemSize = std::size_t{1} << 20;  // the backend's
constexpr char kShortKey[] = "doc";

enum Flags : std::uint8_t { kReseal = 1, kRechecksum = 2, kKeyed = 4, kLongKey = 8, kRebind = 16 };

// The logical key read under `flags`: kMaxKeySize bytes 0x80..0xFF, each escaped to "%XX".
std::string KeyFor(std::uint8_t flags) {
  if (!(flags & kLongKey)) return kShortKey;
  std::string key(kMaxKeySize, '\0');
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<char>(0x80 | (i & 0x7f));
  return key;
}

// The heap one Get or GetCompressed may hold at once (see the properties above).
constexpr std::size_t kFixedAllowance = std::size_t{2} << 20;
constexpr std::size_t ReadBound(std::size_t max_payload_size, std::size_t input_size) {
  return max_payload_size + 8 * input_size + kFixedAllowance;
}

template <typename T>
T LoadLE(std::string_view bytes, std::size_t offset) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(static_cast<std::uint8_t>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

void StoreLE(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
}

// The header size byte 4 of `manifest` names: 64 for version 1, else (version 2, or one no reader
// knows) 72. Fields at offsets 0-55 mean the same in both versions.
std::size_t HeaderSize(std::string_view manifest) {
  return manifest.size() > 4 && manifest[4] == 1 ? internal::kManifestHeaderSizeV1
                                                 : internal::kManifestHeaderSize;
}

constexpr std::size_t kKeyHashOffset = 56;  // version 2

std::uint64_t KeyHash(std::string_view stored_key) { return internal::Checksum({&stored_key, 1}); }

// The header fields a reader acts on, read straight from the bytes (no checks).
struct RawHeader {
  std::uint8_t version = 0;
  std::uint64_t generation = 0, raw_size = 0, stored_size = 0, checksum = 0;
  std::uint32_t chunk_size = 0, chunk_count = 0;
  std::int64_t created = 0;
  std::uint64_t key_hash = 0;  // version 2
};

std::optional<RawHeader> ReadHeader(std::string_view bytes) {
  if (bytes.size() < HeaderSize(bytes)) return std::nullopt;
  RawHeader h;
  h.version = static_cast<std::uint8_t>(bytes[4]);
  if (h.version != 1) h.key_hash = LoadLE<std::uint64_t>(bytes, kKeyHashOffset);
  h.generation = LoadLE<std::uint64_t>(bytes, 8);
  h.raw_size = LoadLE<std::uint64_t>(bytes, 16);
  h.stored_size = LoadLE<std::uint64_t>(bytes, 24);
  h.chunk_size = LoadLE<std::uint32_t>(bytes, 32);
  h.chunk_count = LoadLE<std::uint32_t>(bytes, 36);
  h.checksum = LoadLE<std::uint64_t>(bytes, 40);
  h.created = static_cast<std::int64_t>(LoadLE<std::uint64_t>(bytes, 48));
  return h;
}

// `manifest` as served for `stored_key` under `flags`; `following` are the pieces a reader would
// take as its chunks.
std::string FixManifest(std::string manifest, std::uint8_t flags, std::string_view stored_key,
                        absl::Span<const std::string> following) {
  const std::size_t header = HeaderSize(manifest);
  if (manifest.size() < header) return manifest;
  if (flags & kRechecksum) {
    const std::uint32_t count = LoadLE<std::uint32_t>(manifest, 36);
    std::vector<std::string_view> parts;
    if (count == 0) {
      parts.push_back(std::string_view(manifest).substr(header));
    } else {
      for (std::size_t i = 0; i < std::min<std::size_t>(count, following.size()); ++i) {
        parts.push_back(following[i]);
      }
    }
    StoreLE(manifest, 40, internal::Checksum(parts));
  }
  const bool rebind = (flags & kRebind) && header == internal::kManifestHeaderSize;
  if (rebind) StoreLE(manifest, kKeyHashOffset, KeyHash(stored_key));
  if ((flags & kReseal) || rebind) {
    const std::string_view covered(manifest.data(), header - 8);
    StoreLE(manifest, header - 8, internal::Checksum({&covered, 1}));
  }
  return manifest;
}

class FuzzBackend : public Backend {
 public:
  FuzzBackend(std::uint8_t flags, std::vector<std::string> pieces)
      : flags_(flags), pieces_(std::move(pieces)), keys_(CacheOptions().key_prefix, KeyFor(flags)) {
    if (!(flags_ & kKeyed) || pieces_.empty()) return;
    const std::string manifest =
        FixManifest(pieces_[0], flags_, keys_.manifest(), absl::MakeConstSpan(pieces_).subspan(1));
    const std::uint64_t generation = manifest.size() >= 16 ? LoadLE<std::uint64_t>(manifest, 8) : 0;
    store_[keys_.manifest()] = manifest;
    for (std::size_t i = 1; i < pieces_.size(); ++i) {
      store_[keys_.Chunk(generation, static_cast<std::uint32_t>(i - 1))] = pieces_[i];
    }
  }

  std::size_t max_item_size() const override { return kMaxItemSize; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    std::vector<std::optional<std::string>> values;
    values.reserve(keys.size());
    for (const std::string_view key : keys) {
      if (flags_ & kKeyed) {
        const auto it = store_.find(absl::string_view(key.data(), key.size()));
        values.push_back(it == store_.end() ? std::nullopt
                                            : std::optional<std::string>(it->second));
      } else if (next_ >= pieces_.size() || pieces_[next_].empty()) {
        next_ = std::min(next_ + 1, pieces_.size());
        values.push_back(std::nullopt);
      } else if (key == keys_.manifest()) {
        const std::size_t at = next_++;
        values.push_back(FixManifest(pieces_[at], flags_, keys_.manifest(),
                                     absl::MakeConstSpan(pieces_).subspan(next_)));
      } else {
        values.push_back(pieces_[next_++]);
      }
      if (key == keys_.manifest() && values.back().has_value()) last_manifest_ = *values.back();
    }
    return values;
  }

  absl::Status MultiSet(absl::Span<const KeyValue>, absl::Duration) override {
    return absl::UnimplementedError("fuzz backend: read only");
  }
  absl::Status Delete(absl::Span<const std::string_view>) override {
    return absl::UnimplementedError("fuzz backend: read only");
  }

  // Before each top-level call: the script starts over.
  void Restart() {
    next_ = 0;
    last_manifest_.reset();
  }

  // The manifest a call's first read gets after Restart(): piece 0 as served.
  std::optional<std::string> FirstManifest() const {
    if (pieces_.empty() || pieces_[0].empty()) return std::nullopt;
    return FixManifest(pieces_[0], flags_, keys_.manifest(),
                       absl::MakeConstSpan(pieces_).subspan(1));
  }

  // The last manifest served since Restart().
  const std::optional<std::string>& last_manifest() const { return last_manifest_; }
  bool HasChunk(std::uint64_t generation, std::uint32_t index, std::size_t* size) const {
    const auto it = store_.find(keys_.Chunk(generation, index));
    if (it == store_.end()) return false;
    *size = it->second.size();
    return true;
  }

 private:
  const std::uint8_t flags_;
  const std::vector<std::string> pieces_;
  const internal::StoredKeys keys_;
  absl::flat_hash_map<std::string, std::string> store_;  // keyed mode
  std::size_t next_ = 0;                                 // scripted mode
  std::optional<std::string> last_manifest_;
};

// Runs `call` under an allocation meter and checks that it held at most `bound` bytes at once.
// (It caught a manifest of 1-byte chunks making a read build one key per chunk, ~120 bytes each,
// before looking at any: 500 MB for a 64-byte manifest. Fixed: DecodeManifest refuses chunk sizes
// below kMinChunkSize. With the long key, 128-byte chunks: ~3 KB a chunk, issue 15 item 5.)
// `issue`, if named in CHUNKCACHE_FUZZ_TOLERATE, skips the check.
template <typename Call>
auto Metered(const char* what, std::size_t bound, Call call, const char* issue = nullptr) {
  AllocationMeter meter;
  auto result = call();
  if (AllocationMeter::Supported() && !(issue != nullptr && Tolerated(issue))) {
    FUZZ_CHECK(meter.peak() <= bound,
               absl::StrCat(what, " held ", meter.peak(), " bytes of heap at once; the bound is ",
                            bound, " (max_payload_size ", kMaxPayload, ")"));
  }
  return result;
}

// What Inspect may hold beyond ReadBound: its result, a ChunkInfo per chunk the manifest it read
// names (`manifest`, unchecked: 0 if it is too short to name any).
std::size_t InspectResultAllowance(const std::optional<std::string>& manifest,
                                   const internal::StoredKeys& keys) {
  if (!manifest.has_value() || manifest->size() < internal::kManifestHeaderSizeV1) return 0;
  const std::uint32_t count = LoadLE<std::uint32_t>(*manifest, 36);
  const std::size_t key_size = keys.Chunk(~std::uint64_t{0}, count).size();
  return std::size_t{count} * (sizeof(ChunkInfo) + key_size + 32);  // 32: malloc's rounding
}

// Issue 16 item 1: an entry used was written for the key read (version 2), or names no key
// (version 1, which readers still read).
void CheckBound(const RawHeader& h, std::string_view stored_key, const char* what) {
  FUZZ_CHECK(h.version == 1 || (h.version == 2 && h.key_hash == KeyHash(stored_key)),
             absl::StrCat(what, " used a manifest of version ", int{h.version},
                          " that is not bound to the key read"));
}

}  // namespace read_path_target

int FuzzReadPath(const std::uint8_t* data, std::size_t size) {
  using namespace read_path_target;
  InputReader in(data, size);
  const std::uint8_t flags = in.Byte();
  const std::string key = KeyFor(flags);
  const internal::StoredKeys keys(CacheOptions().key_prefix, key);
  const std::size_t bound = ReadBound(kMaxPayload, size);
  auto backend = std::make_shared<FuzzBackend>(flags, in.Pieces());
  ChunkedCache cache(backend, {.chunk_size = 1024, .max_payload_size = kMaxPayload});

  backend->Restart();
  absl::StatusOr<Bytes> got = Metered("Get", bound, [&] { return cache.Get(key); });
  const std::optional<std::string> get_manifest = backend->last_manifest();
  Note(absl::StrCat("Get: ",
                    got.ok() ? absl::StrCat((*got)->size(), " bytes") : got.status().ToString()));
  FUZZ_CHECK(got.ok() || absl::IsNotFound(got.status()), got.status().ToString());

  backend->Restart();
  absl::StatusOr<CompressedPayload> compressed =
      Metered("GetCompressed", bound, [&] { return cache.GetCompressed(key); });
  Note(absl::StrCat("GetCompressed: ", compressed.ok()
                                           ? absl::StrCat(compressed->zstd->size(), " bytes")
                                           : compressed.status().ToString()));
  FUZZ_CHECK(compressed.ok() || absl::IsNotFound(compressed.status()),
             compressed.status().ToString());
  if (compressed.ok()) {
    FUZZ_CHECK(backend->last_manifest().has_value(), "an entry without a manifest");
    const std::optional<RawHeader> h = ReadHeader(*backend->last_manifest());
    FUZZ_CHECK(h.has_value(), "a manifest shorter than its header was used");
    CheckBound(*h, keys.manifest(), "GetCompressed");
    FUZZ_CHECK(compressed->raw_size == h->raw_size && compressed->zstd != nullptr &&
                   compressed->zstd->size() == h->stored_size,
               absl::StrCat("GetCompressed: ", compressed->zstd->size(), " bytes for raw size ",
                            compressed->raw_size, "; the manifest says ", h->stored_size, " for ",
                            h->raw_size));
    const std::string_view zstd = *compressed->zstd;
    FUZZ_CHECK(internal::Checksum({&zstd, 1}) == h->checksum,
               "GetCompressed returned bytes that do not match the manifest's checksum");
  }

  if (got.ok()) {
    FUZZ_CHECK(get_manifest.has_value(), "a hit without a manifest");
    const std::optional<RawHeader> h = ReadHeader(*get_manifest);
    FUZZ_CHECK(h.has_value(), "a manifest shorter than its header was used");
    CheckBound(*h, keys.manifest(), "Get");
    FUZZ_CHECK(
        *got != nullptr && (*got)->size() == h->raw_size,
        absl::StrCat("Get returned ", (*got)->size(), " bytes; the manifest says ", h->raw_size));
    // The same script again: GetCompressed read the same entry, so it must have found it too.
    FUZZ_CHECK(compressed.ok(),
               "Get hit but GetCompressed missed: " + compressed.status().ToString());
    FUZZ_CHECK(compressed->raw_size == (*got)->size(), "GetCompressed's raw size differs");
    const std::string& zstd = *compressed->zstd;
    FUZZ_CHECK((zstd.size() >= 4 && std::string_view(zstd).substr(0, 4) == "\x28\xb5\x2f\xfd"),
               "a hit whose payload is not a zstd frame (a skippable frame, say)");
    FUZZ_CHECK(ZSTD_getFrameContentSize(zstd.data(), zstd.size()) == (*got)->size(),
               "the zstd frame does not declare the payload's size");
    std::string decoded((*got)->size(), '\0');
    const std::size_t n = ZSTD_decompress(decoded.data(), decoded.size(), zstd.data(), zstd.size());
    FUZZ_CHECK(!ZSTD_isError(n) && n == decoded.size() && decoded == **got,
               "ZSTD_decompress of GetCompressed's bytes is not Get's payload");
  }

  backend->Restart();
  // Inspect's bound counts the manifest it will read: the script's first piece (keyed: the
  // store's).
  const std::size_t inspect_bound = bound + InspectResultAllowance(backend->FirstManifest(), keys);
  absl::StatusOr<EntryInfo> info =
      Metered("Inspect", inspect_bound, [&] { return cache.Inspect(key); });
  Note(absl::StrCat("Inspect: ",
                    info.ok() ? absl::StrCat(info->chunks.size(), " chunks, complete ",
                                             info->complete, ", checksum_ok ", info->checksum_ok)
                              : info.status().ToString()));
  FUZZ_CHECK(info.ok() || absl::IsNotFound(info.status()) || absl::IsDataLoss(info.status()),
             info.status().ToString());
  if (absl::IsDataLoss(info.status())) {
    FUZZ_CHECK(!got.ok() && !compressed.ok(), "an entry read whose manifest Inspect rejects");
  }
  if (info.ok()) {
    FUZZ_CHECK(!info->checksum_ok || info->complete, "checksum_ok without complete");
    const std::optional<RawHeader> h = ReadHeader(*backend->last_manifest());
    FUZZ_CHECK(h.has_value(), "Inspect decoded a manifest shorter than its header");
    CheckBound(*h, keys.manifest(), "Inspect");
    FUZZ_CHECK(info->generation == h->generation && info->raw_size == h->raw_size &&
                   info->stored_size == h->stored_size && info->chunk_size == h->chunk_size &&
                   info->checksum == h->checksum && info->format_version == h->version &&
                   info->manifest_size == backend->last_manifest()->size() &&
                   info->is_inline == (h->chunk_count == 0) &&
                   info->chunk_count == h->chunk_count && info->chunks.size() <= h->chunk_count,
               "Inspect's fields are not the manifest's");
  }
  if (flags & kKeyed) {
    FUZZ_CHECK(absl::IsNotFound(info.status()) == (size <= 1),
               "Inspect: " + info.status().ToString());
    FUZZ_CHECK(compressed.ok() == (info.ok() && info->checksum_ok),
               absl::StrCat("GetCompressed ", compressed.status().ToString(), " but Inspect ",
                            info.ok() ? (info->checksum_ok ? "checksum ok" : "checksum bad")
                                      : info.status().ToString()));
    if (info.ok()) {
      bool complete = true;
      for (std::uint32_t i = 0; i < info->chunks.size(); ++i) {
        const ChunkInfo& chunk = info->chunks[i];
        std::size_t stored = 0;
        const bool present = backend->HasChunk(info->generation, i, &stored);
        FUZZ_CHECK(
            chunk.actual_size.has_value() == present && (!present || *chunk.actual_size == stored),
            absl::StrCat("Inspect misreports chunk ", i));
        complete = complete && chunk.actual_size == chunk.expected_size;
      }
      // Only the listed chunks can be compared; with all of them listed, exactly.
      FUZZ_CHECK(info->chunks.size() == info->chunk_count ? info->complete == complete
                                                          : !info->complete || complete,
                 "Inspect's complete flag is wrong");
    }
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzReadPath(data, size);
}
#endif
