#include "cache/load_memo.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chunkcache::internal {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'000'000);

LoadMemo::Options Defaults() {
  return {.retry_initial = absl::Seconds(1),
          .retry_max = absl::Seconds(8),
          .hold = absl::Seconds(2),
          .max_bytes = 1000};
}

Bytes Value(std::size_t size) { return std::make_shared<const std::string>(size, 'v'); }

TEST_CASE("a failure answers within its backoff, drawn from [half, all] of it, doubling to max") {
  LoadMemo memo(Defaults());
  absl::Time now = kNow;
  for (const absl::Duration d :
       {absl::Seconds(1), absl::Seconds(2), absl::Seconds(4), absl::Seconds(8), absl::Seconds(8)}) {
    memo.Failed("k", absl::UnavailableError("origin down"), now);
    const std::optional<absl::StatusOr<Bytes>> held =
        memo.Answer("k", now + d / 2 - absl::Nanoseconds(1));
    REQUIRE(held.has_value());
    CHECK(absl::IsUnavailable(held->status()));
    CHECK(absl::StrContains(held->status().message(), "origin down"));
    CHECK(memo.Deferred("k", now));
    CHECK_FALSE(memo.Answer("k", now + d).has_value());
    now += d;
  }
  memo.Clear("k");
  CHECK_FALSE(memo.Answer("k", now).has_value());
  // The count starts again after a success.
  memo.Failed("k", absl::UnavailableError("again"), now);
  CHECK_FALSE(memo.Answer("k", now + absl::Seconds(1)).has_value());
}

TEST_CASE("an unstored value answers for the hold, and a write in between keeps it out") {
  LoadMemo memo(Defaults());
  const Bytes value = Value(10);
  memo.Unstored("k", value, kNow);
  std::optional<absl::StatusOr<Bytes>> held = memo.Answer("k", kNow + absl::Seconds(1));
  REQUIRE(held.has_value());
  REQUIRE(held->ok());
  CHECK(held->value().get() == value.get());
  CHECK_FALSE(memo.Deferred("k", kNow));  // a held value answers, it does not defer
  CHECK_FALSE(memo.Answer("k", kNow + absl::Seconds(2)).has_value());

  // A load that read the epoch before this process wrote the key leaves nothing behind.
  const std::uint64_t epoch = memo.Epoch("k");
  memo.Clear("k");
  memo.Unstored("k", value, kNow, epoch);
  memo.Failed("k", absl::UnavailableError("late"), kNow, epoch);
  CHECK_FALSE(memo.Answer("k", kNow).has_value());
  memo.Unstored("k", value, kNow, memo.Epoch("k"));
  CHECK(memo.Answer("k", kNow).has_value());
}

TEST_CASE("a deferral holds loads back without answering, and keeps the later end") {
  LoadMemo memo(Defaults());
  memo.Defer("k", kNow, kNow + absl::Seconds(5));
  memo.Defer("k", kNow, kNow + absl::Seconds(1));
  CHECK_FALSE(memo.Answer("k", kNow).has_value());
  CHECK(memo.Deferred("k", kNow + absl::Seconds(4)));
  CHECK_FALSE(memo.Deferred("k", kNow + absl::Seconds(5)));
}

TEST_CASE("held values stay within max_bytes and keys within kMaxKeys") {
  LoadMemo memo(Defaults());  // 1000 bytes
  memo.Unstored("too big", Value(1001), kNow);
  CHECK_FALSE(memo.Answer("too big", kNow).has_value());
  for (int i = 0; i < 5; ++i) {
    memo.Unstored(absl::StrCat("k", i), Value(300), kNow + absl::Seconds(i) / 10);
  }
  int held = 0;
  for (int i = 0; i < 5; ++i) held += memo.Answer(absl::StrCat("k", i), kNow).has_value() ? 1 : 0;
  CHECK(held == 3);  // 900 of 1000 bytes; the ones expiring soonest made room
  CHECK(memo.Answer("k4", kNow).has_value());

  for (std::size_t i = 0; i < LoadMemo::kMaxKeys + 100; ++i) {
    memo.Failed(absl::StrCat("f", i), absl::UnavailableError("x"), kNow);
  }
  CHECK(memo.size() <= LoadMemo::kMaxKeys);
  // The newest failure is kept.
  CHECK(memo.Answer(absl::StrCat("f", LoadMemo::kMaxKeys + 99), kNow).has_value());
}

}  // namespace
}  // namespace chunkcache::internal
