// A lock-free latency histogram over nanoseconds, in log-linear buckets: 2^kSubBucketBits buckets
// per power of two, so a reported percentile is at least the true value and at most
// 2^-kSubBucketBits above it (values below 2^kSubBucketBits ns are exact). The maximum, the sum
// and the count are kept exactly. Zero and negative latencies count as 0 ns.
//
// Two precisions are compiled:
//   LatencyHistogram         8 buckets per power of two (12.5 %, 3.8 KiB): the cache's stats.
//   PreciseLatencyHistogram  128 buckets per power of two (0.8 %, 59 KiB): the load generator.
//
//   internal::LatencyHistogram histogram;
//   histogram.Record(absl::Now() - start);
//   const LatencyStats stats = histogram.Summary();      // count, mean, p50/p90/p99, max, buckets
//   const absl::Duration p999 = histogram.Percentile(0.999);
//
// Thread safety: Record() may run on any number of threads at once, together with the readers.
// A reader sees a snapshot that may miss the values being recorded at that moment.

#ifndef CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_
#define CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "chunkcache/stats.h"

namespace chunkcache::internal {

template <std::size_t kSubBucketBits>
class BasicLatencyHistogram {
 public:
  // One occupied bucket: the values in it are at most `upper_bound`.
  struct Bucket {
    absl::Duration upper_bound;
    std::uint64_t count = 0;
  };

  void Record(absl::Duration latency);

  // Count, sum, mean, p50/p90/p99, max and the cumulative LatencyBucketBounds() counts, all from
  // one snapshot. All zero when nothing was recorded.
  LatencyStats Summary() const;

  // The nearest-rank `quantile` (clamped to [0, 1]): the upper bound of the first bucket that
  // holds at least that share of the values, capped at the maximum. Zero when empty.
  absl::Duration Percentile(double quantile) const;

  std::uint64_t Count() const;
  absl::Duration Max() const;

  // The buckets holding at least one value, in increasing order.
  std::vector<Bucket> NonEmptyBuckets() const;

  // Bucket arithmetic, exposed for tests.
  static std::size_t BucketOf(std::uint64_t nanos);
  static std::uint64_t BucketUpperBound(std::size_t bucket);

 private:
  static constexpr std::size_t kSubBuckets = std::size_t{1} << kSubBucketBits;
  static constexpr std::size_t kBuckets = kSubBuckets + (64 - kSubBucketBits) * kSubBuckets;
  using Counts = std::array<std::uint64_t, kBuckets>;

  // Copies the bucket counts into `counts`; returns their total.
  std::uint64_t Snapshot(Counts& counts) const;
  static absl::Duration PercentileOf(const Counts& counts, std::uint64_t total, std::uint64_t max,
                                     double quantile);

  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> sum_nanos_{0};
  std::atomic<std::uint64_t> max_nanos_{0};
};

using LatencyHistogram = BasicLatencyHistogram<3>;
using PreciseLatencyHistogram = BasicLatencyHistogram<7>;

extern template class BasicLatencyHistogram<3>;
extern template class BasicLatencyHistogram<7>;

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_METRICS_LATENCY_HISTOGRAM_H_
