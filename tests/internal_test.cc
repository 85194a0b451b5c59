// The shared primitives in src/internal/: JSON quoting, the fd owner, the backoff draws.

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/random/random.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "internal/backoff.h"
#include "internal/json.h"
#include "internal/unique_fd.h"
#include "simdjson.h"

namespace chunkcache::internal {
namespace {

TEST_CASE("JsonString quotes what JSON needs quoted and round-trips through a parser", "[internal]") {
  CHECK(JsonString("") == "\"\"");
  CHECK(JsonString("a\"b\\c") == R"("a\"b\\c")");
  CHECK(JsonString(std::string("\x01\n\x1f", 3)) == R"("\u0001\u000a\u001f")");
  CHECK(JsonString("caf\xc3\xa9") == "\"caf\xc3\xa9\"");

  std::string every;
  for (int c = 1; c < 128; ++c) every.push_back(static_cast<char>(c));
  simdjson::dom::parser parser;
  const std::string doc = "[" + JsonString(every) + "]";
  simdjson::dom::element parsed;
  REQUIRE(parser.parse(doc).get(parsed) == simdjson::SUCCESS);
  std::string_view back;
  REQUIRE(parsed.at(0).get(back) == simdjson::SUCCESS);
  CHECK(back == every);

  std::string out = "x=";
  AppendJsonString(&out, "y");
  CHECK(out == "x=\"y\"");
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST_CASE("UniqueFd closes what it owns, once, and moves ownership", "[internal]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  {
    UniqueFd a(fds[0]);
    UniqueFd b(std::move(a));
    CHECK_FALSE(a.valid());
    CHECK(b.get() == fds[0]);
    UniqueFd c;
    c = std::move(b);
    CHECK(IsOpen(fds[0]));
  }
  CHECK_FALSE(IsOpen(fds[0]));

  UniqueFd d(fds[1]);
  const int raw = d.Release();
  CHECK_FALSE(d.valid());
  CHECK(IsOpen(raw));
  d.Reset(raw);
  d.Reset();
  CHECK_FALSE(IsOpen(raw));
}

TEST_CASE("Backoff ceilings double up to the cap and draws stay in their ranges", "[internal]") {
  const absl::Duration base = absl::Milliseconds(10), cap = absl::Seconds(1);
  CHECK(ExponentialCeiling(0, base, cap) == base);
  CHECK(ExponentialCeiling(1, base, cap) == base);
  CHECK(ExponentialCeiling(4, base, cap) == absl::Milliseconds(80));
  CHECK(ExponentialCeiling(1000, base, cap) == cap);  // no overflow on a huge attempt

  absl::BitGen gen;
  absl::Duration full_min = absl::InfiniteDuration(), full_max = absl::ZeroDuration();
  absl::Duration equal_min = absl::InfiniteDuration();
  for (int i = 0; i < 10000; ++i) {
    const absl::Duration f = FullJitter(absl::Milliseconds(100), gen);
    const absl::Duration e = EqualJitter(absl::Milliseconds(100), gen);
    REQUIRE(f >= absl::ZeroDuration());
    REQUIRE(f <= absl::Milliseconds(100));
    REQUIRE(e >= absl::Milliseconds(50));
    REQUIRE(e <= absl::Milliseconds(100));
    full_min = std::min(full_min, f);
    full_max = std::max(full_max, f);
    equal_min = std::min(equal_min, e);
  }
  // Spread over the range, not stuck at one end.
  CHECK(full_min < absl::Milliseconds(5));
  CHECK(full_max > absl::Milliseconds(95));
  CHECK(equal_min < absl::Milliseconds(55));
  CHECK(FullJitter(absl::ZeroDuration(), gen) == absl::ZeroDuration());
  CHECK(EqualJitter(-absl::Seconds(1), gen) == absl::ZeroDuration());
}

}  // namespace
}  // namespace chunkcache::internal
