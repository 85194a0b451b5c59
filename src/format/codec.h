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

// XXH3-64 (seed 0) of the concatenation of `parts`.
std::uint64_t Checksum(absl::Span<const std::string_view> parts);

// OK if `stored` starts with a zstd frame's magic number; DataLoss otherwise (a skippable frame,
// say, which declares no payload). Decompress checks it too.
absl::Status CheckZstdFrameStart(std::string_view stored);

// OK if `level` and `workers` are usable by this zstd; InvalidArgument otherwise.
absl::Status CheckCompressionSettings(int level, int workers);

// Safe for concurrent use.
class Codec {
 public:
  Codec(int compression_level, int compression_workers);
  ~Codec();

  // OK if `json` is one valid JSON document; InvalidArgument saying why not otherwise.
  absl::Status ValidateJson(std::string_view json);

  // One zstd frame holding `raw`, with its content size recorded in the frame header.
  absl::StatusOr<CompressedBuffer> Compress(std::string_view raw);

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
