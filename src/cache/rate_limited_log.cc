#include "cache/rate_limited_log.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace chunkcache::internal {
namespace {

constexpr std::int64_t kIntervalNs = 1'000'000'000;

}  // namespace

RateLimitedLog::RateLimitedLog(std::function<void(LogLevel, std::string_view)> sink)
    : sink_(std::move(sink)) {}

bool RateLimitedLog::Admit(Kind kind) {
  const std::int64_t now = absl::GetCurrentTimeNanos();
  std::int64_t last = last_ns_[kind].load(std::memory_order_relaxed);
  if (now - last < kIntervalNs ||
      !last_ns_[kind].compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    held_back_[kind].fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void RateLimitedLog::Emit(Kind kind, std::string text) {
  if (const std::uint64_t held = held_back_[kind].exchange(0, std::memory_order_relaxed)) {
    absl::StrAppend(&text, " (and ", held, " more like it in the last second)");
  }
  try {
    sink_(LogLevel::kWarning, text);
  } catch (...) {
    // A log sink that throws loses its message, never the caller's call or a refresh thread.
  }
}

}  // namespace chunkcache::internal
