#include "allocation_hooks.h"

#include <malloc.h>

#include <cstdlib>
#include <new>

namespace chunkcache::testing {

std::atomic<std::size_t> largest_allocation{0};
thread_local bool fail_next_allocation = false;
std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_live_bytes{0};

}  // namespace chunkcache::testing

#if !defined(__SANITIZE_ADDRESS__)
void* operator new(std::size_t size) {
  using chunkcache::testing::fail_next_allocation;
  using chunkcache::testing::largest_allocation;
  if (fail_next_allocation) {
    fail_next_allocation = false;
    throw std::bad_alloc();
  }
  std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    using chunkcache::testing::peak_live_bytes;
    const std::int64_t live = chunkcache::testing::live_bytes.fetch_add(
                                  static_cast<std::int64_t>(malloc_usable_size(p))) +
                              static_cast<std::int64_t>(malloc_usable_size(p));
    std::int64_t peak = peak_live_bytes.load(std::memory_order_relaxed);
    while (live > peak && !peak_live_bytes.compare_exchange_weak(peak, live)) {
    }
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept {
  if (p != nullptr) {
    chunkcache::testing::live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)));
  }
  std::free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { operator delete(p); }
#endif
