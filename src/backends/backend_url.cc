#include "chunkcache/backend_url.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/redis/url.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/redis_backend.h"
#include "internal/curl_url.h"
#include "internal/mutex.h"

namespace chunkcache {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The scheme alone, for messages: the rest of a URL may hold a password.
std::string SchemeOf(std::string_view url) {
  const std::size_t end = url.find("://");
  return end == std::string_view::npos ? "(none)" : std::string(url.substr(0, end));
}

// Longest scheme RegisterBackendScheme takes.
constexpr std::size_t kMaxSchemeSize = 64;

// The schemes NewBackendFromUrl knows without a registration; also "momento+" and anything after.
constexpr std::string_view kBuiltInSchemes[] = {"memory",        "redis", "rediss",
                                                "redis+cluster", "unix",  "rediss+cluster"};
constexpr std::string_view kMomentoSchemePrefix = "momento+";

// RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool IsValidScheme(std::string_view scheme) {
  if (scheme.empty() || scheme.size() > kMaxSchemeSize || !absl::ascii_isalpha(scheme[0])) {
    return false;
  }
  return std::all_of(scheme.begin(), scheme.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '+' || c == '-' || c == '.';
  });
}

bool IsBuiltInScheme(std::string_view lower_scheme) {
  return lower_scheme.starts_with(kMomentoSchemePrefix) ||
         std::find(std::begin(kBuiltInSchemes), std::end(kBuiltInSchemes), lower_scheme) !=
             std::end(kBuiltInSchemes);
}

// The registered schemes, in lower case, and their factories. Safe for concurrent use.
class SchemeRegistry {
 public:
  // The one registry of the process. Never destroyed: a backend may be made during exit.
  static SchemeRegistry& Get() {
    static SchemeRegistry* const registry = new SchemeRegistry();
    return *registry;
  }

  // False if `lower_scheme` is registered already.
  bool Add(std::string lower_scheme, BackendFactory factory) ABSL_LOCKS_EXCLUDED(mu_) {
    internal::MutexLock lock(&mu_);
    return factories_
        .try_emplace(std::move(lower_scheme),
                     std::make_shared<const BackendFactory>(std::move(factory)))
        .second;
  }

  // The factory of `lower_scheme`, or null. Shared, so that it runs without the lock held.
  std::shared_ptr<const BackendFactory> Find(std::string_view lower_scheme) const
      ABSL_LOCKS_EXCLUDED(mu_) {
    internal::MutexLock lock(&mu_);
    const auto it = factories_.find(AbslView(lower_scheme));
    return it == factories_.end() ? nullptr : it->second;
  }

  // The registered schemes, sorted, for messages.
  std::vector<std::string> Schemes() const ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::string> schemes;
    {
      internal::MutexLock lock(&mu_);
      for (const auto& [scheme, factory] : factories_) schemes.push_back(scheme);
    }
    std::sort(schemes.begin(), schemes.end());
    return schemes;
  }

 private:
  mutable internal::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const BackendFactory>> factories_
      ABSL_GUARDED_BY(mu_);
};

// The backend of `url` from the factory registered for its scheme (the text before the first
// ':'), or std::nullopt if there is none.
std::optional<absl::StatusOr<std::shared_ptr<Backend>>> NewRegisteredBackend(
    std::string_view url, const BackendUrlOptions& options) {
  const std::size_t colon = url.find(':');
  if (colon == std::string_view::npos || !IsValidScheme(url.substr(0, colon))) return std::nullopt;
  const std::string scheme = absl::AsciiStrToLower(AbslView(url.substr(0, colon)));
  const std::shared_ptr<const BackendFactory> factory = SchemeRegistry::Get().Find(scheme);
  if (factory == nullptr) return std::nullopt;
  absl::StatusOr<std::shared_ptr<Backend>> backend = (*factory)(url, options);
  if (backend.ok() && *backend == nullptr) {
    return absl::InternalError(
        absl::StrCat("chunkcache: the factory registered for backend scheme \"", scheme,
                     "\" returned no backend"));
  }
  return backend;
}

absl::StatusOr<std::shared_ptr<Backend>> NewMomento(std::string_view url,
                                                    const BackendUrlOptions& options) {
  // The rest is parsed as libcurl parses URLs (NewMomentoBackend checks the endpoint the same
  // way): host[:port] and one path segment, the cache name; no user info, query or fragment.
  internal::CurlUrl parsed;
  const bool parsed_ok = parsed.Set(std::string(url.substr(std::string_view("momento+").size())),
                                    CURLU_PATH_AS_IS) == CURLUE_OK;
  const std::string scheme = absl::AsciiStrToLower(parsed.Part(CURLUPART_SCHEME).value_or(""));
  const std::string host = parsed.Part(CURLUPART_HOST).value_or("");
  const std::string path = parsed.Part(CURLUPART_PATH).value_or("");
  const std::string_view cache = std::string_view(path).substr(path.empty() ? 0 : 1);
  if (!parsed_ok || (scheme != "https" && scheme != "http") || host.empty() || cache.empty() ||
      cache.find('/') != std::string_view::npos || parsed.Part(CURLUPART_USER).has_value() ||
      parsed.Part(CURLUPART_PASSWORD).has_value() || parsed.Part(CURLUPART_QUERY).has_value() ||
      parsed.Part(CURLUPART_FRAGMENT).has_value()) {
    return absl::InvalidArgumentError(
        "chunkcache: a Momento backend URL is momento+https://ENDPOINT_HOST[:port]/CACHE_NAME");
  }
  std::string endpoint = absl::StrCat(scheme, "://", host);
  if (const std::optional<std::string> port = parsed.Part(CURLUPART_PORT)) {
    absl::StrAppend(&endpoint, ":", *port);
  }
  MomentoBackendOptions momento;
  momento.endpoint = std::move(endpoint);
  momento.cache_name = std::string(cache);
  if (options.timeout > absl::ZeroDuration()) {
    momento.deadline = options.timeout;
    momento.request_timeout = std::min(momento.request_timeout, options.timeout);
  }
  if (options.max_item_size > 0) momento.max_item_size = options.max_item_size;
  momento.ca_bundle_path = options.ca_bundle_path;
  return NewMomentoBackend(momento);
}

}  // namespace

absl::StatusOr<std::shared_ptr<Backend>> NewBackendFromUrl(std::string_view url,
                                                           const BackendUrlOptions& options) {
  const absl::string_view u = AbslView(url);
  if (u == "memory://" || u == "memory:") {
    MemoryBackendOptions memory;
    if (options.max_item_size > 0) memory.max_item_size = options.max_item_size;
    return NewMemoryBackend(memory);
  }
  if (redis::IsServerUrl(url)) {  // redis[s]+cluster:// sets RedisBackendOptions::cluster
    RedisBackendOptions redis;
    redis.url = std::string(url);
    redis.tls_ca_bundle_path = options.ca_bundle_path;
    if (options.timeout > absl::ZeroDuration()) {
      redis.connect_timeout = options.timeout;
      redis.command_timeout = options.timeout;
    }
    if (options.max_item_size > 0) redis.max_item_size = options.max_item_size;
    return NewRedisBackend(std::move(redis));
  }
  if (absl::StartsWith(u, "momento+")) return NewMomento(url, options);
  if (std::optional<absl::StatusOr<std::shared_ptr<Backend>>> registered =
          NewRegisteredBackend(url, options)) {
    return *std::move(registered);
  }
  const std::vector<std::string> schemes = SchemeRegistry::Get().Schemes();
  return absl::InvalidArgumentError(absl::StrCat(
      "chunkcache: unknown backend scheme \"", SchemeOf(url),
      "\": use memory://, redis[s]://, redis[s]+cluster://, unix:// or momento+https://",
      schemes.empty() ? ""
                      : absl::StrCat(", or a registered scheme: ", absl::StrJoin(schemes, ", "))));
}

absl::StatusOr<std::shared_ptr<Backend>> NewBackendFromUrl(const char* url,
                                                           const BackendUrlOptions& options) {
  if (url == nullptr) {
    return absl::InvalidArgumentError(
        "chunkcache: no backend URL (null; is the environment variable set?)");
  }
  return NewBackendFromUrl(std::string_view(url), options);
}

absl::Status RegisterBackendScheme(std::string_view scheme, BackendFactory factory) {
  if (!IsValidScheme(scheme)) {
    // Quoted only when short and printable: a caller may have passed a whole URL by mistake.
    return absl::InvalidArgumentError(absl::StrCat(
        "chunkcache: a backend scheme is a letter, then letters, digits, '+', '-' or '.' (at most ",
        kMaxSchemeSize, " characters, without \"://\")",
        scheme.find_first_of(":/@") == std::string_view::npos && scheme.size() <= kMaxSchemeSize
            ? absl::StrCat(": \"", absl::CHexEscape(AbslView(scheme)), "\"")
            : std::string()));
  }
  if (!factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunkcache: the factory registered for backend scheme \"", AbslView(scheme),
                     "\" is empty"));
  }
  std::string lower = absl::AsciiStrToLower(AbslView(scheme));
  if (IsBuiltInScheme(lower)) {
    return absl::AlreadyExistsError(
        absl::StrCat("chunkcache: backend scheme \"", lower, "\" is built in"));
  }
  if (!SchemeRegistry::Get().Add(lower, std::move(factory))) {
    return absl::AlreadyExistsError(
        absl::StrCat("chunkcache: backend scheme \"", lower, "\" is registered already"));
  }
  return absl::OkStatus();
}

}  // namespace chunkcache
