// Single-flight: concurrent calls for the same key share one execution of the work. The first
// caller (the leader) runs it in its own thread; the others wait for its result, each up to its
// own deadline.
//
//   internal::SingleFlight flights;
//   internal::SingleFlight::Outcome outcome =
//       flights.Do(key, absl::Now() + absl::Seconds(30), [&] { return ReadOrLoad(key); });
//   // outcome.role: kLeader ran the work, kWaiter shared its result, kTimedOut gave up waiting.
//
// Thread safety: safe for concurrent use.

#ifndef CHUNKCACHE_SRC_CACHE_SINGLE_FLIGHT_H_
#define CHUNKCACHE_SRC_CACHE_SINGLE_FLIGHT_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "internal/mutex.h"

namespace chunkcache::internal {

class SingleFlight {
 public:
  enum class Role { kLeader, kWaiter, kTimedOut };

  struct Outcome {
    absl::StatusOr<Bytes> result;
    Role role;
  };

  // Runs `work` unless a call for `key` is already running, in which case it waits for that
  // call's result until `wait_deadline` (then DeadlineExceeded; the leader carries on). An
  // exception thrown by `work` becomes an Internal status for every caller of the flight.
  Outcome Do(std::string_view key, absl::Time wait_deadline,
             absl::FunctionRef<absl::StatusOr<Bytes>()> work);

  // Callers of `key` arriving from now on start a fresh flight instead of joining the one under
  // way (whose callers still get its result): after a Put or Invalidate returns, no caller may be
  // handed what a load that started before it read or loaded.
  void Forget(std::string_view key);

  // Keys with a flight under way.
  std::size_t InFlight() const;

 private:
  struct Flight {
    Mutex mu;
    CondVar done_cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<Bytes> result ABSL_GUARDED_BY(mu);
  };

  mutable Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Flight>> flights_ ABSL_GUARDED_BY(mu_);
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_SINGLE_FLIGHT_H_
