// An opt-in test against a real Momento cache. It runs only when MOMENTO_API_KEY, MOMENTO_ENDPOINT
// (e.g. https://api.cache.cell-4-us-west-2-1.prod.a.momentohq.com) and MOMENTO_CACHE are set;
// otherwise it exits with code 77, which ctest reports as "Skipped". Every run transfers a few MB
// (billed per KiB by Momento) and leaves nothing behind: its keys are deleted at the end.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/testing/catalogue.h"

namespace chunkcache {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

TEST_CASE("the catalogue round-trips through a real Momento cache") {
  absl::StatusOr<std::shared_ptr<MomentoBackend>> backend =
      NewMomentoBackend({.endpoint = Env("MOMENTO_ENDPOINT"), .cache_name = Env("MOMENTO_CACHE")});
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  ChunkedCache cache(*backend,
                     {.key_prefix = absl::StrCat("chunkcache-live-test-", std::rand(), ":"),
                      .ttl = absl::Minutes(5)});
  const std::string json = testing::GenerateCatalogue({.megabytes = 10});
  const absl::Status put = cache.Put("catalogue", json);
  INFO(put.ToString());
  REQUIRE(put.ok());
  absl::StatusOr<Bytes> got = cache.Get("catalogue");
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  CHECK(**got == json);
  CHECK(cache.Invalidate("catalogue").ok());
  CHECK(cache.Get("catalogue").status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace chunkcache

int main(int argc, char** argv) {
  for (const char* name : {"MOMENTO_API_KEY", "MOMENTO_ENDPOINT", "MOMENTO_CACHE"}) {
    if (chunkcache::Env(name).empty()) {
      std::cout << "momento_live_test: skipped, " << name
                << " is not set (set MOMENTO_API_KEY, MOMENTO_ENDPOINT and MOMENTO_CACHE to run "
                   "it against a real cache)\n";
      return 77;
    }
  }
  return Catch::Session().run(argc, argv);
}
