// Threads a cache owns for compressing and decoding frames, and the group of jobs one call hands
// them. The calling thread always takes part: a TaskGroup runs its jobs on the caller and on up to
// `helpers` threads of the pool, so a call never waits for a pool busy with other calls' jobs.
//
//   internal::WorkerPool pool(2);
//   internal::TaskGroup group(&pool, /*helpers=*/2);
//   for (int i = 0; i < n; ++i) group.Add([&, i] { Decode(i); });
//   group.Wait();  // runs what no helper took, then waits for the rest
//
// A job may run on any of those threads, in any order; it must not throw. Everything a job
// refers to must live until Wait() returns, which the owner of the group must call (the
// destructor does, if it was not). Without a pool (or with 0 helpers), Add runs the job at once
// on the calling thread.
//
// Thread safety: a WorkerPool is safe for concurrent use. A TaskGroup is used by one thread (its
// jobs run on others).

#ifndef CHUNKCACHE_SRC_INTERNAL_WORKER_POOL_H_
#define CHUNKCACHE_SRC_INTERNAL_WORKER_POOL_H_

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

class WorkerPool {
 public:
  // Starts `threads` threads (at least 1).
  explicit WorkerPool(int threads);
  // Runs the tasks already submitted, then joins the threads.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }
  // False in a process forked from the one that made the pool: its threads stayed behind.
  bool usable() const { return getpid() == pid_; }

  // Runs `task` on one of the pool's threads, first come first served.
  void Submit(absl::AnyInvocable<void() &&> task);

 private:
  void Work();

  Mutex mu_;
  // On the heap so that a forked child can leave it (its waiters stayed in the parent).
  std::unique_ptr<CondVar> ready_ = std::make_unique<CondVar>();
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const pid_t pid_;
  std::vector<std::thread> threads_;
};

class TaskGroup {
 public:
  // `pool` may be null (or unusable: forked); `helpers` is the most pool threads that work on
  // this group at once.
  TaskGroup(WorkerPool* pool, int helpers);
  ~TaskGroup();
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // Queues `job` (or runs it now, without helpers).
  void Add(absl::AnyInvocable<void() &&> job);

  // Runs queued jobs on the calling thread until none is left, then waits for those under way
  // on helpers.
  void Wait();

  // Waits for every job, leaving them to the helpers: the calling thread runs jobs only when no
  // helper is there to (the pool's threads all busy with other groups, or none at all). For a
  // caller with other work done already, on a machine whose cores the helpers fill.
  void WaitForHelpers();

 private:
  struct State;
  const std::shared_ptr<State> state_;  // shared with helpers that have not started yet
  WorkerPool* const pool_;
  const int helpers_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_WORKER_POOL_H_
