// One-key Backend calls for Catch2 tests: the value of a key, or storing one, with the test case
// failing (REQUIRE) when the backend fails.
//
//   REQUIRE(testing::Set(*backend, "k", "v").ok());
//   CHECK(testing::Get(*backend, "k") == "v");
//
// As thread-safe as the backend.

#ifndef CHUNKCACHE_TESTS_BACKEND_CALLS_H_
#define CHUNKCACHE_TESTS_BACKEND_CALLS_H_

#include <catch2/catch.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "chunkcache/backend.h"

namespace chunkcache::testing {

// The value of `key` (nullopt: absent). REQUIREs that the MultiGet succeeds.
inline std::optional<std::string> Get(Backend& backend, std::string_view key) {
  absl::StatusOr<std::vector<std::optional<std::string>>> values = backend.MultiGet({&key, 1});
  REQUIRE(values.ok());
  REQUIRE(values->size() == 1);
  return (*values)[0];
}

// Stores `value` under `key` for `ttl` (default: no expiry).
inline absl::Status Set(Backend& backend, std::string_view key, std::string_view value,
                        absl::Duration ttl = absl::InfiniteDuration()) {
  const KeyValue item{key, value};
  return backend.MultiSet({&item, 1}, ttl);
}

// What MultiGetEach hands over for `keys`, in the shape MultiGet returns. CHECKs that each index
// comes once, in order, and that every item has an owner; REQUIREs that the call succeeds.
inline std::vector<std::optional<std::string>> GetEach(Backend& backend,
                                                       absl::Span<const std::string_view> keys) {
  std::vector<std::optional<std::string>> values;
  const absl::Status status =
      backend.MultiGetEach(keys, [&](std::size_t index, std::optional<ItemView> item) {
        CHECK(index == values.size());
        CHECK((!item.has_value() || item->owner != nullptr));
        values.push_back(item.has_value() ? std::optional<std::string>(item->value) : std::nullopt);
        return absl::OkStatus();
      });
  INFO(status.ToString());
  REQUIRE(status.ok());
  REQUIRE(values.size() == keys.size());
  return values;
}

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTS_BACKEND_CALLS_H_
