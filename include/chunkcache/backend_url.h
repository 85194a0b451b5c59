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
//   SCHEME:…                                       a scheme of your own: RegisterBackendScheme
//
//   absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
//       chunkcache::NewBackendFromUrl(std::getenv("CHUNKCACHE_BACKEND"));  // unset: an error
//
// Your own Backend becomes reachable wherever a URL is taken (the chunkcache tool's --backend
// through chunkcache/tool.h, the examples, your configuration) by registering its scheme once,
// before the first URL that uses it:
//
//   absl::Status registered = chunkcache::RegisterBackendScheme(
//       "dir", [](std::string_view url, const chunkcache::BackendUrlOptions& options)
//                  -> absl::StatusOr<std::shared_ptr<chunkcache::Backend>> {
//         return std::make_shared<DirectoryBackend>(url.substr(std::string_view("dir://").size()));
//       });
//   ... chunkcache::NewBackendFromUrl("dir:///var/cache/catalogue") ...
//
// Errors name the scheme, never the rest of the URL (it may hold a password); a registered
// factory's own errors are returned as it made them.
//
// Thread safety: every function here is safe to call from any thread, registration included.

#ifndef CHUNKCACHE_BACKEND_URL_H_
#define CHUNKCACHE_BACKEND_URL_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
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

// The backend `url` names, created and (for Redis) connected. The scheme is the text before the
// first ':', compared without regard to case for registered schemes (RFC 3986) and as written,
// in lower case, for the built-in ones. InvalidArgument for an unknown scheme or a malformed URL;
// the backend factory's error otherwise.
absl::StatusOr<std::shared_ptr<Backend>> NewBackendFromUrl(std::string_view url,
                                                           const BackendUrlOptions& options = {});

// The same for a C string, such as std::getenv's answer: null (an unset variable) is
// InvalidArgument "no backend URL (null; is the environment variable set?)". (String literals
// and char pointers take this overload, std::string and std::string_view the one above.)
absl::StatusOr<std::shared_ptr<Backend>> NewBackendFromUrl(const char* url,
                                                           const BackendUrlOptions& options = {});

// Makes the backend of a URL whose scheme was registered: `url` is the whole URL as given to
// NewBackendFromUrl, scheme included, and `options` the caller's (apply those that mean something
// to your backend; a zero is "your default"). Return an error (it reaches the caller unchanged: do
// not quote a password from the URL in it) or a non-null backend (null is Internal). It may be
// called from many threads at once, and may itself call NewBackendFromUrl (to wrap another URL's
// backend); no lock is held while it runs.
using BackendFactory = std::function<absl::StatusOr<std::shared_ptr<Backend>>(
    std::string_view url, const BackendUrlOptions& options)>;

// Makes NewBackendFromUrl hand URLs of `scheme` ("dir" for dir:///var/cache) to `factory`, for the
// rest of the process (there is no unregistering). Rules:
// - `scheme` is RFC 3986's: a letter, then letters, digits, '+', '-' or '.'; at most 64
//   characters; given without "://". Schemes differ only when they differ ignoring case ("Dir"
//   and "dir" are one scheme). Else InvalidArgument, as is an empty (null) `factory`.
// - A scheme already taken is AlreadyExists: one registered before, or a built-in one (memory,
//   redis, rediss, redis+cluster, rediss+cluster, unix, and every scheme beginning "momento+").
// - Register before the first NewBackendFromUrl that needs the scheme (at the start of main);
//   registering while other threads make backends is safe.
absl::Status RegisterBackendScheme(std::string_view scheme, BackendFactory factory);

}  // namespace chunkcache

#endif  // CHUNKCACHE_BACKEND_URL_H_
