#include "allocation_hooks.h"

#include <cstdlib>
#include <new>

namespace chunkcache::testing {

std::atomic<std::size_t> largest_allocation{0};
thread_local bool fail_next_allocation = false;

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
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif
