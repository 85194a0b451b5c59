#include "internal/worker_pool.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

namespace chunkcache::internal {

WorkerPool::WorkerPool(int threads) : pid_(getpid()) {
  threads_.reserve(std::max(threads, 1));
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { Work(); });
}

WorkerPool::~WorkerPool() {
  if (!usable()) {
    // A forked child: the threads stayed in the parent. Joining them would wait for ever,
    // destroying a joinable std::thread terminates, and waking the condition variable their
    // copies still wait on can block: leave all of it be (a few hundred bytes).
    for (std::thread& thread : threads_) new std::thread(std::move(thread));
    static_cast<void>(ready_.release());
    return;
  }
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  ready_->SignalAll();
  for (std::thread& thread : threads_) thread.join();
}

void WorkerPool::Submit(absl::AnyInvocable<void() &&> task) {
  {
    MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  ready_->SignalAll();
}

void WorkerPool::Work() {
  for (;;) {
    absl::AnyInvocable<void() &&> task;
    {
      MutexLock lock(&mu_);
      while (tasks_.empty() && !stopping_) ready_->Wait(&mu_);
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    std::move(task)();
  }
}

struct TaskGroup::State {
  Mutex mu;
  CondVar idle;
  std::deque<absl::AnyInvocable<void() &&>> jobs ABSL_GUARDED_BY(mu);
  int helpers ABSL_GUARDED_BY(mu) = 0;  // submitted to the pool and not yet done
  int running ABSL_GUARDED_BY(mu) = 0;  // jobs under way on helpers

  // Runs queued jobs until none is left. On a helper, `on_helper` counts them as under way.
  void Drain(bool on_helper) {
    for (;;) {
      absl::AnyInvocable<void() &&> job;
      {
        MutexLock lock(&mu);
        if (jobs.empty()) {
          if (on_helper && --helpers == 0) idle.SignalAll();
          return;
        }
        job = std::move(jobs.front());
        jobs.pop_front();
        if (on_helper) ++running;
      }
      std::move(job)();
      job = nullptr;  // whatever it holds goes before Wait() can return
      if (on_helper) {
        MutexLock lock(&mu);
        if (--running == 0) idle.SignalAll();
      }
    }
  }
};

TaskGroup::TaskGroup(WorkerPool* pool, int helpers)
    : state_(std::make_shared<State>()),
      pool_(pool != nullptr && pool->usable() ? pool : nullptr),
      helpers_(helpers) {}

TaskGroup::~TaskGroup() { Wait(); }

void TaskGroup::Add(absl::AnyInvocable<void() &&> job) {
  if (pool_ == nullptr || helpers_ <= 0) {
    std::move(job)();
    return;
  }
  bool call_helper = false;
  {
    MutexLock lock(&state_->mu);
    state_->jobs.push_back(std::move(job));
    if (state_->helpers < helpers_) {
      ++state_->helpers;
      call_helper = true;
    }
  }
  if (call_helper) pool_->Submit([state = state_] { state->Drain(/*on_helper=*/true); });
}

void TaskGroup::WaitForHelpers() {
  for (;;) {
    {
      MutexLock lock(&state_->mu);
      // A helper leaves only once the queue is empty: while one is there, the jobs get done.
      while (state_->helpers > 0 && !(state_->jobs.empty() && state_->running == 0)) {
        state_->idle.Wait(&state_->mu);
      }
      if (state_->jobs.empty() && state_->running == 0) return;
    }
    Wait();  // no helper left with jobs queued: run them here
  }
}

void TaskGroup::Wait() {
  state_->Drain(/*on_helper=*/false);
  MutexLock lock(&state_->mu);
  while (state_->running > 0) state_->idle.Wait(&state_->mu);
}

}  // namespace chunkcache::internal
