#include "chunkcache/backend.h"

namespace chunkcache {

absl::StatusOr<bool> Backend::SetIfAbsent(std::string_view /*key*/, std::string_view /*value*/,
                                          absl::Duration /*ttl*/) {
  return absl::UnimplementedError("this backend cannot store an item only if it is absent");
}

}  // namespace chunkcache
