// A lock-free, HDR-style latency histogram for chunkcache_loadgen.
//
// Values are nanoseconds from 1 us to 60 s (smaller and larger values are clamped to these),
// kept in log-linear buckets: 128 linear sub-buckets per power of two, so a value is reported by
// the upper bound of its bucket, at most 1/128 (0.8 %) above the true value. The maximum is kept
// exactly. Record() may be called from any number of threads at once; readers see a snapshot
// that may miss the values being recorded at that moment.

#ifndef CHUNKCACHE_BENCH_LOADGEN_HISTOGRAM_H_
#define CHUNKCACHE_BENCH_LOADGEN_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace chunkcache::bench {
namespace histogram_internal {

inline constexpr int kSubBucketBits = 7;  // 128 sub-buckets per power of two

constexpr int IndexOf(std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  const int magnitude = std::bit_width(u) - 1;
  if (magnitude < kSubBucketBits) return static_cast<int>(u);
  const int shift = magnitude - kSubBucketBits;
  const auto sub = static_cast<int>(u >> shift);  // in [128, 256)
  return (shift + 1) * (1 << kSubBucketBits) + sub - (1 << kSubBucketBits);
}

constexpr std::int64_t UpperBound(int index) {
  constexpr int kSubBuckets = 1 << kSubBucketBits;
  if (index < kSubBuckets) return index;
  const int shift = index / kSubBuckets - 1;
  const std::int64_t sub = index % kSubBuckets + kSubBuckets;
  return ((sub + 1) << shift) - 1;
}

}  // namespace histogram_internal

class LatencyHistogram {
 public:
  static constexpr std::int64_t kMinNanos = 1'000;
  static constexpr std::int64_t kMaxNanos = 60'000'000'000;

  void Record(std::int64_t nanos) {
    nanos = std::clamp(nanos, kMinNanos, kMaxNanos);
    counts_[IndexOf(nanos)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    std::int64_t seen = max_.load(std::memory_order_relaxed);
    while (nanos > seen && !max_.compare_exchange_weak(seen, nanos, std::memory_order_relaxed)) {
    }
  }

  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::int64_t max_nanos() const { return max_.load(std::memory_order_relaxed); }

  // The smallest bucket bound v such that a fraction `q` of the values is at most v (capped at
  // the exact maximum); 0 when empty.
  std::int64_t ValueAtQuantile(double q) const {
    const std::uint64_t total = count();
    if (total == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(
        std::max(1.0, std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(total))));
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i].load(std::memory_order_relaxed);
      if (seen >= rank) return std::min(UpperBound(i), max_nanos());
    }
    return max_nanos();
  }

  // The non-empty buckets as (upper bound in nanoseconds, count), in increasing order.
  std::vector<std::pair<std::int64_t, std::uint64_t>> Buckets() const {
    std::vector<std::pair<std::int64_t, std::uint64_t>> buckets;
    for (int i = 0; i < kBuckets; ++i) {
      const std::uint64_t n = counts_[i].load(std::memory_order_relaxed);
      if (n != 0) buckets.emplace_back(UpperBound(i), n);
    }
    return buckets;
  }

 private:
  static constexpr int IndexOf(std::int64_t v) { return histogram_internal::IndexOf(v); }
  static constexpr std::int64_t UpperBound(int i) { return histogram_internal::UpperBound(i); }
  static constexpr int kBuckets = histogram_internal::IndexOf(kMaxNanos) + 1;

  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::int64_t> max_{0};
};

}  // namespace chunkcache::bench

#endif  // CHUNKCACHE_BENCH_LOADGEN_HISTOGRAM_H_
