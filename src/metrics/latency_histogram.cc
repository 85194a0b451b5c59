#include "metrics/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace chunkcache {

std::array<absl::Duration, kLatencyBuckets> LatencyBucketBounds() {
  using absl::Microseconds;
  using absl::Milliseconds;
  using absl::Seconds;
  return {Microseconds(50),
          Microseconds(100),
          Microseconds(250),
          Microseconds(500),
          Milliseconds(1),
          Milliseconds(2.5),
          Milliseconds(5),
          Milliseconds(10),
          Milliseconds(25),
          Milliseconds(50),
          Milliseconds(100),
          Milliseconds(250),
          Milliseconds(500),
          Seconds(1),
          Seconds(2.5),
          Seconds(5),
          Seconds(10),
          Seconds(30),
          absl::InfiniteDuration()};
}

namespace internal {

std::size_t LatencyHistogram::BucketOf(std::uint64_t nanos) {
  if (nanos < kSubBuckets) return static_cast<std::size_t>(nanos);
  const std::size_t exponent = std::bit_width(nanos) - 1;  // >= kSubBucketBits
  const std::size_t shift = exponent - kSubBucketBits;
  const std::size_t mantissa = static_cast<std::size_t>(nanos >> shift) & (kSubBuckets - 1);
  return kSubBuckets + shift * kSubBuckets + mantissa;
}

std::uint64_t LatencyHistogram::BucketUpperBound(std::size_t bucket) {
  if (bucket < kSubBuckets) return bucket;
  const std::size_t shift = (bucket - kSubBuckets) / kSubBuckets;
  const std::uint64_t mantissa = (bucket - kSubBuckets) % kSubBuckets;
  const std::uint64_t lower = (kSubBuckets + mantissa) << shift;
  return lower + ((std::uint64_t{1} << shift) - 1);
}

void LatencyHistogram::Record(absl::Duration latency) {
  const std::int64_t signed_nanos = absl::ToInt64Nanoseconds(latency);
  const std::uint64_t nanos = signed_nanos < 0 ? 0 : static_cast<std::uint64_t>(signed_nanos);
  buckets_[BucketOf(nanos)].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(nanos, std::memory_order_relaxed);
  std::uint64_t max = max_nanos_.load(std::memory_order_relaxed);
  while (nanos > max && !max_nanos_.compare_exchange_weak(max, nanos, std::memory_order_relaxed)) {
  }
}

LatencyStats LatencyHistogram::Summary() const {
  LatencyStats stats;
  std::array<std::uint64_t, kBuckets> counts;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    counts[i] = buckets_[i].load(std::memory_order_relaxed);
    total += counts[i];
  }
  if (total == 0) return stats;
  const std::uint64_t max = max_nanos_.load(std::memory_order_relaxed);
  auto percentile = [&](double q) {
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts[i];
      if (seen >= rank) return absl::Nanoseconds(std::min(BucketUpperBound(i), max));
    }
    return absl::Nanoseconds(max);
  };
  stats.count = total;
  const std::uint64_t sum = sum_nanos_.load(std::memory_order_relaxed);
  stats.sum = absl::Nanoseconds(sum);
  stats.mean = absl::Nanoseconds(sum / total);
  stats.p50 = percentile(0.50);
  stats.p90 = percentile(0.90);
  stats.p99 = percentile(0.99);
  stats.max = absl::Nanoseconds(max);

  const std::array<absl::Duration, kLatencyBuckets> bounds = LatencyBucketBounds();
  std::size_t bound = 0;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    if (counts[i] == 0) continue;
    const absl::Duration upper = absl::Nanoseconds(BucketUpperBound(i));
    while (upper > bounds[bound]) stats.buckets[bound++] = seen;
    seen += counts[i];
  }
  while (bound < kLatencyBuckets) stats.buckets[bound++] = seen;
  return stats;
}

}  // namespace internal
}  // namespace chunkcache
