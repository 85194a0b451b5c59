// chunkcache/backend_url.h — a Backend chosen by a URL, for configuration from one string (an
// environment variable, a flag).
//
//   memory://                                      NewMemoryBackend (this process only)
//   redis://[[user]:password@]host[:port][/db]     NewRedisBackend (also unix:///path[?db=N])
//   redis+cluster://[[user]:password@]host[:port]  NewRedisBackend with cluster = true
//   rediss://…, rediss+cluster://…                 the same over TLS (ca_bundle_path applies)
//   momento+https://ENDPOINT_HOST[:port]/CACHE     NewMomentoBackend, API key from MOMENTO_API_KEY
//   momento+http://127.0.0.1:PORT/CACHE            (a loopback emulator: the host must be an IPv4
//                                                  address in 127.0.0.0/8, [::1] or localhost)
//
//   absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
//       chunkcache::NewBackendFromUrl(std::getenv("CHUNKCACHE_BACKEND"));
//
// Errors name the scheme, never the rest of the URL (it may hold a password).

#ifndef CHUNKCACHE_BACKEND_URL_H_
#define CHUNKCACHE_BACKEND_URL_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"

namespace chunkcache {

struct BackendUrlOptions {
  // Time allowed for one backend call (Redis connect and command timeouts; Momento's deadline,
  // and its per-request timeout if shorter). Zero keeps each backend's default.
  // Default: zero.
  absl::Duration timeout = absl::ZeroDuration();

  // The backends' max_item_size. Zero keeps each backend's default (1 MiB). For momento+ URLs at
  // most kMomentoMaxValueBytes (Momento's 5 MB item limit less room for the key), else
  // InvalidArgument. Default: 0.
  std::size_t max_item_size = 0;

  // For momento+https, rediss:// and rediss+cluster:// URLs: a PEM file of CA certificates to
  // verify the server with (MomentoBackendOptions::ca_bundle_path,
  // RedisBackendOptions::tls_ca_bundle_path). Default: empty (the system's CA store).
  std::string ca_bundle_path;
};

// The backend `url` names, created and (for Redis) connected. InvalidArgument for an unknown
// scheme or a malformed URL; the backend factory's error otherwise.
absl::StatusOr<std::shared_ptr<Backend>> NewBackendFromUrl(std::string_view url,
                                                           const BackendUrlOptions& options = {});

}  // namespace chunkcache

#endif  // CHUNKCACHE_BACKEND_URL_H_
