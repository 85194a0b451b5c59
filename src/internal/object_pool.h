// A pool of idle objects that are expensive to make (zstd contexts, JSON parsers, connections):
// take an idle one or make one, use it, give it back.
//
//   ObjectPool<Parser> parsers([] { return std::make_unique<Parser>(); }, /*max_idle=*/4);
//   {
//     ObjectPool<Parser>::Handle parser = parsers.Acquire();  // an idle parser, or a new one
//     parser->Parse(text);
//   }  // given back
//
// Objects whose making can fail or needs arguments (a connection) go through TakeIdle() and Put():
//
//   std::unique_ptr<Connection> connection = pool.TakeIdle();  // nullptr: none fit
//   if (connection == nullptr) connection = Connect(...);
//   ... use it ...
//   pool.Put(std::move(connection));  // or drop it, if it failed
//
// Which idle objects are kept: up to max_idle however long they stay unused; beyond that (given
// back while more than max_idle were out at once), each until it has been idle for surplus_ttl.
// The most recently given back is taken first, so the surplus, the oldest, ages out once the load
// drops. An object `reusable` refuses, when given back or when TakeIdle comes to it, is destroyed.
//
// Thread safety: safe for concurrent use. Objects are destroyed, and made, outside the pool's lock;
// `reusable` is called with the lock held, so it must not call the pool.

#ifndef CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_
#define CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

template <typename T>
class ObjectPool {
 public:
  struct Options {
    // Makes an object for Acquire() when none is idle. Default: none (use TakeIdle and Put).
    std::function<std::unique_ptr<T>()> make;

    // Idle objects kept however long they stay unused (objects may hold large buffers: keep few).
    // Default: 4.
    std::size_t max_idle = 4;

    // Idle objects beyond max_idle are kept until idle this long. Zero: an object given back
    // while max_idle are idle is destroyed at once. Default: zero.
    absl::Duration surplus_ttl = absl::ZeroDuration();

    // Whether an object may be kept and handed out again (a connection the server closed may
    // not). Default: every object may.
    std::function<bool(const T&)> reusable;

    // Told how many objects were destroyed because `reusable` refused them or because they aged
    // out as surplus (not those destroyed at once for a zero surplus_ttl, nor by Clear). For
    // counting. Default: none.
    std::function<void(std::size_t)> on_discard;
  };

  // An acquired object; gives it back to the pool when destroyed.
  class Handle {
   public:
    Handle(ObjectPool* pool, std::unique_ptr<T> object) : pool_(pool), object_(std::move(object)) {}
    Handle(Handle&&) noexcept = default;
    Handle& operator=(Handle&&) = delete;
    ~Handle() {
      if (object_ != nullptr) pool_->Put(std::move(object_));
    }
    T* get() const { return object_.get(); }
    T* operator->() const { return object_.get(); }
    T& operator*() const { return *object_; }

   private:
    ObjectPool* pool_;
    std::unique_ptr<T> object_;
  };

  explicit ObjectPool(Options options) : options_(std::move(options)) {}
  ObjectPool(std::function<std::unique_ptr<T>()> make, std::size_t max_idle)
      : ObjectPool(MakingOptions(std::move(make), max_idle)) {}

  // An idle object, or a new one from options.make (which must be set).
  Handle Acquire() {
    std::unique_ptr<T> object = TakeIdle();
    return Handle(this, object != nullptr ? std::move(object) : options_.make());
  }

  // The most recently given back idle object that is reusable, or nullptr.
  std::unique_ptr<T> TakeIdle() {
    std::vector<std::unique_ptr<T>> discarded;  // destroyed after the lock is released
    std::unique_ptr<T> object;
    {
      MutexLock lock(&mu_);
      TrimSurplus(absl::Now(), discarded);
      while (!idle_.empty() && object == nullptr) {
        std::unique_ptr<T> candidate = std::move(idle_.back().object);
        idle_.pop_back();
        if (Reusable(*candidate)) {
          object = std::move(candidate);
        } else {
          discarded.push_back(std::move(candidate));
        }
      }
    }
    Discarded(discarded.size());
    return object;
  }

  // Gives `object` back: kept if reusable and wanted, destroyed otherwise.
  void Put(std::unique_ptr<T> object) {
    if (!Reusable(*object)) {
      Discarded(1);
      return;
    }
    std::vector<std::unique_ptr<T>> surplus;  // destroyed after the lock is released
    std::unique_ptr<T> unwanted;
    {
      const absl::Time now = absl::Now();
      MutexLock lock(&mu_);
      if (options_.surplus_ttl <= absl::ZeroDuration() && idle_.size() >= options_.max_idle) {
        unwanted = std::move(object);
      } else {
        idle_.push_back({std::move(object), now});
        TrimSurplus(now, surplus);
      }
    }
    Discarded(surplus.size());
  }

  // Destroys every idle object (they are known to be useless, e.g. their server is gone).
  void Clear() {
    std::vector<Idle> idle;
    MutexLock lock(&mu_);
    idle.swap(idle_);
  }

 private:
  struct Idle {
    std::unique_ptr<T> object;
    absl::Time returned;
  };

  static Options MakingOptions(std::function<std::unique_ptr<T>()> make, std::size_t max_idle) {
    Options options;
    options.make = std::move(make);
    options.max_idle = max_idle;
    return options;
  }

  bool Reusable(const T& object) const { return !options_.reusable || options_.reusable(object); }

  void Discarded(std::size_t n) const {
    if (n > 0 && options_.on_discard) options_.on_discard(n);
  }

  // Moves the surplus objects idle for surplus_ttl (the oldest, at the front) to `out`.
  void TrimSurplus(absl::Time now, std::vector<std::unique_ptr<T>>& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::size_t stale = 0;
    while (idle_.size() - stale > options_.max_idle &&
           now - idle_[stale].returned >= options_.surplus_ttl) {
      ++stale;
    }
    for (std::size_t i = 0; i < stale; ++i) out.push_back(std::move(idle_[i].object));
    idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(stale));
  }

  const Options options_;
  Mutex mu_;
  std::vector<Idle> idle_ ABSL_GUARDED_BY(mu_);  // oldest first
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_OBJECT_POOL_H_
