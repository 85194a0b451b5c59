// The cache's warnings to CacheOptions::log: at most one message of each kind per second; the
// ones held back within the second are counted, and the next message let through says how many.
// A message is only built when it goes out, and a sink that throws loses its message, never the
// caller's call or a refresh thread.
//
//   internal::RateLimitedLog log(options.log);
//   log.Warn(internal::RateLimitedLog::kCorrupt,
//            [&] { return absl::StrCat("chunkcache: a corrupt entry was read: ", why); });
//
// Thread safety: Warn may be called from any number of threads at once (atomics); the sink is
// called from the thread whose message goes out.

#ifndef CHUNKCACHE_SRC_CACHE_RATE_LIMITED_LOG_H_
#define CHUNKCACHE_SRC_CACHE_RATE_LIMITED_LOG_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "chunkcache/options.h"

namespace chunkcache::internal {

class RateLimitedLog {
 public:
  // The kinds of message, each limited on its own.
  enum Kind { kCorrupt, kFallback, kRefresh, kStore, kBreaker, kLease, kKinds };

  // `sink` may be empty: then nothing is built or passed.
  explicit RateLimitedLog(std::function<void(LogLevel, std::string_view)> sink);

  // Passes `message()` (a callable returning std::string) to the sink as a warning, unless a
  // message of `kind` went out less than a second ago.
  template <typename Message>
  void Warn(Kind kind, Message message) {
    if (sink_ && Admit(kind)) Emit(kind, message());
  }

 private:
  // True if a message of `kind` may go out now (and marks it sent); else counts it held back.
  bool Admit(Kind kind);
  void Emit(Kind kind, std::string text);

  const std::function<void(LogLevel, std::string_view)> sink_;
  std::array<std::atomic<std::int64_t>, kKinds> last_ns_{};
  std::array<std::atomic<std::uint64_t>, kKinds> held_back_{};
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_RATE_LIMITED_LOG_H_
