// A replaced global operator new/delete for the tests that watch or break allocations: it records
// the largest single allocation, and can make the next allocation on a thread throw
// std::bad_alloc. Not under AddressSanitizer, which must own the allocator (kHooked is false then
// and the hooks do nothing).
//
// A test binary gets the replacement by compiling tests/allocation_hooks.cc in (CMake:
// target_sources(<test> PRIVATE allocation_hooks.cc)); no other binary has it.
//
//   testing::largest_allocation = 0;
//   ... a read ...
//   if (testing::kHooked) CHECK(testing::largest_allocation.load() < (1 << 20));
//
//   testing::fail_next_allocation = true;  // this thread's next operator new throws
//
// largest_allocation is atomic; fail_next_allocation is per thread.

#ifndef CHUNKCACHE_TESTS_ALLOCATION_HOOKS_H_
#define CHUNKCACHE_TESTS_ALLOCATION_HOOKS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace chunkcache::testing {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kHooked = false;
#else
inline constexpr bool kHooked = true;
#endif

// The largest size asked of operator new since it was last set (to 0, say).
extern std::atomic<std::size_t> largest_allocation;

// Bytes held through operator new now (as malloc_usable_size counts them), and the most held
// since peak_live_bytes was last set (to live_bytes, say): the peak of a call is
// peak_live_bytes - live_bytes before it.
extern std::atomic<std::int64_t> live_bytes;
extern std::atomic<std::int64_t> peak_live_bytes;

// When set, the next operator new on this thread clears it and throws std::bad_alloc.
extern thread_local bool fail_next_allocation;

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTS_ALLOCATION_HOOKS_H_
