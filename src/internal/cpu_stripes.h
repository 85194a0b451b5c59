// Striping by CPU, for state that many threads touch at once: CurrentCpu(), and a reader-writer
// lock whose readers lock the stripe of the CPU they run on (StripedCounter and StripedSharedPtr
// stripe by CurrentCpu() too).
//
// Why the CPU and not the thread (internal::ThreadIndex()): threads running at the same time are
// on different CPUs, so with as many stripes as CPUs they never share one, however many threads
// come and go. Thread indices only grow: with 16 stripes, a thread pool's 17th thread (or a
// benchmark's 17th short-lived one) shares a stripe with the first, and while both run every
// operation moves that stripe's cache line between their cores.
//
//   CpuSharedMutex mu;
//   { CpuReaderLock lock(&mu); ... read ... }   // one mutex, the calling CPU's
//   { CpuWriterLock lock(&mu); ... write ... }  // every stripe's mutex
//
// A thread may move to another CPU at any time: a reader unlocks the stripe it locked, and two
// readers sharing a stripe for a moment only wait for each other.

#ifndef CHUNKCACHE_SRC_INTERNAL_CPU_STRIPES_H_
#define CHUNKCACHE_SRC_INTERNAL_CPU_STRIPES_H_

#include <sched.h>
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

// The CPU the calling thread runs on (it may move at any time); its ThreadIndex() if the system
// does not say. glibc (2.35 on) registers each thread's restartable-sequences area, in which the
// kernel keeps the thread's CPU: reading it is a load (0.5 ns here), where sched_getcpu() is a
// call into the vDSO (4.5 ns), and a near-cache hit asks four times (its lock stripe, its payload
// stripe, two counters).
inline std::size_t CurrentCpu() {
#if defined(RSEQ_SIG) && __has_builtin(__builtin_thread_pointer)
  if (__rseq_size != 0) {
    const auto* area = reinterpret_cast<const volatile struct rseq*>(
        static_cast<const char*>(__builtin_thread_pointer()) + __rseq_offset);
    const auto cpu = static_cast<std::int32_t>(area->cpu_id);  // negative: not registered
    if (cpu >= 0) return static_cast<std::size_t>(cpu);
  }
#endif
  const int cpu = sched_getcpu();
  return cpu >= 0 ? static_cast<std::size_t>(cpu) : ThreadIndex();
}

// A reader-writer lock for read-mostly data: a reader locks one of kStripes mutexes, the one of its
// CPU; a writer locks them all. Concurrent reads scale instead of bouncing one lock word between
// cores; a write costs kStripes lock operations.
class ABSL_LOCKABLE CpuSharedMutex {
 public:
  CpuSharedMutex() = default;
  CpuSharedMutex(const CpuSharedMutex&) = delete;
  CpuSharedMutex& operator=(const CpuSharedMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    for (Stripe& stripe : stripes_) stripe.mu.lock();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    for (auto it = stripes_.rbegin(); it != stripes_.rend(); ++it) it->mu.unlock();
  }
  // Returns the stripe to pass to ReaderUnlock.
  std::size_t ReaderLock() ABSL_SHARED_LOCK_FUNCTION() {
    const std::size_t stripe = CurrentCpu() % kStripes;
    stripes_[stripe].mu.lock();
    return stripe;
  }
  void ReaderUnlock(std::size_t stripe) ABSL_UNLOCK_FUNCTION() { stripes_[stripe].mu.unlock(); }

 private:
  static constexpr std::size_t kStripes = 16;
  struct alignas(64) Stripe {
    std::mutex mu;
  };
  std::array<Stripe, kStripes> stripes_;
};

class ABSL_SCOPED_LOCKABLE CpuWriterLock {
 public:
  explicit CpuWriterLock(CpuSharedMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~CpuWriterLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  CpuWriterLock(const CpuWriterLock&) = delete;
  CpuWriterLock& operator=(const CpuWriterLock&) = delete;

 private:
  CpuSharedMutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE CpuReaderLock {
 public:
  explicit CpuReaderLock(CpuSharedMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu)
      : mu_(mu), stripe_(mu_->ReaderLock()) {}
  ~CpuReaderLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(stripe_); }
  CpuReaderLock(const CpuReaderLock&) = delete;
  CpuReaderLock& operator=(const CpuReaderLock&) = delete;

 private:
  CpuSharedMutex* const mu_;
  const std::size_t stripe_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_CPU_STRIPES_H_
