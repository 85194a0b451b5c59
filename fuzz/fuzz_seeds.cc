// fuzz_seeds — writes the fuzz targets' seed corpora from real entries.
//
//   fuzz_seeds DIR      writes DIR/<target>/seed_N for every target (existing files are replaced)
//
// Entries are made by ChunkedCache::Put into a recording memory backend (tests/test_util.h) with
// small chunk sizes: tiny inline documents, generated catalogues (tools/catalogue.h) and the JSON
// files of ../shared/corpus when it is there (the larger ones in several frames of 64 KiB); and,
// built here with the codec, small entries of many small frames (a few hundred raw bytes, or
// one) that straddle 128-byte chunks, inline and chunked, which no Put makes (frames are at least
// 64 KiB). Their manifests (as written, format version 3, and for one-frame entries as the earlier
// releases wrote them, versions 2 and 1) seed fuzz_manifest; their manifests and chunks, in the
// input format of fuzz_read_path, seed it in every shape that matters (intact, truncated
// manifest, flipped byte in the header, table or a frame, missing or oversize chunk, replaced
// while read, read under another key, a failing stream sink, ...). The other targets get
// hand-written inputs in their formats. GenerateSeeds() is also what
// tests/fuzz_regression_test.cc replays.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "format/codec.h"
#include "format/keys.h"
#include "format/manifest.h"
#include "fuzz_util.h"
#include "test_util.h"
#include "zstd.h"

namespace chunkcache::fuzz {

using Seeds = std::map<std::string, std::vector<std::string>>;

namespace seeds {

constexpr std::size_t kMaxPayload = std::size_t{4} << 20;  // as fuzz_read_path
constexpr char kKey[] = "doc";                             // as fuzz_read_path

// fuzz_read_path's option bits.
constexpr std::uint8_t kReseal = 1, kRechecksum = 2, kKeyed = 4, kLongKey = 8, kRebind = 16,
                       kSinkFails = 32;

// The stored key of kKey (fuzz_read_path's short key, fuzz_manifest's key).
std::string StoredKey() { return internal::StoredKeys(CacheOptions().key_prefix, kKey).manifest(); }

struct Entry {
  std::string manifest;
  std::vector<std::string> chunks;
};

// Puts `documents` one after the other under kKey (each replacing the last) and returns what each
// Put stored.
std::vector<Entry> PutAll(const std::vector<std::string>& documents, std::size_t chunk_size,
                          std::size_t frame_size = CacheOptions().frame_size) {
  auto backend = std::make_shared<testing::RecordingBackend>(NewMemoryBackend());
  ChunkedCache cache(
      backend,
      {.chunk_size = chunk_size, .frame_size = frame_size, .max_payload_size = kMaxPayload});
  const internal::StoredKeys keys(CacheOptions().key_prefix, kKey);
  std::vector<Entry> entries;
  for (const std::string& json : documents) {
    if (!cache.Put(kKey, json).ok()) continue;
    std::map<std::string, std::string> stored;
    for (testing::RecordingBackend::StoredItem& item : backend->TakeSets()) {
      stored[item.key] = std::move(item.value);
    }
    Entry entry;
    entry.manifest = stored[keys.manifest()];
    absl::StatusOr<internal::DecodedManifest> decoded = internal::DecodeManifest(
        entry.manifest, keys.manifest(),
        {.max_payload_size = kMaxPayload, .max_chunk_size = backend->max_item_size()});
    if (!decoded.ok()) continue;
    for (std::uint32_t i = 0; i < decoded->manifest.chunk_count; ++i) {
      entry.chunks.push_back(stored[keys.Chunk(decoded->manifest.generation, i)]);
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

// `json` stored as docs/FORMAT.md says, built here rather than by Put: frames of `frame_size` raw
// bytes (any size from 1: Put's are at least kMinFrameSize), inline if `chunk_size` is 0, else in
// chunks of `chunk_size` (from kMinChunkSize), so frames straddle chunks.
Entry MakeEntry(std::string_view json, std::uint32_t frame_size, std::uint32_t chunk_size,
                std::uint64_t generation = 0x5eed5eed5eed5eed) {
  internal::Codec codec(3, 0);
  internal::Manifest m;
  m.generation = generation;
  m.raw_size = json.size();
  m.frame_size = frame_size;
  m.created_unix_ms = 1'780'000'000'000;
  std::string payload;
  for (std::size_t at = 0; at < json.size(); at += frame_size) {
    const std::string_view raw = json.substr(at, frame_size);
    std::string frame(internal::CompressBound(raw.size()), '\0');
    const absl::StatusOr<std::size_t> size = codec.CompressFrame(raw, {frame.data(), frame.size()});
    if (!size.ok()) return {};
    const std::string_view stored(frame.data(), *size);
    m.frames.push_back({stored.size(), internal::Checksum({&stored, 1})});
    payload += stored;
  }
  m.stored_size = payload.size();
  m.checksum = internal::FrameTableChecksum(m.frames);
  Entry entry;
  if (chunk_size == 0) {
    m.chunk_size = 1 << 20;
    entry.manifest = internal::EncodeManifest(m, StoredKey(), payload);
    return entry;
  }
  m.chunk_size = chunk_size;
  m.chunk_count = static_cast<std::uint32_t>((payload.size() + chunk_size - 1) / chunk_size);
  entry.manifest = internal::EncodeManifest(m, StoredKey(), {});
  for (std::size_t at = 0; at < payload.size(); at += chunk_size) {
    entry.chunks.push_back(payload.substr(at, chunk_size));
  }
  return entry;
}

std::string ReadPathInput(std::uint8_t flags, const std::vector<std::string>& pieces) {
  std::string input(1, static_cast<char>(flags));
  for (const std::string& piece : pieces) input += Piece(piece);
  return input;
}

std::vector<std::string> PiecesOf(const Entry& e) {
  std::vector<std::string> pieces = {e.manifest};
  pieces.insert(pieces.end(), e.chunks.begin(), e.chunks.end());
  return pieces;
}

void SetLE64(std::string& bytes, std::size_t offset, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[offset + i] = static_cast<char>(value >> (8 * i));
}

std::uint64_t LE64(std::string_view bytes, std::size_t offset) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

std::uint32_t LE32(std::string_view bytes, std::size_t offset) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value |= std::uint32_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

// Reseals a header of the version its byte 4 names (1: 64 bytes, 2: 72, else 80).
void Reseal(std::string& bytes) {
  const std::size_t header = bytes[4] == 1   ? internal::kManifestHeaderSizeV1
                             : bytes[4] == 2 ? internal::kManifestHeaderSizeV2
                                             : internal::kManifestHeaderSize;
  if (bytes.size() < header) return;
  const std::string_view covered(bytes.data(), header - 8);
  SetLE64(bytes, header - 8, internal::Checksum({&covered, 1}));
}

// The manifest an earlier release (format version 1 or 2, docs/FORMAT.md) wrote for the one-frame
// entry whose version-3 manifest is `v3`: bytes 0-55 with that version and the frame's checksum as
// the payload checksum, (version 2) the key hash, the header checksum, then the inline payload.
// Version 1 records no key. Empty if `v3` is not one frame.
std::string AsVersion(std::string_view v3, int version) {
  constexpr std::size_t kOneFrame = internal::kManifestHeaderSize + internal::kFrameEntrySize;
  if (v3.size() < kOneFrame || LE32(v3, 68) != 1) return "";
  const std::size_t header =
      version == 1 ? internal::kManifestHeaderSizeV1 : internal::kManifestHeaderSizeV2;
  std::string old(v3.substr(0, header));  // 0-55 are every version's; 56-63 the key hash
  old[4] = static_cast<char>(version);
  SetLE64(old, 40, LE64(v3, internal::kManifestHeaderSize + 4));
  Reseal(old);
  return old.append(v3.substr(kOneFrame));
}
std::string AsVersion1(std::string_view v3) { return AsVersion(v3, 1); }
std::string AsVersion2(std::string_view v3) { return AsVersion(v3, 2); }

// A version-2 or 3 manifest with the key hash of `stored_key`, resealed: what a writer for that
// key would have stored.
std::string BoundTo(std::string manifest, std::string_view stored_key) {
  SetLE64(manifest, 56, internal::Checksum({&stored_key, 1}));
  Reseal(manifest);
  return manifest;
}

void AddEntrySeeds(const Entry& e, Seeds& seeds) {
  std::vector<std::string>& manifest = seeds["manifest"];
  std::vector<std::string>& read = seeds["read_path"];
  const std::vector<std::string> pieces = PiecesOf(e);
  const std::uint32_t frames = LE32(e.manifest, 68);
  const std::size_t table_end = internal::ManifestSize(frames);

  manifest.push_back(e.manifest);
  manifest.push_back(e.manifest.substr(0, internal::kManifestHeaderSize - 1));
  manifest.push_back(e.manifest.substr(0, table_end - 1));  // the table cut short
  std::string v4 = e.manifest;
  v4[4] = 4;  // an unknown format version (the target reseals it)
  manifest.push_back(v4);
  std::string unknown_bits = e.manifest;
  unknown_bits[6] = static_cast<char>(unknown_bits[6] | 0x80);  // refused: not versions 1 to 3
  unknown_bits[7] = 1;
  manifest.push_back(unknown_bits);
  manifest.push_back(e.manifest + "x");
  manifest.push_back(BoundTo(e.manifest, "cc:{other}"));  // another key's (the target rebinds it)
  std::string bad_table = e.manifest;  // a frame size changed (the target retables it)
  bad_table[internal::kManifestHeaderSize] ^= 1;
  manifest.push_back(bad_table);

  read.push_back(ReadPathInput(kKeyed, pieces));                          // intact, static
  read.push_back(ReadPathInput(0, pieces));                               // intact, scripted
  read.push_back(ReadPathInput(kKeyed | kReseal | kRechecksum, pieces));  // fix-ups: no-ops
  read.push_back(ReadPathInput(kKeyed | kSinkFails, pieces));             // the sink gives up
  read.push_back(ReadPathInput(kKeyed | kLongKey, pieces));  // another key's entry: refused
  read.push_back(ReadPathInput(kKeyed | kLongKey | kRebind, pieces));  // rebound: read
  read.push_back(ReadPathInput(kKeyed, {e.manifest.substr(0, e.manifest.size() / 2)}));
  for (const int version : {1, 2}) {  // as earlier releases wrote it (one frame only)
    std::vector<std::string> old = pieces;
    old[0] = AsVersion(e.manifest, version);
    if (old[0].empty()) break;
    manifest.push_back(old[0]);
    manifest.push_back(old[0].substr(0, version == 1 ? 63 : 71));
    read.push_back(ReadPathInput(kKeyed, old));
    read.push_back(ReadPathInput(0, old));
    read.push_back(ReadPathInput(kKeyed | kLongKey | kRebind, old));
  }
  {
    // A flipped payload byte: caught by the frame's checksum, or (rechecksummed) by the decoder;
    // in the first frame's bytes, and in the last's (a stream has given the earlier frames).
    const std::size_t payload_at = e.chunks.empty() ? table_end : 0;
    for (const bool last : {false, true}) {
      std::vector<std::string> flipped = pieces;
      std::string& target = e.chunks.empty() ? flipped[0] : (last ? flipped.back() : flipped[1]);
      const std::size_t at =
          last ? target.size() - 3 : payload_at + std::min<std::size_t>(5, target.size() / 2);
      if (at >= target.size() || at < payload_at) continue;
      target[at] = static_cast<char>(target[at] ^ 0x20);
      read.push_back(ReadPathInput(kKeyed, flipped));
      read.push_back(ReadPathInput(kKeyed | kReseal | kRechecksum, flipped));
    }
  }
  {
    // A flipped frame table byte: caught by the table checksum; rechecksummed, by the frames'.
    std::vector<std::string> flipped = pieces;
    flipped[0][internal::kManifestHeaderSize + 1] ^= 0x01;
    read.push_back(ReadPathInput(kKeyed, flipped));
    read.push_back(ReadPathInput(kKeyed | kReseal | kRechecksum, flipped));
  }
  {
    // A raw size one more than the frames declare, in a resealed header.
    std::vector<std::string> wrong = pieces;
    SetLE64(wrong[0], 16, LE64(wrong[0], 16) + 1);
    read.push_back(ReadPathInput(kKeyed | kReseal, wrong));
  }
  if (!e.chunks.empty()) {
    std::vector<std::string> missing = pieces;
    missing.pop_back();
    read.push_back(ReadPathInput(kKeyed, missing));  // the last chunk missing
    std::vector<std::string> longer = pieces;
    longer[1] += "x";
    read.push_back(ReadPathInput(kKeyed, longer));  // a chunk longer than the manifest says
  }
}

// Entries `a` then `b` of one key: a reader that finds a chunk of `a` missing re-reads the
// manifest.
void AddRaceSeeds(const Entry& a, const Entry& b, Seeds& seeds) {
  if (a.chunks.empty()) return;
  std::vector<std::string> torn = {a.manifest};
  torn.insert(torn.end(), a.chunks.begin(), a.chunks.end() - 1);
  torn.push_back("");  // the last chunk of `a`: gone
  std::vector<std::string> same = torn;
  torn.push_back(b.manifest);  // the manifest changed: start over...
  torn.push_back(b.manifest);  // ...and read `b`
  torn.insert(torn.end(), b.chunks.begin(), b.chunks.end());
  seeds["read_path"].push_back(ReadPathInput(0, torn));
  same.push_back(a.manifest);  // the manifest did not change: `a` lost a chunk
  seeds["read_path"].push_back(ReadPathInput(0, same));
  // An earlier release's `a` replaced by this release's `b` (an upgrade, while read).
  for (const int version : {1, 2}) {
    std::vector<std::string> upgraded = torn;
    upgraded[0] = AsVersion(a.manifest, version);
    if (upgraded[0].empty()) break;
    seeds["read_path"].push_back(ReadPathInput(0, upgraded));
  }
}

// A bare manifest (the current format version, zstd) of one frame with the given sizes, sealed
// and bound to `stored_key` (by default kKey's, "cc:{doc}"); an inline one is followed by `stored`
// bytes of 'x'.
std::string Header(std::uint64_t raw, std::uint64_t stored, std::uint32_t chunk_size,
                   std::uint32_t count, const std::string& stored_key = StoredKey()) {
  internal::Manifest m;
  m.generation = 0x1234;
  m.raw_size = raw;
  m.stored_size = stored;
  m.chunk_size = chunk_size;
  m.chunk_count = count;
  m.frame_size = raw;
  m.frames = {{stored, 0x0f0f0f0f0f0f0f0f}};
  m.checksum = internal::FrameTableChecksum(m.frames);
  return internal::EncodeManifest(m, stored_key, count == 0 ? std::string(stored, 'x') : "");
}

// Manifests that claim what no writer for the fuzz targets' cache makes (issue 15 item 5): as
// many 128-byte chunks as max_payload_size allows, and chunks larger than the backend's item, in
// version 3 and 2 (bound to "doc"; rebound for the long key) and version 1 (read under any key);
// and frames as large as the frame size field allows (2^32 - 1 raw bytes) over a small payload.
void AddHostileManifests(Seeds& seeds) {
  const std::uint64_t stored = ZSTD_COMPRESSBOUND(kMaxPayload);
  const std::uint32_t count = static_cast<std::uint32_t>((stored + 127) / 128);
  const std::string many = Header(kMaxPayload, stored, 128, count);
  const std::string huge = Header(kMaxPayload, 3 << 20, 2 << 20, 2);  // 2 MiB > 1 MiB items
  for (const std::string& manifest :
       {many, huge, AsVersion1(many), AsVersion1(huge), AsVersion2(many), AsVersion2(huge)}) {
    seeds["manifest"].push_back(manifest);
    for (const int flags : {int{kKeyed}, kKeyed | kLongKey | kRebind, int{kLongKey | kRebind}}) {
      seeds["read_path"].push_back(ReadPathInput(static_cast<std::uint8_t>(flags), {manifest}));
    }
  }
  // One frame whose frame size is 2^32 - 1 over a 2 KB document: a reader does not check how the
  // writer chose F, so this reads; a stream must still hold no more than the frame's raw size.
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.002});
  for (const std::uint32_t chunk_size : {0u, 128u}) {
    const Entry wide = MakeEntry(json, ~std::uint32_t{0}, chunk_size);
    seeds["manifest"].push_back(wide.manifest);
    seeds["read_path"].push_back(ReadPathInput(kKeyed, PiecesOf(wide)));
    seeds["read_path"].push_back(ReadPathInput(0, PiecesOf(wide)));
  }
}

void AddEntries(Seeds& seeds) {
  const std::vector<std::string> tiny = {"{}", "[1,2,3]", R"({"a":"b","n":null})",
                                         R"("\u00e9t\u00e9")", R"({"k":[true,false,1.5e3]})"};
  std::vector<std::string> generated;
  for (const double megabytes : {0.002, 0.02, 0.1}) {
    generated.push_back(testing::GenerateCatalogue({.megabytes = megabytes}));
  }
  std::vector<std::string> corpus;
  for (const std::filesystem::path& path : testing::CorpusFiles()) {
    corpus.push_back(testing::ReadFile(path));
  }

  seeds["read_path"].push_back(ReadPathInput(0, {}));  // absent
  std::vector<std::vector<Entry>> runs;
  runs.push_back(PutAll(tiny, 128));
  runs.push_back(PutAll(generated, 128));
  runs.push_back(PutAll(generated, 1024, kMinFrameSize));  // the 0.1 MiB one: 2 frames
  if (!corpus.empty()) runs.push_back(PutAll(corpus, 16384, kMinFrameSize));  // many frames
  // Small frames, straddling small chunks, in entries small enough to fuzz quickly.
  std::vector<Entry> framed;
  for (const std::uint32_t chunk_size : {0u, 128u, 200u}) {
    framed.push_back(MakeEntry(generated[0], 300, chunk_size, 0x1000 + chunk_size));
    framed.push_back(MakeEntry(tiny[2], 1, chunk_size, 0x2000 + chunk_size));  // a byte a frame
    framed.push_back(MakeEntry(tiny[4], 7, chunk_size, 0x3000 + chunk_size));
  }
  runs.push_back(framed);
  for (const std::vector<Entry>& run : runs) {
    for (std::size_t i = 0; i < run.size(); ++i) {
      if (run[i].manifest.empty()) continue;
      AddEntrySeeds(run[i], seeds);
      if (i + 1 < run.size()) AddRaceSeeds(run[i], run[i + 1], seeds);
    }
  }
}

std::string KeysInput(std::string_view a, std::string_view b, std::string_view p,
                      std::string_view q, std::uint64_t generation, std::uint32_t index) {
  return absl::StrCat(Piece(a), Piece(b), Piece(p), Piece(q), LittleEndian(generation),
                      LittleEndian(index));
}

void AddKeys(Seeds& seeds) {
  std::vector<std::string>& s = seeds["keys"];
  s.push_back(KeysInput("catalogue", "catalogue2", "cc:", "cc2:", 0x1f2e3d4c5b6a7988, 1));
  s.push_back(KeysInput("a b{c}", "a%20b%7Bc%7D", "cc:", "", 0, 0));
  s.push_back(KeysInput("", "x", "{", "}", ~std::uint64_t{0}, ~std::uint32_t{0}));
  s.push_back(KeysInput(std::string(1024, 'k'), std::string(1025, 'k'), "p", "p", 42, 7));
  s.push_back(KeysInput(std::string("\xff\x00\xc3\xa9", 4), "%FF%00", "%", "%25", 1, 3));
  s.push_back(KeysInput("{}", "}{", "cc:{x}", "cc:%7Bx%7D", 5, 12));
}

// Deterministic filler bytes for the counters and latencies of fuzz_exporters.
std::string Filler(std::uint64_t seed, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    out.push_back(static_cast<char>(seed >> 56));
  }
  return out;
}

std::string ExportersInput(std::uint8_t mode, std::string_view prefix, std::string_view ns,
                           const std::vector<std::pair<std::string, std::string>>& labels,
                           const std::vector<std::pair<std::string, std::string>>& dimensions,
                           std::int64_t millis, std::uint64_t filler) {
  std::string input(1, static_cast<char>(mode));
  absl::StrAppend(&input, Piece(prefix), Piece(ns));
  input.push_back(static_cast<char>(labels.size()));
  for (const auto& [name, value] : labels) absl::StrAppend(&input, Piece(name), Piece(value));
  input.push_back(static_cast<char>(dimensions.size()));
  for (const auto& [name, value] : dimensions) absl::StrAppend(&input, Piece(name), Piece(value));
  absl::StrAppend(&input, LittleEndian(millis), Filler(filler, 900));
  return input;
}

void AddExporters(Seeds& seeds) {
  std::vector<std::string>& s = seeds["exporters"];
  s.push_back(ExportersInput(0, "chunkcache", "chunkcache",
                             {{"cache", "catalogue"}, {"region", "eu-west-1"}},
                             {{"Service", "catalogue"}, {"Stage", "prod"}}, 1'780'000'000'123, 1));
  s.push_back(ExportersInput(
      0, "app:cache", "Video/Catalogue", {{"cache", "cata\"logue\\x\nnew"}, {"_x", "\xe3\x83\x86"}},
      {{"Service", "catalogue \"api\"\t\\"}, {"Region", "\xe6\x9d\xb1"}}, -1, 2));
  s.push_back(ExportersInput(3 | 4, "", "", {}, {}, 0, 3));
  s.push_back(ExportersInput(8, "1bad", "", {{"le", "x"}}, {{"Hits", "x"}}, 0, 4));
  std::vector<std::pair<std::string, std::string>> many;
  for (int i = 0; i < 31; ++i) many.push_back({absl::StrCat("d", i), "v"});
  s.push_back(ExportersInput(0, "c", std::string(255, 'n'), {{"a", "1"}, {"a", "2"}}, many, 0, 5));
  many.pop_back();
  s.push_back(ExportersInput(0, "c", "ns", {{"code", "x"}}, many, 0, 6));
}

void AddBackendUrls(Seeds& seeds) {
  for (const char* url : {
           "memory://",
           "memory:",
           "memory:/x",
           "momento+https://api.cache.cell-4-us-west-2-1.prod.a.momentohq.com/catalogue",
           "momento+http://127.0.0.1:8080/c",
           "momento+http://[::1]:9/c",
           "momento+http://localhost/c",
           "momento+http://10.0.0.1/c",
           "momento+https://user:%S@host.example/c",
           "momento+https://ho st%S/c",
           "momento+https://host/",
           "momento+https://host/a/b",
           "momento+ftp://host/c",
           "https://api.cache.cell-4-us-west-2-1.prod.a.momentohq.com",
           "https://api.cache.example.com:8443/base/",
           "http://127.0.0.1:1234",
           "http://127.1/x",
           "https://host/?q=1#f",
           "https://u:p@host",
           "redis://:%S@127.0.0.1:6379/2",
           "redis://user:p%25%S@[::1]:7000",
           "redis+cluster://%S@10.0.0.1:7001",
           "unix:///tmp/redis.sock?db=3",
           "redis://:%S@h:99999/x?y#z",
       }) {
    seeds["backend_url"].push_back(url);
  }
}

std::string RedisInput(std::uint8_t ops, const std::vector<std::string>& replies) {
  std::string input(1, static_cast<char>(ops));
  for (const std::string& reply : replies) input += Piece(reply);
  return input;
}

void AddRedis(Seeds& seeds) {
  std::vector<std::string>& s = seeds["redis_replies"];
  const std::string pong = "+PONG\r\n";
  const std::string mget = "*4\r\n$2\r\nv1\r\n$-1\r\n$1\r\nx\r\n$-1\r\n";
  s.push_back(RedisInput(0x3f, {pong, mget, "+OK\r\n+OK\r\n", ":2\r\n", "+OK\r\n",
                                ":-1\r\n:-2\r\n:1000\r\n:5\r\n", mget}));
  s.push_back(RedisInput(0x08, {pong, "$-1\r\n"}));
  s.push_back(RedisInput(0x01, {"-NOAUTH Authentication required.\r\n"}));
  s.push_back(RedisInput(0x01, {"-LOADING Redis is loading\r\n"}));
  s.push_back(RedisInput(0x01, {pong, ":5\r\n"}));
  s.push_back(RedisInput(0x01, {pong, "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"}));
  s.push_back(RedisInput(0x01, {pong, "*4\r\n:1\r\n$-1\r\n$-1\r\n$-1\r\n"}));
  s.push_back(RedisInput(0x01, {pong, "$999999999\r\nxx"}));
  s.push_back(RedisInput(0x01, {pong, "*4\r\n$2\r\nv1"}));  // cut short
  s.push_back(
      RedisInput(0x01, {pong, "-TRYAGAIN Multiple keys request during rehashing\r\n", mget}));
  s.push_back(RedisInput(0x01, {pong, "-ASK 99 @S\r\n", "+OK\r\n" + mget}));
  s.push_back(RedisInput(0x01, {pong, "-ASK 99 127.0.0.1:7000\r\n"}));
  s.push_back(RedisInput(0x06, {pong, "-MOVED 1 10.1.2.3:6379\r\n", "-ERR unknown command\r\n"}));

  // MOVED to a cluster whose every slot is the fake server ("?" port 0): one MGET per slot, in
  // slot order, in one pipeline.
  const std::string slots_all = "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$1\r\n?\r\n:0\r\n";
  std::map<int, std::vector<std::string>> by_slot;  // the MGET of each slot
  for (const char* key : {"{k}a", "{k}b", "other", "{x}y"}) {
    by_slot[RedisClusterSlot(key)].push_back(key);
  }
  std::string per_slot;
  for (const auto& [slot, keys] : by_slot) {
    absl::StrAppend(&per_slot, "*", keys.size(), "\r\n");
    for (std::size_t i = 0; i < keys.size(); ++i) absl::StrAppend(&per_slot, "$1\r\nv\r\n");
  }
  s.push_back(RedisInput(0x21, {pong, "-MOVED 1234 @S\r\n", slots_all, mget, per_slot}));
  s.push_back(RedisInput(0x01, {pong, "-MOVED 1 @S\r\n",
                                "*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n"}));
  s.push_back(RedisInput(0x01, {pong, "-MOVED 1 @S\r\n", "*1\r\n*2\r\n:0\r\n:1\r\n"}));
  s.push_back(RedisInput(0x01, {pong, "-MOVED 1 @S\r\n",
                                "*2\r\n*3\r\n:0\r\n:8000\r\n*2\r\n$0\r\n\r\n:0\r\n"
                                "*3\r\n:8001\r\n:16383\r\n*3\r\n$1\r\n?\r\n:0\r\n$2\r\nid\r\n"}));
}

}  // namespace seeds

// Every target's seeds, by target name ("manifest" for fuzz_manifest, ...).
Seeds GenerateSeeds() {
  Seeds all;
  seeds::AddEntries(all);
  seeds::AddHostileManifests(all);
  seeds::AddKeys(all);
  seeds::AddExporters(all);
  seeds::AddBackendUrls(all);
  seeds::AddRedis(all);
  return all;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  for (const auto& [target, inputs] : chunkcache::fuzz::GenerateSeeds()) {
    std::filesystem::create_directories(dir / target);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      chunkcache::testing::WriteFile(dir / target / absl::StrCat("seed_", i), inputs[i]);
    }
    std::printf("%s: %zu seeds\n", target.c_str(), inputs.size());
  }
  return 0;
}
#endif
