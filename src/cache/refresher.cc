#include "cache/refresher.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cache/exception_status.h"

namespace chunkcache::internal {
namespace {

// Set on a refresh thread whose task destroyed the cache that ran it (its loader held the last
// reference): the thread then returns without touching that cache again.
thread_local bool tls_cache_destroyed_on_this_thread = false;

}  // namespace

Refresher::Refresher(const CacheOptions& options, Run run, const CacheClock& clock,
                     CacheCounters& counters, RateLimitedLog& log)
    : max_threads_(options.refresh_threads),
      max_queued_(options.max_queued_refreshes),
      run_(std::move(run)),
      clock_(clock),
      counters_(counters),
      log_(log),
      backoff_({options.load_retry_initial, options.load_retry_max, absl::ZeroDuration(), 0}) {}

Refresher::~Refresher() { Stop(); }

void Refresher::Schedule(std::string_view key, const Loader& loader) {
  if (backoff_.Deferred(key, clock_.Now())) {
    Add(counters_.refreshes_deferred);
    return;
  }
  MutexLock lock(&mu_);
  AdoptAfterForkLocked();
  if (stopping_ || refreshing_.contains(absl::string_view(key.data(), key.size()))) return;
  // Again under the lock: a refresh that ended since the check above backed off before it
  // unmarked the key (a stale read racing it must not queue another one at once).
  if (backoff_.Deferred(key, clock_.Now())) {
    Add(counters_.refreshes_deferred);
    return;
  }
  if (queue_.size() >= max_queued_) {
    Add(counters_.refreshes_dropped);
    return;
  }
  if (threads_.size() < static_cast<std::size_t>(max_threads_)) {
    try {
      threads_.emplace_back([this] { Loop(); });
    } catch (...) {  // std::system_error: no thread could be started
      if (threads_.empty()) {
        Add(counters_.refreshes_dropped);
        log_.Warn(RateLimitedLog::kRefresh, [] {
          return "chunkcache: no refresh thread could be started; the stale entry is served "
                 "until its ttl";
        });
        return;  // nothing marked: a later stale hit tries again
      }
    }
  }
  refreshing_.insert(std::string(key));
  queue_.push_back({std::string(key), loader});
  cv_.SignalAll();
}

void Refresher::AdoptAfterForkLocked() {
  const pid_t pid = getpid();
  if (pid == pid_) return;
  pid_ = pid;
  for (std::thread& thread : threads_) thread.detach();
  threads_.clear();
  refreshing_.clear();
  queue_.clear();
}

void Refresher::Loop() {
  while (true) {
    std::unique_ptr<RefreshTask> task;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) cv_.Wait(&mu_);
      if (stopping_) return;
      task = std::make_unique<RefreshTask>(std::move(queue_.front()));
      queue_.pop_front();
    }
    RunTask(*task);
    {
      MutexLock lock(&mu_);
      refreshing_.erase(task->key);
    }
    // The task's loader may hold the last reference to the cache (a loader capturing a
    // shared_ptr to it): destroy it with no lock held, and if that destroyed the cache, touch
    // nothing of it any more.
    task.reset();
    if (tls_cache_destroyed_on_this_thread) return;
  }
}

void Refresher::RunTask(const RefreshTask& task) {
  RefreshOutcome outcome;
  outcome.status = CatchExceptions("a refresh", BadAlloc::kInternal, [&] {
    outcome = run_(task);
    if (outcome.defer_until.has_value()) {
      backoff_.Defer(task.key, clock_.Now(), *outcome.defer_until);
    } else if (outcome.status.ok()) {
      backoff_.Clear(task.key);
    }
    return outcome.status;
  });
  if (outcome.status.ok()) return;
  Add(counters_.refresh_errors);
  backoff_.Failed(task.key, outcome.status, clock_.Now());
  log_.Warn(RateLimitedLog::kRefresh, [&] {
    return absl::StrCat(
        "chunkcache: the background refresh of a stale entry failed; it is served until its "
        "ttl: ",
        outcome.status.ToString());
  });
}

void Refresher::Stop() {
  std::vector<std::thread> threads;
  std::deque<RefreshTask> queued;
  {
    MutexLock lock(&mu_);
    AdoptAfterForkLocked();
    stopping_ = true;
    queued.swap(queue_);
    threads.swap(threads_);
    cv_.SignalAll();
  }
  queued.clear();  // loaders destroyed with no lock held
  for (std::thread& thread : threads) {
    if (thread.get_id() == std::this_thread::get_id()) {
      // The last reference went with a refresh task on this very thread: it cannot join itself;
      // it returns as soon as the cache's destructor is done, touching nothing of it.
      thread.detach();
      tls_cache_destroyed_on_this_thread = true;
    } else {
      thread.join();  // waits for a refresh under way
    }
  }
}

}  // namespace chunkcache::internal
