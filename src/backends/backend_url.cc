#include "chunkcache/backend_url.h"

#include <algorithm>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backends/redis/url.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/redis_backend.h"
#include "internal/curl_url.h"

namespace chunkcache {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The scheme alone, for messages: the rest of a URL may hold a password.
std::string SchemeOf(std::string_view url) {
  const std::size_t end = url.find("://");
  return end == std::string_view::npos ? "(none)" : std::string(url.substr(0, end));
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
  return absl::InvalidArgumentError(absl::StrCat(
      "chunkcache: unknown backend scheme \"", SchemeOf(url),
      "\": use memory://, redis[s]://, redis[s]+cluster://, unix:// or momento+https://"));
}

}  // namespace chunkcache
