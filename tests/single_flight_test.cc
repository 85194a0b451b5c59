#include "cache/single_flight.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "fixtures/process.h"

namespace chunkcache::internal {
namespace {

using Role = SingleFlight::Role;
using Outcome = SingleFlight::Outcome;

// Generous bound on every wait, so that a broken implementation fails instead of hanging.
constexpr auto kPatience = std::chrono::seconds(20);

// Time given to threads that have announced themselves to get from the announcement into Do.
// Only ever a grace period: the tests' assertions do not depend on it in a correct implementation
// unless a thread is descheduled for longer than this between two adjacent statements.
constexpr auto kQueueUpTime = std::chrono::milliseconds(50);

// Polls `done` until it holds or kPatience runs out; true if it holds.
bool WaitUntil(const std::function<bool()>& done) {
  return testing::fixture_internal::WaitFor(kPatience, done, std::chrono::milliseconds(1));
}

Bytes MakeBytes(std::string text) { return std::make_shared<const std::string>(std::move(text)); }

int CountRole(const std::vector<std::optional<Outcome>>& outcomes, Role role) {
  int n = 0;
  for (const std::optional<Outcome>& outcome : outcomes) n += outcome && outcome->role == role;
  return n;
}

// Starts `callers` threads that call Do(key) with `work` together, and holds the work on a latch
// until every caller has announced itself and InFlight() shows the flight. Returns each caller's
// outcome, and whether the wait for the callers succeeded.
struct Crowd {
  std::vector<std::optional<Outcome>> outcomes;
  bool all_queued = false;
};

Crowd RunCrowd(SingleFlight& flight, int callers, std::atomic<int>& runs,
               const std::function<absl::StatusOr<Bytes>()>& body) {
  Crowd crowd;
  crowd.outcomes.resize(callers);
  std::latch start(callers);
  std::latch release(1);
  std::atomic<int> announced{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      // Half the callers wait without a deadline, half with a distant one: both wait paths.
      const absl::Time deadline =
          i % 2 == 0 ? absl::InfiniteFuture() : absl::Now() + absl::Seconds(60);
      announced.fetch_add(1);
      crowd.outcomes[i] = flight.Do("key", deadline, [&]() -> absl::StatusOr<Bytes> {
        runs.fetch_add(1);
        release.wait();
        return body();
      });
    });
  }
  crowd.all_queued = WaitUntil(
      [&] { return announced.load() == callers && runs.load() >= 1 && flight.InFlight() == 1; });
  std::this_thread::sleep_for(kQueueUpTime);
  release.count_down();
  for (std::thread& thread : threads) thread.join();
  return crowd;
}

TEST_CASE("a lone call runs the work and is the leader") {
  SingleFlight flight;
  CHECK(flight.InFlight() == 0);
  int runs = 0;
  const Outcome outcome = flight.Do("key", absl::InfiniteFuture(), [&]() -> absl::StatusOr<Bytes> {
    ++runs;
    CHECK(flight.InFlight() == 1);
    return MakeBytes("payload");
  });
  CHECK(runs == 1);
  CHECK(outcome.role == Role::kLeader);
  REQUIRE(outcome.result.ok());
  CHECK(**outcome.result == "payload");
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("sequential calls do not share results: each runs the work") {
  SingleFlight flight;
  int runs = 0;
  for (int i = 0; i < 3; ++i) {
    const Outcome outcome =
        flight.Do("key", absl::InfiniteFuture(),
                  [&]() -> absl::StatusOr<Bytes> { return MakeBytes(std::to_string(++runs)); });
    CHECK(outcome.role == Role::kLeader);
    REQUIRE(outcome.result.ok());
    CHECK(**outcome.result == std::to_string(i + 1));
  }
  CHECK(runs == 3);
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("64 concurrent callers of one key share one run of the work", "[concurrency]") {
  constexpr int kCallers = 64;
  SingleFlight flight;
  std::atomic<int> runs{0};
  const Crowd crowd = RunCrowd(flight, kCallers, runs, [] { return MakeBytes("the catalogue"); });

  REQUIRE(crowd.all_queued);
  CHECK(runs.load() == 1);
  CHECK(CountRole(crowd.outcomes, Role::kLeader) == 1);
  CHECK(CountRole(crowd.outcomes, Role::kWaiter) == kCallers - 1);
  CHECK(CountRole(crowd.outcomes, Role::kTimedOut) == 0);
  REQUIRE(crowd.outcomes[0].has_value());
  REQUIRE(crowd.outcomes[0]->result.ok());
  const std::string* const shared = crowd.outcomes[0]->result->get();
  CHECK(*shared == "the catalogue");
  for (int i = 0; i < kCallers; ++i) {
    CAPTURE(i);
    REQUIRE(crowd.outcomes[i].has_value());
    REQUIRE(crowd.outcomes[i]->result.ok());
    CHECK(crowd.outcomes[i]->result->get() == shared);  // the same Bytes, not a copy
  }
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("an error from the work reaches every waiter and the next call runs the work again",
          "[concurrency]") {
  constexpr int kCallers = 16;
  SingleFlight flight;
  std::atomic<int> runs{0};
  const Crowd crowd = RunCrowd(flight, kCallers, runs, []() -> absl::StatusOr<Bytes> {
    return absl::UnavailableError("origin down");
  });

  REQUIRE(crowd.all_queued);
  CHECK(runs.load() == 1);
  CHECK(CountRole(crowd.outcomes, Role::kLeader) == 1);
  CHECK(CountRole(crowd.outcomes, Role::kWaiter) == kCallers - 1);
  for (int i = 0; i < kCallers; ++i) {
    CAPTURE(i);
    REQUIRE(crowd.outcomes[i].has_value());
    CHECK(crowd.outcomes[i]->result.status() == absl::UnavailableError("origin down"));
  }
  CHECK(flight.InFlight() == 0);

  // The failure is not remembered: the next call runs the work afresh.
  const Outcome retry = flight.Do("key", absl::InfiniteFuture(), [&]() -> absl::StatusOr<Bytes> {
    runs.fetch_add(1);
    return MakeBytes("recovered");
  });
  CHECK(runs.load() == 2);
  CHECK(retry.role == Role::kLeader);
  REQUIRE(retry.result.ok());
  CHECK(**retry.result == "recovered");
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("a throwing work is an internal error for every caller of its flight", "[concurrency]") {
  constexpr int kCallers = 16;
  SingleFlight flight;
  std::atomic<int> runs{0};
  const Crowd crowd = RunCrowd(flight, kCallers, runs, []() -> absl::StatusOr<Bytes> {
    throw std::runtime_error("loader exploded");
  });

  REQUIRE(crowd.all_queued);
  CHECK(runs.load() == 1);
  CHECK(CountRole(crowd.outcomes, Role::kLeader) == 1);
  for (int i = 0; i < kCallers; ++i) {
    CAPTURE(i);
    REQUIRE(crowd.outcomes[i].has_value());
    CHECK(crowd.outcomes[i]->result.status().code() == absl::StatusCode::kInternal);
  }
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("a work throwing anything becomes an internal error and frees the key") {
  SingleFlight flight;
  const Outcome standard = flight.Do("key", absl::InfiniteFuture(), []() -> absl::StatusOr<Bytes> {
    throw std::runtime_error("loader exploded");
  });
  CHECK(standard.role == Role::kLeader);
  CHECK(standard.result.status().code() == absl::StatusCode::kInternal);
  CHECK(std::string(standard.result.status().message()).find("loader exploded") !=
        std::string::npos);

  const Outcome other =
      flight.Do("key", absl::InfiniteFuture(), []() -> absl::StatusOr<Bytes> { throw 42; });
  CHECK(other.result.status().code() == absl::StatusCode::kInternal);
  CHECK(flight.InFlight() == 0);

  const Outcome after = flight.Do("key", absl::InfiniteFuture(),
                                  []() -> absl::StatusOr<Bytes> { return MakeBytes("fine"); });
  REQUIRE(after.result.ok());
  CHECK(**after.result == "fine");
}

TEST_CASE("a waiter past its deadline times out while the leader carries on and completes",
          "[concurrency]") {
  SingleFlight flight;
  std::atomic<int> runs{0};
  std::latch release(1);
  std::optional<Outcome> leader_outcome;
  std::thread leader([&] {
    leader_outcome = flight.Do("key", absl::InfiniteFuture(), [&]() -> absl::StatusOr<Bytes> {
      runs.fetch_add(1);
      release.wait();
      return MakeBytes("slow load");
    });
  });
  const bool leader_started = WaitUntil([&] { return runs.load() == 1 && flight.InFlight() == 1; });

  // A patient waiter joins the same flight and must get the leader's result in the end.
  std::atomic<bool> patient_announced{false};
  std::optional<Outcome> patient_outcome;
  std::thread patient([&] {
    patient_announced.store(true);
    patient_outcome =
        flight.Do("key", absl::Now() + absl::Seconds(60), [&]() -> absl::StatusOr<Bytes> {
          runs.fetch_add(1);
          return MakeBytes("patient ran the work itself");
        });
  });
  WaitUntil([&] { return patient_announced.load(); });

  bool impatient_ran = false;
  const auto impatient_work = [&]() -> absl::StatusOr<Bytes> {
    impatient_ran = true;
    return MakeBytes("impatient ran the work itself");
  };
  const absl::Time before = absl::Now();
  const Outcome impatient = flight.Do("key", absl::Now() + absl::Milliseconds(100), impatient_work);
  const absl::Duration waited = absl::Now() - before;
  const Outcome expired = flight.Do("key", absl::Now() - absl::Seconds(1), impatient_work);
  const std::size_t in_flight_after_timeouts = flight.InFlight();

  release.count_down();
  leader.join();
  patient.join();

  REQUIRE(leader_started);
  CHECK(impatient.role == Role::kTimedOut);
  CHECK(impatient.result.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(waited >= absl::Milliseconds(95));
  CHECK(expired.role == Role::kTimedOut);
  CHECK(expired.result.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_FALSE(impatient_ran);
  CHECK(in_flight_after_timeouts == 1);  // the timeouts did not end the leader's flight

  CHECK(runs.load() == 1);
  REQUIRE(leader_outcome.has_value());
  CHECK(leader_outcome->role == Role::kLeader);
  REQUIRE(leader_outcome->result.ok());
  CHECK(**leader_outcome->result == "slow load");
  REQUIRE(patient_outcome.has_value());
  CHECK(patient_outcome->role == Role::kWaiter);
  REQUIRE(patient_outcome->result.ok());
  CHECK(patient_outcome->result->get() == leader_outcome->result->get());
  CHECK(flight.InFlight() == 0);
}

// Runs one flight per key, each on its own thread; every work waits until both are under way.
struct TwoFlights {
  bool both_running = false;  // both works were under way at once
  std::size_t in_flight = 0;  // keys in flight meanwhile
  std::optional<Outcome> outcomes[2];
};
TwoFlights RunTwoFlightsAtOnce(SingleFlight& flight, const std::string (&keys)[2]) {
  TwoFlights run;
  std::atomic<int> running{0};
  std::latch release(1);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      run.outcomes[i] = flight.Do(keys[i], absl::InfiniteFuture(), [&]() -> absl::StatusOr<Bytes> {
        running.fetch_add(1);
        release.wait();
        return MakeBytes(keys[i]);
      });
    });
  }
  run.both_running = WaitUntil([&] { return running.load() == 2; });
  run.in_flight = flight.InFlight();
  release.count_down();
  for (std::thread& thread : threads) thread.join();
  return run;
}

TEST_CASE("flights of different keys run independently and at the same time", "[concurrency]") {
  SingleFlight flight;
  const std::string keys[2] = {"alpha", "beta"};
  const TwoFlights run = RunTwoFlightsAtOnce(flight, keys);
  // Both works are under way at once: neither key's flight waits for the other's.
  REQUIRE(run.both_running);
  CHECK(run.in_flight == 2);
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    REQUIRE(run.outcomes[i].has_value());
    CHECK(run.outcomes[i]->role == Role::kLeader);
    REQUIRE(run.outcomes[i]->result.ok());
    CHECK(**run.outcomes[i]->result == keys[i]);
  }
  CHECK(flight.InFlight() == 0);
}

TEST_CASE("keys are compared by their bytes, NUL and all", "[concurrency]") {
  // "k\0a" and "k\0b" must be separate flights even though they agree up to the NUL.
  SingleFlight flight;
  const std::string keys[2] = {std::string("k\0a", 3), std::string("k\0b", 3)};
  const TwoFlights run = RunTwoFlightsAtOnce(flight, keys);
  REQUIRE(run.both_running);
  CHECK(run.in_flight == 2);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(run.outcomes[i].has_value());
    CHECK(run.outcomes[i]->role == Role::kLeader);
  }
  CHECK(flight.InFlight() == 0);
}

}  // namespace
}  // namespace chunkcache::internal
