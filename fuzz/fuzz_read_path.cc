// fuzz_read_path — the whole read path (ChunkedCache::Get, GetStream, GetCompressed, Inspect)
// over a backend whose stored bytes come from the fuzzer.
//
// Input: one options byte, then pieces (fuzz_util.h): piece 0 is the manifest of the logical key
// (stored key "cc:{doc}", or the long key of bit 3), pieces 1.. its chunks. No piece at all: the
// key is absent.
//   bit 0  reseal: recompute the header checksum of every manifest served (for the version its
//          byte 4 names: 1 at bytes 56..63, 2 at 64..71, else version 3's 72..79), so that
//          mutations of the header get past it to the checks behind it.
//   bit 1  rechecksum: rewrite the checksums of every manifest served to those of the bytes a
//          reader will take as its payload (the inline bytes, or the chunk pieces after it):
//          versions 1 and 2, the payload checksum (bytes 40..47); version 3, each frame's
//          checksum in the frame table (the frames cut as the table's sizes say, as far as the
//          bytes go), then the table checksum (bytes 40..47) over the table; so that mutations of
//          the payload reach the zstd decoder.
//   bit 2  keyed: the backend is a static store: "cc:{doc}" holds piece 0 and chunk i of the
//          generation piece 0 names (internal::StoredKeys) holds piece 1+i; other keys are absent.
//          Without it the backend is scripted: each call (Get, GetStream, GetCompressed, Inspect)
//          replays the pieces from the start, answering every key asked, in order, with the next
//          piece (absent if that piece is empty — an empty value is never a valid manifest or
//          chunk — or once none is left), so a reader that re-reads the manifest after a missing
//          chunk may see a writer that replaced the entry meanwhile.
//   bit 3  long key: the logical key is 1,024 bytes (kMaxKeySize) that escape to 3,072, so that
//          every chunk key a read builds costs ~3 KB (issue 15 item 5: a 64-byte manifest of
//          ~500 K chunks made one Get hold gigabytes of keys). Otherwise the key is "doc".
//   bit 4  rebind: a version-2 or 3 manifest served is bound to the key read (its key hash,
//          bytes 56..63, set to that of the stored key, and the header resealed), so that
//          manifests written for another key (the seeds are "doc"'s) get past the key check.
//          Without it, a manifest names the key it names: one of another key is refused.
//   bit 5  failing sink: GetStream's sink returns an error of its own on its second piece.
// Cache options: max_payload_size 4 MiB, chunk_size 1 KiB, no near cache. The backend's
// max_item_size is 1 MiB (MemoryBackend's default).
//
// Properties:
//   - no crash; Get and GetCompressed are OK or NotFound (a miss, corrupt included); Inspect is
//     OK, NotFound or DataLoss (an undecodable manifest); GetStream is OK, NotFound, DataLoss
//     only after a piece went out, or the sink's own error once the sink returned it;
//   - every entry used (Get, GetStream, GetCompressed or Inspect OK) has a version-1 manifest or
//     a version-2 or 3 one bound to the key read (issue 16 item 1: never another key's entry);
//   - Get OK: the payload has the raw size of the manifest the read used (the last one served),
//     GetCompressed is OK too, each of its frames (as the manifest's table cuts them; versions 1
//     and 2: one) is a zstd frame (magic 28 B5 2F FD: FORMAT.md "Reading" step 5) that declares
//     its raw size, and ZSTD_decompress of each gives back exactly its part of Get's payload;
//   - GetCompressed OK: its bytes have the stored size, and each frame's bytes the XXH3 the
//     manifest records for it (versions 1 and 2: the payload checksum);
//   - GetStream OK: Get was OK, and the pieces, one per frame of the manifest used and of its
//     raw size, are Get's payload in order (the same script, so the same entry);
//   - keyed store: GetCompressed OK <=> Inspect OK with checksum_ok; GetStream OK <=> Get OK, and
//     a stream that stopped after a piece is DataLoss; Inspect's fields are the
//     manifest's (format_version its byte 4, frame size and count), each chunk's presence and
//     size are the store's, `complete` is what they say;
//   - (sanitizer builds) Get and GetCompressed never hold more than ReadBound() of heap at once:
//     max_payload_size + 8 x the input size + 2 MiB. "A hostile entry costs at most about
//     max_payload_size plus a small constant" (issue 15 item 5; DESIGN.md: a read never allocates
//     more than max_payload_size whatever the stored bytes claim). The terms: the decoded payload,
//     allocated once at the manifest's raw size (<= max_payload_size); the bytes the backend
//     returned, which are the input's (its copies and the reader's, with per-chunk overhead:
//     every chunk but the last is >= kMinChunkSize of input), with the frame list (16 bytes per 12
//     of input); and a constant for one batch of chunk keys, the zstd context and small objects.
//     Nothing may scale with the chunk count a manifest claims. GetStream holds one frame, not
//     the payload: its bound has, instead of max_payload_size, the largest frame any manifest of
//     the input can have (min(frame size, raw size, max_payload_size); versions 1 and 2: the raw
//     size). Inspect may hold ReadBound plus its own result (a ChunkInfo, key included, per chunk
//     the manifest names).

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

enum Flags : std::uint8_t {
  kReseal = 1,
  kRechecksum = 2,
  kKeyed = 4,
  kLongKey = 8,
  kRebind = 16,
  kSinkFails = 32
};

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

template <typename T>
void StoreLE(std::string& bytes, std::size_t offset, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    bytes[offset + i] = static_cast<char>(static_cast<std::uint64_t>(value) >> (8 * i));
  }
}

// The header size byte 4 of `manifest` names: 64 for version 1, 72 for version 2, else (version
// 3, or one no reader knows) 80. Fields at offsets 0-55 mean the same in every version.
std::size_t HeaderSize(std::string_view manifest) {
  if (manifest.size() <= 4) return internal::kManifestHeaderSize;
  if (manifest[4] == 1) return internal::kManifestHeaderSizeV1;
  if (manifest[4] == 2) return internal::kManifestHeaderSizeV2;
  return internal::kManifestHeaderSize;
}

constexpr std::size_t kKeyHashOffset = 56;    // versions 2 and 3
constexpr std::size_t kChecksumOffset = 40;   // the payload's (1, 2) or the table's (3)
constexpr std::size_t kFrameSizeOffset = 64;  // version 3
constexpr std::size_t kFrameCountOffset = 68;

std::uint64_t Xxh3(std::string_view bytes) { return internal::Checksum({&bytes, 1}); }
std::uint64_t KeyHash(std::string_view stored_key) { return Xxh3(stored_key); }

// The header fields a reader acts on, read straight from the bytes (no checks).
struct RawHeader {
  std::uint8_t version = 0;
  std::uint64_t generation = 0, raw_size = 0, stored_size = 0, checksum = 0;
  std::uint32_t chunk_size = 0, chunk_count = 0;
  std::int64_t created = 0;
  std::uint64_t key_hash = 0;  // versions 2 and 3
  // Version 3's; versions 1 and 2 are one frame of the raw size whose checksum is the payload's.
  std::uint64_t frame_size = 0;
  std::vector<internal::Frame> frames;  // empty if the table does not fit in the bytes
  std::size_t payload_offset = 0;       // header and table

  std::uint64_t FrameRawSize(std::size_t j) const {
    return j + 1 < frames.size() ? frame_size : raw_size - frame_size * (frames.size() - 1);
  }
};

std::optional<RawHeader> ReadHeader(std::string_view bytes) {
  const std::size_t header = HeaderSize(bytes);
  if (bytes.size() < header) return std::nullopt;
  RawHeader h;
  h.version = static_cast<std::uint8_t>(bytes[4]);
  if (h.version != 1) h.key_hash = LoadLE<std::uint64_t>(bytes, kKeyHashOffset);
  h.generation = LoadLE<std::uint64_t>(bytes, 8);
  h.raw_size = LoadLE<std::uint64_t>(bytes, 16);
  h.stored_size = LoadLE<std::uint64_t>(bytes, 24);
  h.chunk_size = LoadLE<std::uint32_t>(bytes, 32);
  h.chunk_count = LoadLE<std::uint32_t>(bytes, 36);
  h.checksum = LoadLE<std::uint64_t>(bytes, kChecksumOffset);
  h.created = static_cast<std::int64_t>(LoadLE<std::uint64_t>(bytes, 48));
  h.payload_offset = header;
  if (header != internal::kManifestHeaderSize) {
    h.frame_size = h.raw_size;
    h.frames = {{h.stored_size, h.checksum}};
    return h;
  }
  h.frame_size = LoadLE<std::uint32_t>(bytes, kFrameSizeOffset);
  const std::uint64_t count = LoadLE<std::uint32_t>(bytes, kFrameCountOffset);
  if ((bytes.size() - header) / internal::kFrameEntrySize < count) return h;
  h.payload_offset = header + internal::kFrameEntrySize * count;
  h.frames.resize(count);
  for (std::size_t j = 0; j < count; ++j) {
    h.frames[j].stored_size = LoadLE<std::uint32_t>(bytes, header + internal::kFrameEntrySize * j);
    h.frames[j].checksum = LoadLE<std::uint64_t>(bytes, header + internal::kFrameEntrySize * j + 4);
  }
  return h;
}

// The bytes [offset, offset + size) of the concatenation of `parts` (as far as they go), as views.
std::vector<std::string_view> Slice(absl::Span<const std::string_view> parts, std::uint64_t offset,
                                    std::uint64_t size) {
  std::vector<std::string_view> out;
  for (const std::string_view part : parts) {
    if (size == 0) break;
    if (offset >= part.size()) {
      offset -= part.size();
      continue;
    }
    out.push_back(part.substr(offset, size));
    size -= out.back().size();
    offset = 0;
  }
  return out;
}

// `manifest` as served for `stored_key` under `flags`; `following` are the pieces a reader would
// take as its chunks.
std::string FixManifest(std::string manifest, std::uint8_t flags, std::string_view stored_key,
                        absl::Span<const std::string> following) {
  const std::size_t header = HeaderSize(manifest);
  if (manifest.size() < header) return manifest;
  if (flags & kRechecksum) {
    const std::uint32_t count = LoadLE<std::uint32_t>(manifest, 36);
    const std::size_t table =
        header == internal::kManifestHeaderSize
            ? std::min<std::uint64_t>(
                  internal::kFrameEntrySize *
                      std::uint64_t{LoadLE<std::uint32_t>(manifest, kFrameCountOffset)},
                  (manifest.size() - header) / internal::kFrameEntrySize *
                      internal::kFrameEntrySize)
            : 0;
    std::vector<std::string_view> payload;
    if (count == 0) {
      payload.push_back(std::string_view(manifest).substr(header + table));
    } else {
      for (std::size_t i = 0; i < std::min<std::size_t>(count, following.size()); ++i) {
        payload.push_back(following[i]);
      }
    }
    if (header != internal::kManifestHeaderSize) {
      StoreLE<std::uint64_t>(manifest, kChecksumOffset, internal::Checksum(payload));
    } else {
      // Each frame's checksum over its bytes as the table's sizes cut them, then the table's.
      std::uint64_t offset = 0;
      for (std::size_t at = header; at + internal::kFrameEntrySize <= header + table;
           at += internal::kFrameEntrySize) {
        const std::uint32_t size = LoadLE<std::uint32_t>(manifest, at);
        const std::vector<std::string_view> frame = Slice(payload, offset, size);
        // The inline payload's views point into `manifest`: checksum before writing into it.
        const std::uint64_t sum = internal::Checksum(frame);
        StoreLE<std::uint64_t>(manifest, at + 4, sum);
        offset += size;
      }
      StoreLE<std::uint64_t>(manifest, kChecksumOffset,
                             Xxh3(std::string_view(manifest).substr(header, table)));
    }
  }
  const bool rebind = (flags & kRebind) && header != internal::kManifestHeaderSizeV1;
  if (rebind) StoreLE<std::uint64_t>(manifest, kKeyHashOffset, KeyHash(stored_key));
  if ((flags & kReseal) || rebind) {
    StoreLE<std::uint64_t>(manifest, header - 8,
                           Xxh3(std::string_view(manifest.data(), header - 8)));
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

  // The largest frame (raw bytes) a manifest among the pieces can claim within `max_payload`:
  // what a stream may hold decoded at once. (Fixing a manifest up changes no size field, nor the
  // magic.)
  std::uint64_t LargestFrameClaimed(std::uint64_t max_payload) const {
    std::uint64_t largest = 0;
    for (const std::string& piece : pieces_) {
      if (piece.compare(0, 4, "CCMF") != 0) continue;  // not a manifest any reader decodes
      const std::optional<RawHeader> h = ReadHeader(piece);
      if (!h.has_value()) continue;
      largest = std::max(largest, std::min({h->frame_size, h->raw_size, max_payload}));
    }
    return largest;
  }

  // True if a version-3 manifest among the pieces has a frame size field larger than its raw
  // size (a reader accepts that: FORMAT.md does not check how F was chosen).
  bool ClaimsFramesOverRawSize() const {
    for (const std::string& piece : pieces_) {
      if (piece.compare(0, 4, "CCMF") != 0) continue;
      const std::optional<RawHeader> h = ReadHeader(piece);
      if (h.has_value() && h->version == 3 && h->frame_size > h->raw_size) return true;
    }
    return false;
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

// Issue 16 item 1: an entry used was written for the key read (versions 2 and 3), or names no key
// (version 1, which readers still read).
void CheckBound(const RawHeader& h, std::string_view stored_key, const char* what) {
  FUZZ_CHECK(
      h.version == 1 || ((h.version == 2 || h.version == 3) && h.key_hash == KeyHash(stored_key)),
      absl::StrCat(what, " used a manifest of version ", int{h.version},
                   " that is not bound to the key read"));
}

// What GetStream's sink saw: pieces compared, as they arrive, with Get's payload (`expected`,
// null if Get missed) rather than copied, so that the stream's own allocations are what the meter
// sees.
struct StreamCheck {
  const std::string* expected = nullptr;
  std::size_t offset = 0;                // bytes received
  bool matches = true;                   // every piece so far is Get's payload at its offset
  std::vector<std::size_t> piece_sizes;  // reserved before the stream runs
  bool fail_second = false;
  bool failed = false;  // the sink returned its error
};

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

  // GetStream, over the same script: one frame (and about one chunk) held at a time.
  backend->Restart();
  StreamCheck streamed;
  streamed.expected = got.ok() ? got->get() : nullptr;
  streamed.fail_second = (flags & kSinkFails) != 0;
  streamed.piece_sizes.reserve(size / internal::kFrameEntrySize + 2);
  const PieceSink sink = [&streamed](std::string_view piece) -> absl::Status {
    if (streamed.piece_sizes.size() < streamed.piece_sizes.capacity()) {
      streamed.piece_sizes.push_back(piece.size());
    }
    const std::string* expected = streamed.expected;
    streamed.matches =
        streamed.matches && expected != nullptr &&
        expected->size() - std::min(expected->size(), streamed.offset) >= piece.size() &&
        std::string_view(*expected).substr(streamed.offset, piece.size()) == piece;
    streamed.offset += piece.size();
    if (streamed.fail_second && streamed.piece_sizes.size() == 2) {
      streamed.failed = true;
      return absl::CancelledError("fuzz sink: enough");
    }
    return absl::OkStatus();
  };
  const std::size_t stream_bound =
      8 * size + kFixedAllowance + backend->LargestFrameClaimed(kMaxPayload);
  // Fixed bug stream-frame-size-alloc (tests/fuzz_regression_test.cc): GetStream allocated the
  // frame size field's bytes (up to 4 GiB) rather than the largest frame's; tolerated, such
  // inputs are not streamed (libFuzzer would stop at its malloc limit before any check).
  const bool skip_stream =
      Tolerated("stream-frame-size-alloc") && backend->ClaimsFramesOverRawSize();
  const absl::Status stream_status =
      skip_stream ? absl::NotFoundError("not streamed: stream-frame-size-alloc is tolerated")
                  : Metered(
                        "GetStream", stream_bound, [&] { return cache.GetStream(key, sink); },
                        "stream-frame-size-alloc");
  const std::optional<std::string> stream_manifest = backend->last_manifest();
  Note(absl::StrCat("GetStream: ", stream_status.ToString(), ", ", streamed.piece_sizes.size(),
                    " pieces, ", streamed.offset, " bytes"));
  const bool began = streamed.offset > 0 || !streamed.piece_sizes.empty();
  if (streamed.failed) {
    FUZZ_CHECK(absl::IsCancelled(stream_status) && stream_status.message() == "fuzz sink: enough",
               "GetStream did not return its sink's error: " + stream_status.ToString());
  } else {
    FUZZ_CHECK(stream_status.ok() || absl::IsNotFound(stream_status) ||
                   (began && absl::IsDataLoss(stream_status)),
               absl::StrCat("GetStream (", began ? "after" : "before",
                            " a piece): ", stream_status.ToString()));
  }
  if (stream_status.ok()) {
    FUZZ_CHECK(got.ok(), "GetStream streamed an entry Get missed: " + got.status().ToString());
    FUZZ_CHECK(streamed.matches && streamed.offset == (*got)->size(),
               absl::StrCat("GetStream's ", streamed.offset, " bytes are not Get's payload of ",
                            (*got)->size()));
    FUZZ_CHECK(stream_manifest.has_value(), "a stream without a manifest");
    const std::optional<RawHeader> h = ReadHeader(*stream_manifest);
    FUZZ_CHECK(h.has_value(), "a manifest shorter than its header was streamed");
    CheckBound(*h, keys.manifest(), "GetStream");
    FUZZ_CHECK(streamed.piece_sizes.size() == h->frames.size(),
               absl::StrCat("GetStream gave ", streamed.piece_sizes.size(), " pieces for ",
                            h->frames.size(), " frames"));
    for (std::size_t j = 0; j < streamed.piece_sizes.size(); ++j) {
      FUZZ_CHECK(streamed.piece_sizes[j] == h->FrameRawSize(j),
                 absl::StrCat("piece ", j, " is ", streamed.piece_sizes[j], " bytes, its frame ",
                              h->FrameRawSize(j)));
    }
  }

  backend->Restart();
  absl::StatusOr<CompressedPayload> compressed =
      Metered("GetCompressed", bound, [&] { return cache.GetCompressed(key); });
  Note(absl::StrCat("GetCompressed: ", compressed.ok()
                                           ? absl::StrCat(compressed->zstd->size(), " bytes")
                                           : compressed.status().ToString()));
  FUZZ_CHECK(compressed.ok() || absl::IsNotFound(compressed.status()),
             compressed.status().ToString());
  std::optional<RawHeader> compressed_header;
  if (compressed.ok()) {
    FUZZ_CHECK(backend->last_manifest().has_value(), "an entry without a manifest");
    compressed_header = ReadHeader(*backend->last_manifest());
    const std::optional<RawHeader>& h = compressed_header;
    FUZZ_CHECK(h.has_value(), "a manifest shorter than its header was used");
    CheckBound(*h, keys.manifest(), "GetCompressed");
    FUZZ_CHECK(compressed->raw_size == h->raw_size && compressed->zstd != nullptr &&
                   compressed->zstd->size() == h->stored_size,
               absl::StrCat("GetCompressed: ", compressed->zstd->size(), " bytes for raw size ",
                            compressed->raw_size, "; the manifest says ", h->stored_size, " for ",
                            h->raw_size));
    FUZZ_CHECK(!h->frames.empty(), "GetCompressed used a manifest whose table does not fit");
    std::uint64_t offset = 0;
    for (std::size_t j = 0; j < h->frames.size(); ++j) {
      const std::string_view frame =
          std::string_view(*compressed->zstd).substr(offset, h->frames[j].stored_size);
      FUZZ_CHECK(frame.size() == h->frames[j].stored_size && Xxh3(frame) == h->frames[j].checksum,
                 absl::StrCat("GetCompressed returned frame ", j,
                              " whose bytes do not match its checksum"));
      offset += frame.size();
    }
    FUZZ_CHECK(offset == compressed->zstd->size(), "frames that do not cover the payload");
    if (h->version != 3) {
      const std::string_view zstd = *compressed->zstd;
      FUZZ_CHECK(Xxh3(zstd) == h->checksum,
                 "GetCompressed returned bytes that do not match the manifest's checksum");
    }
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
    std::uint64_t offset = 0, raw_offset = 0;
    for (std::size_t j = 0; j < h->frames.size(); ++j) {
      const std::string_view frame =
          std::string_view(zstd).substr(offset, h->frames[j].stored_size);
      const std::uint64_t raw = h->FrameRawSize(j);
      FUZZ_CHECK(frame.size() >= 4 && frame.substr(0, 4) == "\x28\xb5\x2f\xfd",
                 absl::StrCat("a hit whose frame ", j, " is not a zstd frame (a skippable one?)"));
      FUZZ_CHECK(ZSTD_getFrameContentSize(frame.data(), frame.size()) == raw,
                 absl::StrCat("zstd frame ", j, " does not declare its raw size"));
      std::string decoded(raw, '\0');
      const std::size_t n =
          ZSTD_decompress(decoded.data(), decoded.size(), frame.data(), frame.size());
      FUZZ_CHECK(!ZSTD_isError(n) && n == decoded.size() &&
                     std::string_view(**got).substr(raw_offset, raw) == decoded,
                 absl::StrCat("ZSTD_decompress of frame ", j, " is not Get's payload there"));
      offset += frame.size();
      raw_offset += raw;
    }
    FUZZ_CHECK(raw_offset == (*got)->size(), "frames that do not cover Get's payload");
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
                   info->frame_size == h->frame_size && info->frame_count == h->frames.size() &&
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
    // A static store: the stream read what Get read.
    if (!streamed.failed && !skip_stream) {
      FUZZ_CHECK(stream_status.ok() == got.ok(),
                 absl::StrCat("Get ", got.status().ToString(), " but GetStream ",
                              stream_status.ToString()));
      // Nothing can replace a static entry: a stream that stopped after pieces found it corrupt.
      if (began && !stream_status.ok()) {
        FUZZ_CHECK(absl::IsDataLoss(stream_status),
                   "GetStream stopped after pieces without DataLoss: " + stream_status.ToString());
      }
    }
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
