#include "cache/single_flight.h"

#include <utility>

#include "cache/exception_status.h"

namespace chunkcache::internal {

SingleFlight::Outcome SingleFlight::Do(std::string_view key, absl::Time wait_deadline,
                                       absl::FunctionRef<absl::StatusOr<Bytes>()> work) {
  // Debian's Abseil has its own string_view type: convert for heterogeneous lookup.
  const absl::string_view flight_key(key.data(), key.size());
  std::shared_ptr<Flight> flight;
  bool leader = false;
  {
    MutexLock lock(&mu_);
    auto [it, inserted] = flights_.try_emplace(flight_key);
    if (inserted) it->second = std::make_shared<Flight>();
    flight = it->second;
    leader = inserted;
  }

  if (leader) {
    absl::StatusOr<Bytes> result = CatchExceptions("a load", BadAlloc::kInternal, work);
    {
      // Unregister first: a caller arriving from now on starts a fresh flight. Forget may have
      // replaced this flight with a newer one already.
      MutexLock lock(&mu_);
      if (auto it = flights_.find(flight_key); it != flights_.end() && it->second == flight) {
        flights_.erase(it);
      }
    }
    MutexLock lock(&flight->mu);
    flight->result = result;
    flight->done = true;
    flight->done_cv.SignalAll();
    return {std::move(result), Role::kLeader};
  }

  MutexLock lock(&flight->mu);
  while (!flight->done) {
    if (flight->done_cv.WaitWithDeadline(&flight->mu, wait_deadline) && !flight->done) {
      return {absl::DeadlineExceededError(
                  "chunkcache: timed out waiting for another caller's load of this key"),
              Role::kTimedOut};
    }
  }
  return {flight->result, Role::kWaiter};
}

void SingleFlight::Forget(std::string_view key) {
  MutexLock lock(&mu_);
  flights_.erase(absl::string_view(key.data(), key.size()));
}

std::size_t SingleFlight::InFlight() const {
  MutexLock lock(&mu_);
  return flights_.size();
}

}  // namespace chunkcache::internal
