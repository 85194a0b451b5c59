// chunkcache/chunkcache.h — the umbrella header: everything a user of the library needs.
//
// chunkcache stores large JSON documents (a ~10 MB catalogue, say) in caches whose items are
// small: it validates, compresses (zstd), splits into chunks, reassembles and verifies, and makes
// a cold key load from the origin once per process instead of once per request.
// Start with ChunkedCache (chunked_cache.h) over a Backend (backend.h, memory_backend.h).

#ifndef CHUNKCACHE_CHUNKCACHE_H_
#define CHUNKCACHE_CHUNKCACHE_H_

#include "chunkcache/backend.h"
#include "chunkcache/backend_url.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/metrics.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/options.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/retrying_backend.h"
#include "chunkcache/stats.h"
#include "chunkcache/version.h"

#endif  // CHUNKCACHE_CHUNKCACHE_H_
