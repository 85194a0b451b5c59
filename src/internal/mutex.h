// A mutex and condition variable with Abseil's thread-safety annotations, built on the standard
// library's. Why not absl::Mutex: Debian ships Abseil uninstrumented, so ThreadSanitizer cannot see
// absl::Mutex's synchronisation and reports false races; std::mutex goes through pthread, which
// TSan intercepts. The annotations keep clang's -Wthread-safety checking ABSL_GUARDED_BY.

#ifndef CHUNKCACHE_SRC_INTERNAL_MUTEX_H_
#define CHUNKCACHE_SRC_INTERNAL_MUTEX_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace chunkcache::internal {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A small number for the calling thread, fixed for its lifetime (0, 1, 2, ... in order of first
// use). For spreading threads over stripes: ThreadIndex() % stripes.
inline std::size_t ThreadIndex() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

class CondVar {
 public:
  // Waits until signalled (spurious wake-ups possible: re-check the condition in a loop).
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }

  // Waits until signalled or `deadline`; true if the deadline passed.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (deadline == absl::InfiniteFuture()) {
      Wait(mu);
      return false;
    }
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool timed_out =
        cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout;
    lock.release();
    return timed_out;
  }

  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_MUTEX_H_
