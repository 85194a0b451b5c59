// chunkcache/fault_injection_backend.h — a Backend decorator that makes an inner Backend misbehave.
//
// FaultInjectionBackend forwards to an inner Backend and, at the rates you choose, fails calls,
// slows them down, silently drops writes, loses items and corrupts the bytes it reads. Use it to
// test what your service does when its cache misbehaves: that a RetryingBackend absorbs the errors,
// that ChunkedCache never returns corrupt bytes, that the origin is called when chunks go missing.
//
//   absl::StatusOr<std::shared_ptr<chunkcache::FaultInjectionBackend>> faulty =
//       chunkcache::NewFaultInjectionBackend(chunkcache::NewMemoryBackend(),
//                                            {.read_error_rate = 0.1});
//   if (!faulty.ok()) return faulty.status();
//   chunkcache::ChunkedCache cache(*faulty);
//   ...
//   (*faulty)->SetOptions({});  // Heal it: from the next call on, everything is forwarded as is.
//
// Each fault is a random decision with the given probability (rates at or below 0 never happen,
// rates at or above 1 always do). Decisions come from one generator seeded with `seed`: a
// single-threaded sequence of calls with the same options and seed makes the same decisions on
// every run and platform. Injected errors say so in their message ("fault injected: ...").
// max_item_size() forwards to the inner backend.
//
// Thread safety: a FaultInjectionBackend is safe for concurrent use by any number of threads,
// including SetOptions while other threads call it (options and generator are locked, counters
// atomic, delays slept outside the lock). Under concurrent use the decisions are still random
// with the given rates but which call gets which decision depends on scheduling.

#ifndef CHUNKCACHE_FAULT_INJECTION_BACKEND_H_
#define CHUNKCACHE_FAULT_INJECTION_BACKEND_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"

namespace chunkcache {

struct FaultInjectionOptions {
  // Fraction of MultiGet and MultiGetEach calls that fail with error_code without reaching the
  // inner backend.
  // Default: 0.
  double read_error_rate = 0;

  // Fraction of MultiSet, Delete and SetIfAbsent calls that fail with error_code without reaching
  // the inner backend (nothing is stored or deleted).
  // Default: 0.
  double write_error_rate = 0;

  // Per item of a MultiSet: the fraction of items left out of the batch given to the inner
  // backend while the call still reports success (a write lost by the store). SetIfAbsent is
  // never dropped.
  // Default: 0.
  double drop_write_rate = 0;

  // Per key of a MultiGet or MultiGetEach that the inner backend has: the fraction reported
  // absent (an evicted chunk, a replica that has not caught up).
  // Default: 0.
  double lose_item_rate = 0;

  // Per non-empty value returned by MultiGet or handed over by MultiGetEach (and not lost): the
  // fraction in which one random byte is XORed with a random non-zero mask (corruption in the
  // store or on the wire). MultiGetEach hands over a copy with the byte flipped.
  // Default: 0.
  double flip_byte_rate = 0;

  // Fraction of calls that sleep for `delay` before anything else happens (a delayed call may
  // still fail with an injected error).
  // Default: 0.
  double delay_rate = 0;

  // How long a delayed call sleeps. Zero or negative means no sleep.
  // Default: zero.
  absl::Duration delay = absl::ZeroDuration();

  // The code of injected errors. Unavailable looks like a server that is down; ResourceExhausted
  // like throttling; DeadlineExceeded like a timeout. kOk is taken as Unavailable.
  // Default: Unavailable.
  absl::StatusCode error_code = absl::StatusCode::kUnavailable;

  // Seed of the generator behind every decision. NewFaultInjectionBackend and SetOptions seed it.
  // Default: 1.
  std::uint64_t seed = 1;
};

// Counters of a FaultInjectionBackend since its creation. Read one by one without a lock, so
// a snapshot taken under concurrent use may be off by the calls in flight.
struct FaultInjectionStats {
  std::uint64_t calls = 0;           // MultiGet/MultiGetEach/MultiSet/Delete/SetIfAbsent calls
  std::uint64_t read_errors = 0;     // MultiGet/MultiGetEach calls failed
  std::uint64_t write_errors = 0;    // MultiSet/Delete/SetIfAbsent calls failed
  std::uint64_t dropped_writes = 0;  // items a successful MultiSet reported stored but dropped
  std::uint64_t lost_items = 0;      // present items MultiGet(Each) reported absent
  std::uint64_t flipped_bytes = 0;   // values MultiGet(Each) returned with one byte flipped
  std::uint64_t delays = 0;          // calls delayed

  // Every fault injected (all the counters above but calls).
  std::uint64_t total() const {
    return read_errors + write_errors + dropped_writes + lost_items + flipped_bytes + delays;
  }
};

// Injects faults into the calls to an inner Backend; see the top of this file. The faults each
// call may meet, in the order they are drawn:
// - MultiGet: delay_rate, read_error_rate, then per item lose_item_rate and flip_byte_rate.
// - MultiGetEach: the same, per item as the inner backend hands it over, so that a call makes the
//   decisions a MultiGet of the same items would (with one seed, one thread).
// - MultiSet: delay_rate, write_error_rate, then per item drop_write_rate. Dropped items are left
//   out of the batch given to the inner backend (which is called even if none is left, so that it
//   still checks the ttl); they count as dropped only if that call succeeds.
// - Delete and SetIfAbsent: delay_rate, write_error_rate.
//
// Thread safety: safe for concurrent use, SetOptions included.
class FaultInjectionBackend : public Backend {
 public:
  // Replaces the options and re-seeds the generator with options.seed. Calls that start
  // afterwards use the new options, calls in progress finish with the old ones.
  virtual void SetOptions(FaultInjectionOptions options) = 0;
  virtual FaultInjectionOptions options() const = 0;

  virtual FaultInjectionStats Stats() const = 0;

  virtual const std::shared_ptr<Backend>& inner() const = 0;
};

// Returns a FaultInjectionBackend over `inner`; with the default options every call is forwarded
// unchanged. InvalidArgument for a null `inner`. Every value of the options is usable (see each
// field).
absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> NewFaultInjectionBackend(
    std::shared_ptr<Backend> inner, FaultInjectionOptions options = {});

}  // namespace chunkcache

#endif  // CHUNKCACHE_FAULT_INJECTION_BACKEND_H_
