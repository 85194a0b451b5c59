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

template <std::size_t kSubBucketBits>
std::size_t BasicLatencyHistogram<kSubBucketBits>::BucketOf(std::uint64_t nanos) {
  if (nanos < kSubBuckets) return static_cast<std::size_t>(nanos);
  const std::size_t exponent = std::bit_width(nanos) - 1;  // >= kSubBucketBits
  const std::size_t shift = exponent - kSubBucketBits;
  const std::size_t mantissa = static_cast<std::size_t>(nanos >> shift) & (kSubBuckets - 1);
  return kSubBuckets + shift * kSubBuckets + mantissa;
}

template <std::size_t kSubBucketBits>
std::uint64_t BasicLatencyHistogram<kSubBucketBits>::BucketUpperBound(std::size_t bucket) {
  if (bucket < kSubBuckets) return bucket;
  const std::size_t shift = (bucket - kSubBuckets) / kSubBuckets;
  const std::uint64_t mantissa = (bucket - kSubBuckets) % kSubBuckets;
  const std::uint64_t lower = (kSubBuckets + mantissa) << shift;
  return lower + ((std::uint64_t{1} << shift) - 1);
}

template <std::size_t kSubBucketBits>
void BasicLatencyHistogram<kSubBucketBits>::Record(absl::Duration latency) {
  const std::int64_t signed_nanos = absl::ToInt64Nanoseconds(latency);
  const std::uint64_t nanos = signed_nanos < 0 ? 0 : static_cast<std::uint64_t>(signed_nanos);
  buckets_[BucketOf(nanos)].fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(nanos, std::memory_order_relaxed);
  std::uint64_t max = max_nanos_.load(std::memory_order_relaxed);
  while (nanos > max && !max_nanos_.compare_exchange_weak(max, nanos, std::memory_order_relaxed)) {
  }
}

template <std::size_t kSubBucketBits>
std::uint64_t BasicLatencyHistogram<kSubBucketBits>::Snapshot(Counts& counts) const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    counts[i] = buckets_[i].load(std::memory_order_relaxed);
    total += counts[i];
  }
  return total;
}

template <std::size_t kSubBucketBits>
absl::Duration BasicLatencyHistogram<kSubBucketBits>::PercentileOf(const Counts& counts,
                                                                   std::uint64_t total,
                                                                   std::uint64_t max,
                                                                   double quantile) {
  if (total == 0) return absl::ZeroDuration();
  // Nearest rank: the smallest value with at least `quantile` of the samples at or below it.
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(
             std::ceil(std::clamp(quantile, 0.0, 1.0) * static_cast<double>(total))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts[i];
    if (seen >= rank) return absl::Nanoseconds(std::min(BucketUpperBound(i), max));
  }
  return absl::Nanoseconds(max);
}

template <std::size_t kSubBucketBits>
absl::Duration BasicLatencyHistogram<kSubBucketBits>::Percentile(double quantile) const {
  Counts counts;
  const std::uint64_t total = Snapshot(counts);
  return PercentileOf(counts, total, max_nanos_.load(std::memory_order_relaxed), quantile);
}

template <std::size_t kSubBucketBits>
std::uint64_t BasicLatencyHistogram<kSubBucketBits>::Count() const {
  std::uint64_t total = 0;
  for (const std::atomic<std::uint64_t>& bucket : buckets_) {
    total += bucket.load(std::memory_order_relaxed);
  }
  return total;
}

template <std::size_t kSubBucketBits>
absl::Duration BasicLatencyHistogram<kSubBucketBits>::Max() const {
  return absl::Nanoseconds(max_nanos_.load(std::memory_order_relaxed));
}

template <std::size_t kSubBucketBits>
std::vector<typename BasicLatencyHistogram<kSubBucketBits>::Bucket>
BasicLatencyHistogram<kSubBucketBits>::NonEmptyBuckets() const {
  std::vector<Bucket> occupied;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    const std::uint64_t count = buckets_[i].load(std::memory_order_relaxed);
    if (count != 0) occupied.push_back({absl::Nanoseconds(BucketUpperBound(i)), count});
  }
  return occupied;
}

template <std::size_t kSubBucketBits>
LatencyStats BasicLatencyHistogram<kSubBucketBits>::Summary() const {
  LatencyStats stats;
  Counts counts;
  const std::uint64_t total = Snapshot(counts);
  if (total == 0) return stats;
  const std::uint64_t max = max_nanos_.load(std::memory_order_relaxed);
  stats.count = total;
  const std::uint64_t sum = sum_nanos_.load(std::memory_order_relaxed);
  stats.sum = absl::Nanoseconds(sum);
  stats.mean = absl::Nanoseconds(sum / total);
  stats.p50 = PercentileOf(counts, total, max, 0.50);
  stats.p90 = PercentileOf(counts, total, max, 0.90);
  stats.p99 = PercentileOf(counts, total, max, 0.99);
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

template class BasicLatencyHistogram<3>;
template class BasicLatencyHistogram<7>;

}  // namespace internal
}  // namespace chunkcache
