// A lock-free latency histogram: log-linear buckets (8 per power of two, so a reported
// percentile is at most 12.5 % above the true value) over nanoseconds. Safe for concurrent use.

#ifndef CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_
#define CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"
#include "chunkcache/stats.h"

namespace chunkcache::internal {

class LatencyHistogram {
 public:
  void Record(absl::Duration latency);
  LatencyStats Summary() const;

  // Bucket arithmetic, exposed for tests.
  static std::size_t BucketOf(std::uint64_t nanos);
  static std::uint64_t BucketUpperBound(std::size_t bucket);

 private:
  static constexpr std::size_t kSubBucketBits = 3;
  static constexpr std::size_t kSubBuckets = std::size_t{1} << kSubBucketBits;
  static constexpr std::size_t kBuckets = kSubBuckets + (64 - kSubBucketBits) * kSubBuckets;

  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_nanos_{0};
  std::atomic<std::uint64_t> max_nanos_{0};
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_
