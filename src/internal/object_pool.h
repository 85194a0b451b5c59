// A small pool of expensive, reusable objects (zstd contexts, JSON parsers). Safe for concurrent
// use: Acquire hands out an idle object (or makes one) and the returned handle gives it back.

#ifndef CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_
#define CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "internal/mutex.h"

namespace chunkcache::internal {

template <typename T>
class ObjectPool {
 public:
  // The handle of an acquired object; returns it to the pool when destroyed.
  class Handle {
   public:
    Handle(ObjectPool* pool, std::unique_ptr<T> object) : pool_(pool), object_(std::move(object)) {}
    Handle(Handle&&) = default;
    Handle& operator=(Handle&&) = delete;
    ~Handle() {
      if (object_ != nullptr) pool_->Release(std::move(object_));
    }
    T* get() const { return object_.get(); }
    T* operator->() const { return object_.get(); }
    T& operator*() const { return *object_; }

   private:
    ObjectPool* pool_;
    std::unique_ptr<T> object_;
  };

  // `make` creates a new object when none is idle; at most `max_idle` idle objects are kept
  // (objects may hold large buffers), the rest are destroyed on release.
  ObjectPool(std::function<std::unique_ptr<T>()> make, std::size_t max_idle)
      : make_(std::move(make)), max_idle_(max_idle) {}

  Handle Acquire() {
    {
      MutexLock lock(&mu_);
      if (!idle_.empty()) {
        std::unique_ptr<T> object = std::move(idle_.back());
        idle_.pop_back();
        return Handle(this, std::move(object));
      }
    }
    return Handle(this, make_());
  }

 private:
  void Release(std::unique_ptr<T> object) {
    MutexLock lock(&mu_);
    if (idle_.size() < max_idle_) idle_.push_back(std::move(object));
  }

  const std::function<std::unique_ptr<T>()> make_;
  const std::size_t max_idle_;
  Mutex mu_;
  std::vector<std::unique_ptr<T>> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_
