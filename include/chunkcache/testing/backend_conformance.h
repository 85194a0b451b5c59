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
// The checks write keys that start with ConformanceOptions::key_prefix and a random tag, so they
// may run against a shared store (a Redis server other tests use); they delete what they wrote
// where they can, and otherwise leave it to expire (every item has a TTL of at most a minute).

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

  // The backend expires items when their TTL passes. If false, the expiry checks are skipped
  // (a non-positive TTL must still be InvalidArgument, and an infinite one accepted). Default: true.
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
  // cache's own keys reach about 3 KB (a 1024-byte logical key, escaped, plus the prefix and
  // suffixes); a backend that cannot store 4096-byte keys cannot hold every entry.
  // Default: 4096.
  std::size_t max_key_size = 4096;

  // The concurrency checks: threads calling at once, and calls each makes. Default: 8 and 200.
  int threads = 8;
  int calls_per_thread = 200;

  // Size in MiB of the reference catalogue (chunkcache/testing/catalogue.h) the end-to-end check
  // stores through ChunkedCache, with chunks of the backend's max_item_size (at most 1 MiB).
  // Default: 10 (the reference workload, about 3 MB stored).
  double catalogue_megabytes = 10;

  // Prefix of every key the kit writes. Default: "chunkcache-conformance:".
  std::string key_prefix = "chunkcache-conformance:";

  // Runs only the checks with these names (ConformanceCheckNames()); empty runs every check.
  // An unknown name is InvalidArgument. Default: empty.
  std::vector<std::string> only;
};

// Runs the Backend contract against fresh backends made by `make` (called once per check) and
// returns OK or the first violation: FailedPrecondition whose message reads
// "backend conformance, check '<name>': <the rule> ... <what was seen>". A backend call that fails
// where the contract expects success is a violation too, quoting the backend's status. `make`
// returning null is InvalidArgument. The checks take a few seconds (most of it waiting for short
// TTLs to pass) plus the end-to-end check's Put and Gets of the catalogue.
absl::Status CheckBackendConformance(const std::function<std::shared_ptr<Backend>()>& make,
                                     const ConformanceOptions& options = {});

// The names of the checks, in the order CheckBackendConformance runs them.
std::vector<std::string_view> ConformanceCheckNames();

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTING_BACKEND_CONFORMANCE_H_
