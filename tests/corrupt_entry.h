// Damages a stored entry the way the programs' tests need: its first frames read fine, its last
// does not. For the tests of programs that stream (the Lambda bootstrap, the service).

#ifndef CHUNKCACHE_TESTS_CORRUPT_ENTRY_H_
#define CHUNKCACHE_TESTS_CORRUPT_ENTRY_H_

#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chunkcache/backend_url.h"
#include "chunkcache/chunked_cache.h"

namespace chunkcache::testing {

// Stores `json` under "catalogue" in `backend_url` as the programs do (default options), then
// flips a byte in the middle of its last chunk.
inline void StoreWithCorruptLastChunk(const std::string& backend_url, const std::string& json) {
  absl::StatusOr<std::shared_ptr<Backend>> backend = NewBackendFromUrl(backend_url);
  REQUIRE(backend.ok());
  ChunkedCache cache(*backend);
  REQUIRE(cache.Put("catalogue", json).ok());
  absl::StatusOr<EntryInfo> info = cache.Inspect("catalogue");
  REQUIRE(info.ok());
  REQUIRE(info->frame_count >= 3);
  REQUIRE(info->chunks.size() >= 2);
  const std::string last = info->chunks.back().key;
  absl::StatusOr<std::vector<std::optional<std::string>>> got = (*backend)->MultiGet({last});
  REQUIRE(got.ok());
  REQUIRE((*got)[0].has_value());
  std::string chunk = *(*got)[0];
  chunk[chunk.size() / 2] ^= 0x40;
  const KeyValue item{last, chunk};
  REQUIRE((*backend)->MultiSet({&item, 1}, absl::Minutes(10)).ok());
}

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTS_CORRUPT_ENTRY_H_
