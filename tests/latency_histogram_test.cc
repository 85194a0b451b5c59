#include "metrics/latency_histogram.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <latch>
#include <limits>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace chunkcache::internal {
namespace {

constexpr std::uint64_t kMaxNanos = std::numeric_limits<std::uint64_t>::max();

// Values worth checking bucket arithmetic on: every small value, both sides of every power of
// two, and a deterministic random sample of the whole range.
std::vector<std::uint64_t> SampleValues() {
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 0; v <= 5000; ++v) values.push_back(v);
  for (int bit = 3; bit < 64; ++bit) {
    const std::uint64_t power = std::uint64_t{1} << bit;
    for (const std::uint64_t v : {power - 1, power, power + 1, power + power / 2}) {
      values.push_back(v);
    }
  }
  values.push_back(kMaxNanos);
  values.push_back(kMaxNanos - 1);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) values.push_back(rng() >> (rng() % 64));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  return values;
}

// The reported percentile must be at least the true one and at most 12.5 % above it.
void CheckClose(absl::Duration reported, absl::Duration truth) {
  CAPTURE(reported, truth);
  CHECK(reported >= truth);
  CHECK(reported <= truth * 1.125);
}

TEST_CASE("a value is at most the upper bound of its bucket and above the previous bucket's") {
  for (const std::uint64_t v : SampleValues()) {
    CAPTURE(v);
    const std::size_t bucket = LatencyHistogram::BucketOf(v);
    CHECK(v <= LatencyHistogram::BucketUpperBound(bucket));
    if (bucket > 0) CHECK(v > LatencyHistogram::BucketUpperBound(bucket - 1));
  }
}

TEST_CASE("values below 8 ns have buckets of their own") {
  for (std::uint64_t v = 0; v < 8; ++v) {
    CAPTURE(v);
    CHECK(LatencyHistogram::BucketOf(v) == v);
    CHECK(LatencyHistogram::BucketUpperBound(LatencyHistogram::BucketOf(v)) == v);
  }
}

TEST_CASE("a bucket's upper bound is less than 12.5 % above any value in it, plus 8 ns") {
  for (const std::uint64_t v : SampleValues()) {
    if (v < 8) continue;
    CAPTURE(v);
    const std::uint64_t upper = LatencyHistogram::BucketUpperBound(LatencyHistogram::BucketOf(v));
    // upper < 1.125 * v + 8, in integers so that values near 2^64 are exact.
    REQUIRE(upper >= v);
    CHECK(upper - v < v / 8 + 8);
  }
}

TEST_CASE("buckets are monotonic and cover the whole range without gaps") {
  const std::size_t last = LatencyHistogram::BucketOf(kMaxNanos);
  CHECK(LatencyHistogram::BucketUpperBound(last) == kMaxNanos);
  CHECK(LatencyHistogram::BucketOf(0) == 0);
  for (std::size_t b = 0; b < last; ++b) {
    CAPTURE(b);
    const std::uint64_t upper = LatencyHistogram::BucketUpperBound(b);
    CHECK(upper < LatencyHistogram::BucketUpperBound(b + 1));
    CHECK(LatencyHistogram::BucketOf(upper) == b);
    CHECK(LatencyHistogram::BucketOf(upper + 1) == b + 1);
  }
  std::size_t previous = 0;
  for (const std::uint64_t v : SampleValues()) {  // sorted
    const std::size_t bucket = LatencyHistogram::BucketOf(v);
    CAPTURE(v);
    CHECK(bucket >= previous);
    previous = bucket;
  }
}

TEST_CASE("an empty histogram summarises to zeros") {
  const LatencyHistogram histogram;
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 0);
  CHECK(stats.mean == absl::ZeroDuration());
  CHECK(stats.p50 == absl::ZeroDuration());
  CHECK(stats.p90 == absl::ZeroDuration());
  CHECK(stats.p99 == absl::ZeroDuration());
  CHECK(stats.max == absl::ZeroDuration());
}

TEST_CASE("a single value is every percentile, the mean and the max") {
  LatencyHistogram histogram;
  histogram.Record(absl::Nanoseconds(1000));
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 1);
  CHECK(stats.mean == absl::Nanoseconds(1000));
  CHECK(stats.p50 == absl::Nanoseconds(1000));  // capped at the max, not the bucket's bound
  CHECK(stats.p90 == absl::Nanoseconds(1000));
  CHECK(stats.p99 == absl::Nanoseconds(1000));
  CHECK(stats.max == absl::Nanoseconds(1000));
}

TEST_CASE("percentiles of a uniform distribution are within 12.5 % of the truth") {
  LatencyHistogram histogram;
  std::vector<std::int64_t> order(1000);
  for (int i = 0; i < 1000; ++i) order[i] = i + 1;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));  // recording order does not matter
  for (const std::int64_t micros : order) histogram.Record(absl::Microseconds(micros));

  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 1000);
  CHECK(stats.mean == absl::Nanoseconds(500'500));
  CHECK(stats.max == absl::Milliseconds(1));
  CheckClose(stats.p50, absl::Microseconds(500));
  CheckClose(stats.p90, absl::Microseconds(900));
  CheckClose(stats.p99, absl::Microseconds(990));
}

TEST_CASE("percentiles of a bimodal distribution land in the right mode") {
  LatencyHistogram histogram;
  for (int i = 0; i < 980; ++i) histogram.Record(absl::Milliseconds(1));
  for (int i = 0; i < 20; ++i) histogram.Record(absl::Seconds(1));
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 1000);
  CheckClose(stats.p50, absl::Milliseconds(1));
  CheckClose(stats.p90, absl::Milliseconds(1));
  CHECK(stats.p99 == absl::Seconds(1));  // in the slow mode, and capped at the max
  CHECK(stats.max == absl::Seconds(1));
  CHECK(stats.mean == (absl::Milliseconds(980) + absl::Seconds(20)) / 1000);
}

TEST_CASE("small exact values are reported exactly") {
  LatencyHistogram histogram;
  for (int i = 0; i < 100; ++i) histogram.Record(absl::Nanoseconds(i % 8));
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 100);
  CHECK(stats.p50 == absl::Nanoseconds(3));  // rank 50 of 13 0s, 13 1s, 13 2s, 13 3s, ...
  CHECK(stats.p99 == absl::Nanoseconds(7));
  CHECK(stats.max == absl::Nanoseconds(7));
}

TEST_CASE("percentiles are ordered and never above the max") {
  LatencyHistogram histogram;
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> latency(12.0, 1.5);  // around 160 us, long tail
  for (int i = 0; i < 10000; ++i) {
    histogram.Record(absl::Nanoseconds(static_cast<std::int64_t>(latency(rng))));
  }
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 10000);
  CHECK(stats.p50 <= stats.p90);
  CHECK(stats.p90 <= stats.p99);
  CHECK(stats.p99 <= stats.max);
  CHECK(stats.mean <= stats.max);
}

TEST_CASE("zero and negative latencies count as zero") {
  LatencyHistogram histogram;
  histogram.Record(absl::ZeroDuration());
  histogram.Record(absl::Milliseconds(-5));
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 2);
  CHECK(stats.max == absl::ZeroDuration());
  CHECK(stats.p99 == absl::ZeroDuration());
  CHECK(stats.mean == absl::ZeroDuration());
}

TEST_CASE("records from 4 threads at once are all counted", "[concurrency]") {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50'000;
  LatencyHistogram histogram;
  std::latch start(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      // Thread t records 1..kPerThread us, shifted by t ns so that every thread's max differs.
      for (int i = 1; i <= kPerThread; ++i) {
        histogram.Record(absl::Microseconds(i) + absl::Nanoseconds(t));
      }
    });
  }
  start.arrive_and_wait();
  // Summaries taken while the writers run see a count that only grows.
  std::uint64_t last_count = 0;
  bool counts_grew_monotonically = true;
  for (int i = 0; i < 50; ++i) {
    const std::uint64_t count = histogram.Summary().count;
    counts_grew_monotonically &= count >= last_count;
    last_count = count;
  }
  for (std::thread& thread : threads) thread.join();

  CHECK(counts_grew_monotonically);
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == std::uint64_t{kThreads} * kPerThread);
  CHECK(stats.max == absl::Microseconds(kPerThread) + absl::Nanoseconds(kThreads - 1));
  // Sum of t + 1000 i over all threads and i, divided by the count (integer nanoseconds).
  const std::uint64_t sum = std::uint64_t{kThreads} * 1000 * kPerThread * (kPerThread + 1) / 2 +
                            std::uint64_t{kPerThread} * (kThreads * (kThreads - 1) / 2);
  CHECK(stats.mean == absl::Nanoseconds(sum / (std::uint64_t{kThreads} * kPerThread)));
  CheckClose(stats.p50, absl::Microseconds(kPerThread / 2));
  CheckClose(stats.p99, absl::Microseconds(kPerThread * 99 / 100));
}

TEST_CASE("a precise histogram's bucket bound is less than 0.8 % above any value in it") {
  for (const std::uint64_t v : SampleValues()) {
    CAPTURE(v);
    const std::size_t bucket = PreciseLatencyHistogram::BucketOf(v);
    const std::uint64_t upper = PreciseLatencyHistogram::BucketUpperBound(bucket);
    REQUIRE(upper >= v);
    CHECK(upper - v < v / 128 + 1);
    if (bucket > 0) CHECK(v > PreciseLatencyHistogram::BucketUpperBound(bucket - 1));
  }
  CHECK(PreciseLatencyHistogram::BucketUpperBound(PreciseLatencyHistogram::BucketOf(kMaxNanos)) ==
        kMaxNanos);
  // Values below 128 ns are exact; 1 us lies in (999, 1003].
  CHECK(PreciseLatencyHistogram::BucketUpperBound(PreciseLatencyHistogram::BucketOf(127)) == 127);
  CHECK(PreciseLatencyHistogram::BucketUpperBound(PreciseLatencyHistogram::BucketOf(1000)) == 1003);
}

TEST_CASE("a precise histogram's percentiles are within 0.8 % of the truth") {
  PreciseLatencyHistogram histogram;
  for (int i = 1; i <= 10'000; ++i) histogram.Record(absl::Microseconds(i));
  const LatencyStats stats = histogram.Summary();
  CHECK(stats.count == 10'000);
  CHECK(stats.max == absl::Milliseconds(10));
  for (const auto& [quantile, truth] :
       {std::pair{0.5, absl::Milliseconds(5)}, std::pair{0.99, absl::Microseconds(9900)},
        std::pair{0.999, absl::Microseconds(9990)}}) {
    CAPTURE(quantile);
    const absl::Duration reported = histogram.Percentile(quantile);
    CHECK(reported >= truth);
    CHECK(reported <= truth * (1 + 1.0 / 128));
  }
  CHECK(histogram.Percentile(0.5) == stats.p50);
  CHECK(histogram.Percentile(0.99) == stats.p99);
}

TEST_CASE(
    "Percentile takes any quantile by nearest rank, clamped to [0, 1] and capped at the max") {
  LatencyHistogram histogram;
  CHECK(histogram.Percentile(0.5) == absl::ZeroDuration());
  for (int i = 0; i < 999; ++i) histogram.Record(absl::Nanoseconds(5));
  histogram.Record(absl::Nanoseconds(1000));
  CHECK(histogram.Percentile(0.0) == absl::Nanoseconds(5));        // rank 1
  CHECK(histogram.Percentile(0.999) == absl::Nanoseconds(5));      // rank 999
  CHECK(histogram.Percentile(0.9995) == absl::Nanoseconds(1000));  // rank 1000: the max
  CHECK(histogram.Percentile(1.0) == absl::Nanoseconds(1000));
  CHECK(histogram.Percentile(7.0) == absl::Nanoseconds(1000));
  CHECK(histogram.Percentile(-1.0) == absl::Nanoseconds(5));
}

TEST_CASE("Count, Max and NonEmptyBuckets describe what was recorded") {
  PreciseLatencyHistogram histogram;
  CHECK(histogram.Count() == 0);
  CHECK(histogram.Max() == absl::ZeroDuration());
  CHECK(histogram.NonEmptyBuckets().empty());
  for (const std::int64_t nanos : {1000, 50, 1001, 50, 50, 2'000'000}) {
    histogram.Record(absl::Nanoseconds(nanos));
  }
  CHECK(histogram.Count() == 6);
  CHECK(histogram.Max() == absl::Milliseconds(2));
  const std::vector<PreciseLatencyHistogram::Bucket> buckets = histogram.NonEmptyBuckets();
  REQUIRE(buckets.size() == 3);
  CHECK(buckets[0].upper_bound == absl::Nanoseconds(50));  // exact below 128 ns
  CHECK(buckets[0].count == 3);
  CHECK(buckets[1].upper_bound == absl::Nanoseconds(1003));  // 1000 and 1001 share a bucket
  CHECK(buckets[1].count == 2);
  CHECK(buckets[2].upper_bound >= absl::Milliseconds(2));
  CHECK(buckets[2].upper_bound <= absl::Milliseconds(2) * (1 + 1.0 / 128));
  CHECK(buckets[2].count == 1);
}

}  // namespace
TEST_CASE("the summary's cumulative buckets count each value under the first bound above it") {
  LatencyHistogram histogram;
  for (const absl::Duration d :
       {absl::Microseconds(30), absl::Microseconds(60), absl::Milliseconds(3), absl::Seconds(20)}) {
    histogram.Record(d);
  }
  const LatencyStats stats = histogram.Summary();
  const auto bounds = LatencyBucketBounds();
  REQUIRE(bounds.back() == absl::InfiniteDuration());
  const auto at = [&](absl::Duration bound) {
    const auto it = std::find(bounds.begin(), bounds.end(), bound);
    REQUIRE(it != bounds.end());
    return stats.buckets[it - bounds.begin()];
  };
  CHECK(at(absl::Microseconds(50)) == 1);
  CHECK(at(absl::Microseconds(100)) == 2);
  CHECK(at(absl::Milliseconds(2.5)) == 2);
  CHECK(at(absl::Milliseconds(5)) == 3);
  CHECK(at(absl::Seconds(10)) == 3);
  CHECK(at(absl::Seconds(30)) == 4);
  CHECK(at(absl::InfiniteDuration()) == 4);
  CHECK(stats.sum == absl::Microseconds(90) + absl::Milliseconds(3) + absl::Seconds(20));
  CHECK(LatencyHistogram().Summary().buckets.back() == 0);
}

}  // namespace chunkcache::internal
