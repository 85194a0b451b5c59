// fuzz_backend_url — NewBackendFromUrl and NewMomentoBackend on arbitrary text, without touching
// any address.
//
// Input: the text. Every occurrence of "%S" is replaced by a password-like marker (kUrlSecret), so
// that the fuzzer can put a secret anywhere in a URL (user info, host, path). Then:
//   - NewBackendFromUrl(text), only when the text starts with "memory:" or "momento+": those
//     schemes create a backend without connecting (redis:// and unix:// would connect: never
//     passed here);
//   - NewMomentoBackend({.endpoint = text, .cache_name = "c", .api_key = kApiKey}): checks the
//     options and parses the endpoint with libcurl's URL parser; it does not contact the server;
//   - redis::ParseServerUrl(text), the Redis URL parser behind NewRedisBackend and the redis://,
//     redis+cluster:// and unix:// URLs of NewBackendFromUrl (it connects to nothing).
// MOMENTO_API_KEY is kApiKey (set in LLVMFuzzerInitialize, or by the regression test).
// Properties:
//   - the status is OK or InvalidArgument; memory:// and memory: (only) give a memory backend;
//     a backend made has the default max_item_size (1 MiB);
//   - no message holds the API key, unless the text itself did;
//   - a ParseServerUrl message holds no kUrlSecret (src/backends/redis/url.h: errors quote nothing
//     of the URL); a URL it accepts has a port in 1..65535 or a unix socket path starting with
//     '/', and a database number of at least 0;
//   - a NewMomentoBackend message holds no kUrlSecret: it quotes nothing of the endpoint, whose
//     user info or host may hold a secret (include/chunkcache/momento_backend.h);
//   - a NewBackendFromUrl message holds kUrlSecret no more often than the URL's scheme (the part
//     before "://") does: "errors name the scheme, never the rest of the URL (it may hold a
//     password)" (include/chunkcache/backend_url.h), not even for a momento+ URL whose host
//     libcurl rejects (its user info included).

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "backends/redis/url.h"
#include "chunkcache/backend_url.h"
#include "chunkcache/momento_backend.h"
#include "fuzz_util.h"

namespace chunkcache::fuzz {
namespace backend_url_target {

constexpr char kApiKey[] = "fuzz-API-KEY-6d1f0c7e2b";
constexpr char kUrlSecret[] = "s3cr3t-PW-94e7a1";

std::size_t Count(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string_view::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

void CheckStatus(const absl::Status& status, const std::string& text, const char* what) {
  FUZZ_CHECK(status.ok() || absl::IsInvalidArgument(status),
             absl::StrCat(what, ": ", status.ToString()));
  const std::string message(status.message());
  FUZZ_CHECK(message.find(kApiKey) == std::string::npos || text.find(kApiKey) != std::string::npos,
             absl::StrCat(what, " put the API key in its message: ", message));
}

}  // namespace backend_url_target

// Sets MOMENTO_API_KEY (call once, before the first input).
void InitBackendUrl() { setenv("MOMENTO_API_KEY", backend_url_target::kApiKey, 1); }

int FuzzBackendUrl(const std::uint8_t* data, std::size_t size) {
  using namespace backend_url_target;
  const std::string text = absl::StrReplaceAll(
      absl::string_view(reinterpret_cast<const char*>(data), size), {{"%S", kUrlSecret}});

  if (text.starts_with("memory:") || text.starts_with("momento+")) {
    absl::StatusOr<std::shared_ptr<Backend>> backend = NewBackendFromUrl(text);
    CheckStatus(backend.status(), text, "NewBackendFromUrl");
    const std::size_t scheme_end = text.find("://");
    const std::string_view scheme =
        std::string_view(text).substr(0, scheme_end == std::string::npos ? 0 : scheme_end);
    const std::string message(backend.status().message());
    FUZZ_CHECK(Count(message, kUrlSecret) <= Count(scheme, kUrlSecret),
               "NewBackendFromUrl quoted more of the URL than its scheme: " + message);
    if (text.starts_with("memory:")) {
      FUZZ_CHECK(backend.ok() == (text == "memory://" || text == "memory:"),
                 "memory: " + backend.status().ToString());
    }
    if (backend.ok()) {
      FUZZ_CHECK(*backend != nullptr && (*backend)->max_item_size() == (std::size_t{1} << 20),
                 "a backend without the default max_item_size");
    }
  }

  absl::StatusOr<redis::ServerUrl> server = redis::ParseServerUrl(text);
  CheckStatus(server.status(), text, "ParseServerUrl");
  FUZZ_CHECK(std::string(server.status().message()).find(kUrlSecret) == std::string::npos,
             "ParseServerUrl quoted its URL: " + server.status().ToString());
  if (server.ok()) {
    const redis::Endpoint& seed = server->seed;
    FUZZ_CHECK(seed.unix_path.empty() ? !seed.host.empty() && seed.port >= 1 && seed.port <= 65535
                                      : seed.unix_path.front() == '/' && seed.host.empty(),
               "ParseServerUrl accepted an endpoint without a host and port or a socket path");
    FUZZ_CHECK(server->db >= 0, "ParseServerUrl accepted a negative database number");
  }

  absl::StatusOr<std::shared_ptr<Backend>> momento =
      NewMomentoBackend({.endpoint = text, .cache_name = "c", .api_key = kApiKey});
  CheckStatus(momento.status(), text, "NewMomentoBackend");
  FUZZ_CHECK(std::string(momento.status().message()).find(kUrlSecret) == std::string::npos,
             "NewMomentoBackend quoted its endpoint: " + momento.status().ToString());
  if (momento.ok()) {
    FUZZ_CHECK(*momento != nullptr && (*momento)->max_item_size() == (std::size_t{1} << 20),
               "a backend without the default max_item_size");
  }
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  chunkcache::fuzz::InitBackendUrl();
  return 0;
}
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzBackendUrl(data, size);
}
#endif
