#include "chunkcache/backend.h"

#include <algorithm>

namespace chunkcache {

absl::StatusOr<bool> Backend::SetIfAbsent(std::string_view /*key*/, std::string_view /*value*/,
                                          absl::Duration /*ttl*/) {
  return absl::UnimplementedError("this backend cannot store an item only if it is absent");
}

namespace {
thread_local absl::Time tls_call_deadline = absl::InfiniteFuture();
}  // namespace

absl::Time CallDeadline() { return tls_call_deadline; }

ScopedCallDeadline::ScopedCallDeadline(absl::Time deadline) : previous_(tls_call_deadline) {
  tls_call_deadline = std::min(previous_, deadline);
}

ScopedCallDeadline::~ScopedCallDeadline() { tls_call_deadline = previous_; }

}  // namespace chunkcache
