// The checks a ChunkedCache makes of its configuration: the options alone
// (chunkcache::ValidateCacheOptions, public, in chunkcache/options.h) and together with the
// backend they will be used with (CheckCacheSetup). A cache whose setup fails the check answers
// every call with that InvalidArgument status.
//
//   const absl::Status setup = internal::CheckCacheSetup(backend.get(), options);
//   if (!setup.ok()) return setup;  // names the option (or the backend) at fault
//
// Thread safety: stateless.

#ifndef CHUNKCACHE_SRC_CACHE_OPTIONS_CHECK_H_
#define CHUNKCACHE_SRC_CACHE_OPTIONS_CHECK_H_

#include "absl/status/status.h"
#include "chunkcache/backend.h"
#include "chunkcache/options.h"

namespace chunkcache::internal {

// InvalidArgument if `backend` is null, the options fail ValidateCacheOptions (that status), or
// the backend's max_item_size() is below kMinChunkSize; OK otherwise.
absl::Status CheckCacheSetup(const Backend* backend, const CacheOptions& options);

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_CACHE_OPTIONS_CHECK_H_
