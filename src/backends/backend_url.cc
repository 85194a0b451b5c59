#include "chunkcache/backend_url.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backends/redis/url.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/momento_backend.h"
#include "chunkcache/redis_backend.h"

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
  const std::string_view rest = url.substr(std::string_view("momento+").size());
  const std::size_t scheme_end = rest.find("://");
  const std::string_view scheme = rest.substr(0, scheme_end);
  const std::string_view after =
      scheme_end == std::string_view::npos ? std::string_view() : rest.substr(scheme_end + 3);
  const std::size_t slash = after.find('/');
  const std::string_view host = after.substr(0, slash);
  const std::string_view cache =
      slash == std::string_view::npos ? std::string_view() : after.substr(slash + 1);
  // The host part holds host[:port] only: no user info, query, fragment or backslash, which
  // would make the authority that libcurl parses differ from what this split took for the host.
  // NewMomentoBackend then checks the endpoint with libcurl's own parser.
  const auto plain = [](std::string_view part) {
    return std::none_of(part.begin(), part.end(), [](char c) {
      const auto byte = static_cast<unsigned char>(c);
      return byte <= 0x20 || byte >= 0x7F || c == '@' || c == '?' || c == '#' || c == '\\';
    });
  };
  if ((scheme != "https" && scheme != "http") || host.empty() || cache.empty() || !plain(host) ||
      cache.find_first_of("/?#") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "chunkcache: a Momento backend URL is momento+https://ENDPOINT_HOST[:port]/CACHE_NAME");
  }
  MomentoBackendOptions momento;
  momento.endpoint = absl::StrCat(AbslView(scheme), "://", AbslView(host));
  momento.cache_name = std::string(cache);
  if (options.timeout > absl::ZeroDuration()) {
    momento.deadline = options.timeout;
    momento.request_timeout = std::min(momento.request_timeout, options.timeout);
  }
  if (options.max_item_size > 0) momento.max_item_size = options.max_item_size;
  momento.ca_bundle_path = options.ca_bundle_path;
  return NewMomentoBackend(std::move(momento));
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
  if (redis::IsServerUrl(url)) {  // redis+cluster:// sets RedisBackendOptions::cluster
    RedisBackendOptions redis;
    redis.url = std::string(url);
    if (options.timeout > absl::ZeroDuration()) {
      redis.connect_timeout = options.timeout;
      redis.command_timeout = options.timeout;
    }
    if (options.max_item_size > 0) redis.max_item_size = options.max_item_size;
    return NewRedisBackend(std::move(redis));
  }
  if (absl::StartsWith(u, "momento+")) return NewMomento(url, options);
  return absl::InvalidArgumentError(
      absl::StrCat("chunkcache: unknown backend scheme \"", SchemeOf(url),
                   "\": use memory://, redis://, redis+cluster://, unix:// or momento+https://"));
}

}  // namespace chunkcache
