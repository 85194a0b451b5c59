#include "format/codec.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "simdjson.h"
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include "xxhash.h"
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_d_stableOutBuffer: decode straight into the output
#include "zstd.h"

namespace chunkcache::internal {
namespace {

// The first bytes of every zstd frame (RFC 8878), as stored: little-endian 0xFD2FB528.
constexpr char kZstdMagic[4] = {'\x28', '\xb5', '\x2f', '\xfd'};

// Idle contexts kept per pool. Parsers keep buffers sized for the largest document they saw, so
// fewer of them are kept.
constexpr std::size_t kMaxIdleContexts = 8;
constexpr std::size_t kMaxIdleParsers = 2;

// Bounds of the zstd multithreaded job size we choose (zstd's own minimum is 512 KiB).
constexpr std::size_t kMinJobSize = std::size_t{1} << 20;
constexpr std::size_t kMaxJobSize = std::size_t{256} << 20;

absl::Status ZstdError(absl::string_view what, std::size_t code) {
  return absl::InternalError(absl::StrCat("chunkcache: ", what, ": ", ZSTD_getErrorName(code)));
}

absl::Status Undecodable(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("chunkcache: stored bytes do not decode: ", what));
}

}  // namespace

struct Codec::CompressionContext {
  CompressionContext() : ctx(ZSTD_createCCtx()) {}
  ~CompressionContext() { ZSTD_freeCCtx(ctx); }
  ZSTD_CCtx* const ctx;
};

struct Codec::DecompressionContext {
  DecompressionContext() : ctx(ZSTD_createDCtx()) {}
  ~DecompressionContext() { ZSTD_freeDCtx(ctx); }
  ZSTD_DCtx* const ctx;
};

std::size_t CompressBound(std::size_t raw_size) { return ZSTD_compressBound(raw_size); }

std::uint64_t Checksum(absl::Span<const std::string_view> parts) {
  if (parts.size() == 1) return XXH3_64bits(parts[0].data(), parts[0].size());
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (const std::string_view part : parts) XXH3_64bits_update(&state, part.data(), part.size());
  return XXH3_64bits_digest(&state);
}

absl::Status CheckCompressionSettings(int level, int workers) {
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel() || level == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunkcache: compression_level %d is outside [%d, %d] or zero", level,
                        ZSTD_minCLevel(), ZSTD_maxCLevel()));
  }
  const ZSTD_bounds bounds = ZSTD_cParam_getBounds(ZSTD_c_nbWorkers);
  if (workers < 0 || (workers > 0 && (ZSTD_isError(bounds.error) || workers > bounds.upperBound))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: compression_workers %d is not supported by this zstd (at most %d)", workers,
        ZSTD_isError(bounds.error) ? 0 : bounds.upperBound));
  }
  return absl::OkStatus();
}

Codec::Codec(int compression_level, int compression_workers)
    : level_(compression_level),
      workers_(compression_workers),
      compressors_([] { return std::make_unique<CompressionContext>(); }, kMaxIdleContexts),
      decompressors_([] { return std::make_unique<DecompressionContext>(); }, kMaxIdleContexts),
      parsers_([] { return std::make_unique<simdjson::dom::parser>(); }, kMaxIdleParsers) {}

Codec::~Codec() = default;

absl::Status Codec::ValidateJson(std::string_view json) {
  auto parser = parsers_.Acquire();
  // The parser copies the input into its own padded buffer, reused across calls.
  const simdjson::error_code error = parser->parse(json.data(), json.size()).error();
  if (error == simdjson::SUCCESS) return absl::OkStatus();
  if (error == simdjson::MEMALLOC) {
    return absl::ResourceExhaustedError("chunkcache: out of memory validating JSON");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("chunkcache: the payload is not valid JSON: ", simdjson::error_message(error)));
}

absl::StatusOr<CompressedBuffer> Codec::Compress(std::string_view raw) {
  CompressedBuffer out;
  const std::size_t bound = ZSTD_compressBound(raw.size());
  out.data.reset(new char[bound]);  // not zero-filled: untouched pages cost nothing
  absl::StatusOr<std::size_t> size = CompressFrame(raw, {out.data.get(), bound}, true);
  if (!size.ok()) return size.status();
  out.size = *size;
  return out;
}

absl::StatusOr<std::size_t> Codec::CompressFrame(std::string_view raw, absl::Span<char> out,
                                                 bool use_workers) {
  auto context = compressors_.Acquire();
  ZSTD_CCtx* const cctx = context->ctx;
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  const int workers = use_workers ? workers_ : 0;
  std::size_t rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level_);
  if (!ZSTD_isError(rc)) rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, workers);
  if (!ZSTD_isError(rc) && workers > 0) {
    // zstd's default job is 4 windows (8 MB at level 3): too coarse to keep the workers busy on
    // a payload of a few MB. Aim for two jobs per worker.
    const std::size_t job = std::max(kMinJobSize, raw.size() / (2 * workers));
    rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_jobSize, static_cast<int>(std::min(job, kMaxJobSize)));
  }
  if (ZSTD_isError(rc)) return ZstdError("setting compression parameters", rc);
  rc = ZSTD_compress2(cctx, out.data(), out.size(), raw.data(), raw.size());
  if (ZSTD_isError(rc)) return ZstdError("compressing", rc);
  return rc;
}

absl::Status CheckZstdFrameStart(std::string_view stored) {
  if (stored.size() < 4 || std::memcmp(stored.data(), kZstdMagic, 4) != 0) {
    return Undecodable("not a zstd frame");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Codec::Decompress(absl::Span<const std::string_view> parts,
                                              std::size_t raw_size) {
  // Before the output is allocated: `raw_size` may come from damaged bytes.
  if (absl::Status s = CheckFrameHeader(parts, raw_size); !s.ok()) return s;
  std::string out(raw_size, '\0');
  if (absl::Status s = DecodeFrame(parts, {out.data(), out.size()}); !s.ok()) return s;
  return out;
}

absl::Status CheckFrameHeader(absl::Span<const std::string_view> parts, std::size_t raw_size) {
  // The frame header may straddle parts: gather its first bytes.
  char header[ZSTD_FRAMEHEADERSIZE_MAX];
  std::size_t header_size = 0;
  for (std::size_t i = 0; i < parts.size() && header_size < sizeof(header); ++i) {
    const std::size_t n = std::min(parts[i].size(), sizeof(header) - header_size);
    if (n > 0) std::memcpy(header + header_size, parts[i].data(), n);  // data() may be null
    header_size += n;
  }
  // A skippable frame (or anything else) declares no payload: only a zstd frame is one.
  if (absl::Status s = CheckZstdFrameStart({header, header_size}); !s.ok()) return s;
  const unsigned long long declared = ZSTD_getFrameContentSize(header, header_size);
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR) {
    return Undecodable("no zstd frame with a declared content size");
  }
  if (declared != raw_size) {
    return Undecodable(absl::StrFormat("frame declares %d bytes, the manifest %d",
                                       static_cast<long long>(declared), raw_size));
  }
  return absl::OkStatus();
}

absl::Status Codec::DecodeFrame(absl::Span<const std::string_view> parts, absl::Span<char> out) {
  if (absl::Status s = CheckFrameHeader(parts, out.size()); !s.ok()) return s;
  auto context = decompressors_.Acquire();
  ZSTD_DCtx* const dctx = context->ctx;

  if (parts.size() == 1) {
    if (ZSTD_findFrameCompressedSize(parts[0].data(), parts[0].size()) != parts[0].size()) {
      return Undecodable("not exactly one frame");
    }
    const std::size_t rc =
        ZSTD_decompressDCtx(dctx, out.data(), out.size(), parts[0].data(), parts[0].size());
    if (ZSTD_isError(rc)) return Undecodable(ZSTD_getErrorName(rc));
    if (rc != out.size()) return Undecodable("short output");
    return absl::OkStatus();
  }

  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters);
  // The output buffer never moves, so zstd decodes into it directly instead of via its window.
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_stableOutBuffer, 1);
  ZSTD_outBuffer output = {out.data(), out.size(), 0};
  std::size_t rc = 1;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    ZSTD_inBuffer input = {parts[i].data(), parts[i].size(), 0};
    while (input.pos < input.size) {
      if (rc == 0) return Undecodable("bytes after the end of the frame");
      rc = ZSTD_decompressStream(dctx, &output, &input);
      if (ZSTD_isError(rc)) return Undecodable(ZSTD_getErrorName(rc));
    }
  }
  if (rc != 0) return Undecodable("the frame is truncated");
  if (output.pos != out.size()) return Undecodable("short output");
  return absl::OkStatus();
}

}  // namespace chunkcache::internal
