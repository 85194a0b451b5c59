// A counter for hot paths that many threads bump at once: one cache line per stripe, each thread
// on the stripe of the CPU it runs on (CurrentCpu(), see internal/cpu_stripes.h), summed when
// read. An increment is an uncontended relaxed add instead of a cache line bouncing between
// cores.

#ifndef CHUNKCACHE_SRC_INTERNAL_STRIPED_COUNTER_H_
#define CHUNKCACHE_SRC_INTERNAL_STRIPED_COUNTER_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "internal/cpu_stripes.h"

namespace chunkcache::internal {

class StripedCounter {
 public:
  void Add(std::uint64_t n = 1) {
    stripes_[CurrentCpu() % kStripes].value.fetch_add(n, std::memory_order_relaxed);
  }

  std::uint64_t Value() const {
    std::uint64_t sum = 0;
    for (const Stripe& stripe : stripes_) sum += stripe.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  static constexpr std::size_t kStripes = 16;
  struct alignas(64) Stripe {
    std::atomic<std::uint64_t> value{0};
  };

  std::array<Stripe, kStripes> stripes_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_STRIPED_COUNTER_H_
