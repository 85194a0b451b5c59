#include "cache/options_check.h"

#include "absl/strings/str_format.h"
#include "format/codec.h"

namespace chunkcache {

absl::Status ValidateCacheOptions(const CacheOptions& options) {
  if (options.chunk_size < kMinChunkSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: chunk_size %d must be at least %d", options.chunk_size, kMinChunkSize));
  }
  if (options.ttl <= absl::ZeroDuration() || options.chunk_ttl_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "chunkcache: ttl must be positive and chunk_ttl_grace not negative");
  }
  if (options.max_payload_size == 0) {
    return absl::InvalidArgumentError("chunkcache: max_payload_size must be positive");
  }
  if (options.load_wait_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("chunkcache: load_wait_timeout must be positive");
  }
  if (options.l1_fresh_for < absl::ZeroDuration() ||
      (options.l1_capacity_bytes > 0 && options.l1_fresh_for >= options.ttl)) {
    return absl::InvalidArgumentError(
        "chunkcache: l1_fresh_for must be at least zero and less than ttl");
  }
  if (options.soft_ttl < absl::ZeroDuration() || options.soft_ttl >= options.ttl ||
      options.refresh_threads < 1) {
    return absl::InvalidArgumentError(
        "chunkcache: soft_ttl must be at least zero and less than ttl, refresh_threads positive");
  }
  if (options.lease_ttl < absl::ZeroDuration() ||
      (options.lease_ttl > absl::ZeroDuration() &&
       (options.lease_poll_initial <= absl::ZeroDuration() ||
        options.lease_poll_max < options.lease_poll_initial))) {
    return absl::InvalidArgumentError(
        "chunkcache: lease_ttl must be at least zero; with a lease, 0 < lease_poll_initial <= "
        "lease_poll_max");
  }
  if (options.load_retry_initial <= absl::ZeroDuration() ||
      options.load_retry_max < options.load_retry_initial ||
      options.unstored_hold < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "chunkcache: 0 < load_retry_initial <= load_retry_max, and unstored_hold at least zero");
  }
  if (options.breaker_failure_threshold < 0 ||
      (options.breaker_failure_threshold > 0 && options.breaker_cooldown <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "chunkcache: breaker_failure_threshold must be at least zero, breaker_cooldown positive");
  }
  if (options.compression_workers > kMaxWorkers || options.decode_workers < 0 ||
      options.decode_workers > kMaxWorkers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunkcache: compression_workers %d and decode_workers %d must be 0 to %d",
                        options.compression_workers, options.decode_workers, kMaxWorkers));
  }
  if (options.frame_size < kMinFrameSize || options.frame_size > kMaxFrameSize) {
    return absl::InvalidArgumentError(absl::StrFormat("chunkcache: frame_size %d must be %d to %d",
                                                      options.frame_size, kMinFrameSize,
                                                      kMaxFrameSize));
  }
  return internal::CheckCompressionSettings(options.compression_level, options.compression_workers);
}

namespace internal {

absl::Status CheckCacheSetup(const Backend* backend, const CacheOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("chunkcache: the backend is null");
  if (absl::Status s = ValidateCacheOptions(options); !s.ok()) return s;
  if (backend->max_item_size() < kMinChunkSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunkcache: the backend's max_item_size %d must be at least %d",
                        backend->max_item_size(), kMinChunkSize));
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace chunkcache
