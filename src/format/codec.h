// The payload codec: JSON validation (simdjson), zstd compression and decompression, and the
// checksum of stored bytes. Contexts and parsers are pooled and reused across calls.

#ifndef CHUNKCACHE_SRC_FORMAT_CODEC_H_
#define CHUNKCACHE_SRC_FORMAT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "internal/object_pool.h"

namespace simdjson::dom {
class parser;
}  // namespace simdjson::dom

namespace chunkcache::internal {

// Compressed bytes in a buffer allocated once at the compression bound; only the pages written
// are touched, so a 10 MB payload's 3 MB of output costs 3 MB.
struct CompressedBuffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;

  std::string_view view() const { return {data.get(), size}; }
};

// ZSTD_compressBound: the most bytes zstd writes for `raw_size` bytes of input.
std::size_t CompressBound(std::size_t raw_size);

// XXH3-64 (seed 0) of the concatenation of `parts`.
std::uint64_t Checksum(absl::Span<const std::string_view> parts);

// OK if `stored` starts with a zstd frame's magic number; DataLoss otherwise (a skippable frame,
// say, which declares no payload). Decompress checks it too.
absl::Status CheckZstdFrameStart(std::string_view stored);

// OK if the concatenation of `parts` starts with a zstd frame header that declares a content
// size of `raw_size` bytes; DataLoss otherwise. DecodeFrame checks it too.
absl::Status CheckFrameHeader(absl::Span<const std::string_view> parts, std::size_t raw_size);

// OK if `level` and `workers` are usable by this zstd; InvalidArgument otherwise.
absl::Status CheckCompressionSettings(int level, int workers);

// Safe for concurrent use.
class Codec {
 public:
  Codec(int compression_level, int compression_workers);
  ~Codec();

  // OK if `json` is one valid JSON document; InvalidArgument saying why not otherwise.
  absl::Status ValidateJson(std::string_view json);

  // One zstd frame holding `raw`, with its content size recorded in the frame header, compressed
  // with zstd's own threads if the codec has workers.
  absl::StatusOr<CompressedBuffer> Compress(std::string_view raw);

  // Compresses `raw` as one zstd frame (content size recorded) into `out`, which must hold
  // ZSTD_compressBound(raw.size()) bytes; the frame's size. With `use_workers`, zstd's own
  // threads (compression_workers of them) compress it; otherwise the calling thread does.
  absl::StatusOr<std::size_t> CompressFrame(std::string_view raw, absl::Span<char> out,
                                            bool use_workers = false);

  // Decodes the zstd frame formed by the concatenation of `parts` into exactly `out.size()`
  // bytes at `out`. DataLoss if the bytes are not exactly one frame declaring and holding that
  // many bytes; writes nothing beyond `out`.
  absl::Status DecodeFrame(absl::Span<const std::string_view> parts, absl::Span<char> out);

  // Decodes the zstd frame formed by the concatenation of `parts` into a string of exactly
  // `raw_size` bytes, allocated once. DataLoss if the bytes are not exactly one frame of that
  // size; never allocates more than `raw_size` for the output.
  absl::StatusOr<std::string> Decompress(absl::Span<const std::string_view> parts,
                                         std::size_t raw_size);

 private:
  struct CompressionContext;
  struct DecompressionContext;

  const int level_;
  const int workers_;
  ObjectPool<CompressionContext> compressors_;
  ObjectPool<DecompressionContext> decompressors_;
  ObjectPool<simdjson::dom::parser> parsers_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_FORMAT_CODEC_H_
