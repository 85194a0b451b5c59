// chunkcache/testing/backend_conformance.h — a conformance kit for Backend implementations (part
// of the chunkcache::testing library; link chunkcache::testing).
//
// Run it from your own backend's tests: it checks every rule of the contract in
// chunkcache/backend.h against fresh backends and returns the first violation, naming the rule.
//
//   TEST_CASE("my backend keeps the Backend contract") {
//     absl::Status conformance = chunkcache::testing::CheckBackendConformance(
//         [] { return std::make_shared<DirectoryBackend>(temp_dir); },
//         {.supports_set_if_absent = false});
//     REQUIRE(conformance.ok());   // else: "backend conformance, check 'multiget-order': ..."
//   }
//
// The checks write keys that start with ConformanceOptions::key_prefix and a random tag (new on
// every run), so they may run against a shared store (a Redis server other tests use). Each check
// deletes the keys it wrote when it ends, pass or fail. Whatever else stays (the end-to-end check's
// faults leave chunks behind) expires within a minute, except two items stored without a TTL (to
// check that an infinite one is accepted) if the backend's Delete fails.
//
// The checks, in the order they run (ConformanceCheckNames()); each gets a fresh backend:
//   max-item-size          max_item_size() is positive and the same on every call.
//   multiget-order         one answer per key, in request order, duplicates answered each time,
//                          absent keys nullopt, values byte-exact (every byte value, an empty value
//                          present and empty); an empty request has an empty answer.
//   multiget-each          MultiGetEach: each index once, in order, on the calling thread, the same
//                          answers; owners keep values valid and unchanged after the key is
//                          replaced and deleted; a sink error stops the call and is returned as is.
//   replace                MultiSet replaces an item; readers racing a writer that alternates two
//                          values of different sizes see one of them, never a mix or an absence.
//   ttl                    a zero or negative TTL is InvalidArgument and stores nothing; an
//                          infinite one and a 1 us one are accepted; with supports_ttl, an item
//                          is gone after twice short_ttl and a minute's is still there.
//   multiset-all-or-error  a successful batch stores every item; a batch whose last item is
//                          invalid (empty key, max_item_size() + 1 bytes) is InvalidArgument and
//                          stores none of its items (an existing key keeps its value).
//   oversize-value         a value of max_item_size() bytes (at most 8 MiB are tried) reads back
//                          byte-exact; one byte more is InvalidArgument for MultiSet and
//                          SetIfAbsent (tried if max_item_size() is below 64 MiB).
//   keys                   the empty key is refused by writes and never answered with an item;
//                          keys are distinct items whatever their bytes: a key for each of the
//                          256 byte values (NUL, CR, '{', '%', 'A' and 'a', invalid UTF-8 ...),
//                          keys that differ only in trailing spaces or NULs, and keys of up to
//                          max_key_size bytes that differ only in their last byte or length.
//   delete                 Delete of absent keys and of none succeeds; a mixed batch removes the
//                          present keys it names and no other.
//   set-if-absent          true and stored when absent, false and unchanged when present (an item
//                          stored by MultiSet, an empty value), absent again after Delete; or
//                          Unimplemented when !supports_set_if_absent.
//   set-if-absent-race     `threads` concurrent calls on a fresh key: exactly one true, its value
//                          stored (20 keys). Needs supports_set_if_absent.
//   set-if-absent-expiry   an expired item counts as absent. Needs SetIfAbsent and supports_ttl.
//   concurrent-calls       `threads` x `calls_per_thread` mixed calls on 8 shared keys: none fails,
//                          every item read is intact and belongs to the key asked for.
//   end-to-end             ChunkedCache over the backend wrapped in a FaultInjectionBackend (5 % of
//                          calls failed, writes dropped, items lost, bytes flipped) returns the
//                          reference catalogue or an error, never other bytes; over the bare
//                          backend, Put, Get, GetStream, GetCompressed (same bytes and raw size
//                          as before) and Invalidate work, and GetOrLoad of a cold key by 8
//                          threads loads once (with SetIfAbsent, also across two caches through
//                          the lease; with a visibility_delay, at least once).
// Where a check sends SetIfAbsent invalid input, Unimplemented passes: whether the backend may
// return it is check 'set-if-absent''s rule. A backend that throws fails the check whose call
// threw (except under ChunkedCache in 'end-to-end', which turns a throw into an error like any
// other).

#ifndef CHUNKCACHE_TESTING_BACKEND_CONFORMANCE_H_
#define CHUNKCACHE_TESTING_BACKEND_CONFORMANCE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"

namespace chunkcache::testing {

// What the backend under test declares about itself, and how hard the kit pushes it.
struct ConformanceOptions {
  // The backend implements SetIfAbsent atomically. If false, the kit checks instead that
  // SetIfAbsent returns Unimplemented (the default implementation), which turns the cache's
  // cross-process lease off. Default: true.
  bool supports_set_if_absent = true;

  // The backend expires items when their TTL passes. If false, the expiry checks are skipped (a
  // non-positive TTL must still be InvalidArgument, and an infinite one accepted). Default: true.
  bool supports_ttl = true;

  // The TTL the expiry checks store items with; they then wait for twice this (plus
  // visibility_delay) and expect the items gone. Use the backend's TTL granularity (Momento
  // counts whole seconds). Default: 1 s.
  absl::Duration short_ttl = absl::Seconds(1);

  // An eventually consistent backend: a write may take up to this long to be seen by a read, and
  // a delete to hide the item. The kit polls reads until then instead of expecting the write at
  // once. Default: zero (reads see every completed write).
  absl::Duration visibility_delay = absl::ZeroDuration();

  // Longest key the kit stores: keys of this many bytes, holding every byte value 0-255. The
  // cache's own keys reach 3102 bytes plus the escaped key_prefix (3105 with "cc:"); the
  // contract asks for 4096 as the margin. Lower it only for a store whose users keep their
  // logical keys and prefix short. Default: 4096.
  std::size_t max_key_size = 4096;

  // The concurrency checks: threads calling at once (at least 1; the race checks use at least 2),
  // and calls each makes. Default: 8 and 200.
  int threads = 8;
  int calls_per_thread = 200;

  // Size in MiB of the reference catalogue (chunkcache/testing/catalogue.h) the end-to-end check
  // stores through ChunkedCache, in chunks of the backend's max_item_size, at most 1 MiB and at
  // most 1/16 of the catalogue (so the entry always spans several chunks).
  // Default: 10 (the reference workload, about 3 MB stored).
  double catalogue_megabytes = 10;

  // Prefix of every key the kit writes. Default: "chunkcache-conformance:".
  std::string key_prefix = "chunkcache-conformance:";

  // Runs only the checks with these names (ConformanceCheckNames()); empty runs every check.
  // An unknown name is InvalidArgument. Default: empty.
  std::vector<std::string> only;
};

// Runs the Backend contract against fresh backends made by `make` (called once per check that
// runs) and returns OK or the first violation: FailedPrecondition whose message reads
// "backend conformance, check '<name>': <the rule>; saw <what was seen>", keys and values
// C-escaped and cut short. A backend call that fails where the contract expects success is a
// violation too, quoting the backend's status. InvalidArgument for an empty `make`, `make`
// returning null or throwing, an unknown name in `only`, or options out of range (threads below
// 1, calls_per_thread below 0, max_key_size 0, a negative visibility_delay, or a non-positive
// short_ttl with supports_ttl). A run waits about 4 x short_ttl for items to expire; the rest
// takes about a second on the memory backend or a local Redis (an -O2 build), most of it the
// end-to-end check's seven Puts of the catalogue.
absl::Status CheckBackendConformance(const std::function<std::shared_ptr<Backend>()>& make,
                                     const ConformanceOptions& options = {});

// The names of the checks, in the order CheckBackendConformance runs them.
std::vector<std::string_view> ConformanceCheckNames();

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTING_BACKEND_CONFORMANCE_H_
