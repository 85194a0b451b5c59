// Where user code (a loader, a Backend, a log sink) or an allocation may throw, the cache turns
// the exception into an error status, so that none crosses the API or ends a refresh thread.
//
//   absl::StatusOr<std::string> loaded =
//       CatchExceptions("the loader", BadAlloc::kResourceExhausted, [&] { return loader(); });
//
// Statuses, naming `thrower`:
//   std::bad_alloc   ResourceExhausted "chunkcache: <thrower> ran out of memory" with
//                    BadAlloc::kResourceExhausted; otherwise as any std::exception
//   std::exception   Internal "chunkcache: <thrower> threw: <what()>"
//   anything else    Internal "chunkcache: <thrower> threw a non-standard exception"
//
// Thread safety: stateless.

#ifndef CHUNKCACHE_SRC_CACHE_EXCEPTION_STATUS_H_
#define CHUNKCACHE_SRC_CACHE_EXCEPTION_STATUS_H_

#include <string_view>

#include "absl/status/status.h"

namespace chunkcache::internal {

// How an out-of-memory exception is reported.
enum class BadAlloc {
  kInternal,           // like any other std::exception
  kResourceExhausted,  // ResourceExhausted: the caller may retry later
};

// The status standing for the exception being handled. Call only inside a catch block.
absl::Status CurrentExceptionStatus(std::string_view thrower, BadAlloc bad_alloc);

// `call()`'s result, or the status of the exception it threw. `call` returns absl::Status or an
// absl::StatusOr.
template <typename Call>
auto CatchExceptions(std::string_view thrower, BadAlloc bad_alloc, Call&& call)
    -> decltype(call()) {
  try {
    return call();
  } catch (...) {
    return CurrentExceptionStatus(thrower, bad_alloc);
  }
}

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_EXCEPTION_STATUS_H_
