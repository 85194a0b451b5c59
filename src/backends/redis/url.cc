#include "backends/redis/url.h"

#include <curl/curl.h>

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "internal/curl_url.h"

namespace chunkcache::redis {
namespace {

constexpr std::string_view kRedisScheme = "redis://";
constexpr std::string_view kClusterScheme = "redis+cluster://";
constexpr std::string_view kTlsScheme = "rediss://";
constexpr std::string_view kTlsClusterScheme = "rediss+cluster://";
constexpr std::string_view kUnixScheme = "unix://";
constexpr int kDefaultPort = 6379;

absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

absl::Status BadUrl(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "chunkcache: bad Redis URL (", AbslView(why),
      "); expected redis[s]://[[user]:password@]host[:port][/db] or unix:///path[?db=N], with "
      "@ / ? # % in the user or password written as %40 %2F %3F %23 %25"));
}

// Why curl refused a URL: its own fixed text, which quotes nothing of the URL.
absl::Status Refused(CURLUcode code) {
  switch (code) {
    case CURLUE_BAD_PORT_NUMBER:
      return BadUrl("bad port");
    case CURLUE_NO_HOST:
      return BadUrl("no host");
    case CURLUE_BAD_FILE_URL:
      return BadUrl("a unix socket path must be absolute");
    default:
      return BadUrl(curl_url_strerror(code));
  }
}

using internal::CurlUrl;

// `text` with its %-escapes decoded; InvalidArgument unless every '%' starts one ("%41").
absl::StatusOr<std::string> PercentDecode(std::string_view text) {
  for (std::size_t i = text.find('%'); i != std::string_view::npos; i = text.find('%', i + 1)) {
    if (i + 2 >= text.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !absl::ascii_isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      return BadUrl("bad %-escape");
    }
  }
  int length = 0;
  char* decoded = curl_easy_unescape(nullptr, text.data(), static_cast<int>(text.size()), &length);
  if (decoded == nullptr) return absl::ResourceExhaustedError("chunkcache: out of memory");
  std::string copy(decoded, static_cast<std::size_t>(length));
  curl_free(decoded);
  return copy;
}

absl::StatusOr<int> ParseDb(std::string_view text) {
  int db = 0;
  if (!absl::SimpleAtoi(AbslView(text), &db) || db < 0) return BadUrl("bad database number");
  return db;
}

// The user name and password of `url`, decoded.
absl::Status ParseCredentials(const CurlUrl& url, ServerUrl& server) {
  const std::optional<std::string> user = url.Part(CURLUPART_USER);
  if (!user.has_value()) return absl::OkStatus();
  absl::StatusOr<std::string> decoded = PercentDecode(*user);
  if (!decoded.ok()) return decoded.status();
  server.user = *std::move(decoded);
  const std::optional<std::string> password = url.Part(CURLUPART_PASSWORD);
  if (!password.has_value()) {  // redis://password@host
    server.password = std::exchange(server.user, "");
    return absl::OkStatus();
  }
  decoded = PercentDecode(*password);
  if (!decoded.ok()) return decoded.status();
  server.password = *std::move(decoded);
  return absl::OkStatus();
}

// The host, port and database of a redis:// or redis+cluster:// URL.
absl::Status ParseTcpServer(const CurlUrl& url, ServerUrl& server) {
  if (url.Part(CURLUPART_QUERY).has_value()) return BadUrl("a query (?) is not allowed");
  std::string host = url.Part(CURLUPART_HOST).value_or("");
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (const std::optional<std::string> zone = url.Part(CURLUPART_ZONEID)) {
    absl::StrAppend(&host, "%", *zone);
  }
  if (host.empty()) return BadUrl("no host");
  server.seed.host = std::move(host);
  server.seed.port = kDefaultPort;
  if (const std::optional<std::string> port = url.Part(CURLUPART_PORT)) {
    if (!absl::SimpleAtoi(*port, &server.seed.port) || server.seed.port <= 0 ||
        server.seed.port > 65535) {
      return BadUrl("bad port");
    }
  }
  const std::string path = url.Part(CURLUPART_PATH).value_or("/");
  if (path.size() > 1) {
    absl::StatusOr<int> db = ParseDb(std::string_view(path).substr(1));
    if (!db.ok()) return db.status();
    server.db = *db;
  }
  return ParseCredentials(url, server);
}

// The socket path and database of a unix:// URL.
absl::Status ParseUnixServer(const CurlUrl& url, ServerUrl& server) {
  server.seed.unix_path = url.Part(CURLUPART_PATH).value_or("");
  if (server.seed.unix_path.empty() || server.seed.unix_path.front() != '/') {
    return BadUrl("a unix socket path must be absolute");
  }
  if (const std::optional<std::string> query = url.Part(CURLUPART_QUERY)) {
    if (!absl::StartsWith(*query, "db=")) return BadUrl("the only query allowed is ?db=N");
    absl::StatusOr<int> db = ParseDb(std::string_view(*query).substr(3));
    if (!db.ok()) return db.status();
    server.db = *db;
  }
  return absl::OkStatus();
}

}  // namespace

std::string Endpoint::Name() const {
  return unix_path.empty() ? absl::StrCat(host, ":", port) : unix_path;
}

bool IsServerUrl(std::string_view url) {
  return url.starts_with(kRedisScheme) || url.starts_with(kClusterScheme) ||
         url.starts_with(kTlsScheme) || url.starts_with(kTlsClusterScheme) ||
         url.starts_with(kUnixScheme);
}

absl::StatusOr<ServerUrl> ParseServerUrl(std::string_view url) {
  if (!IsServerUrl(url)) return BadUrl("unknown scheme");
  const bool unix_socket = url.starts_with(kUnixScheme);
  // A unix:// URL has the syntax of the file:// URL of the same path, which curl knows.
  const std::string text = unix_socket
                               ? absl::StrCat("file://", AbslView(url.substr(kUnixScheme.size())))
                               : std::string(url);
  CurlUrl parsed;
  // PATH_AS_IS: a socket path is used as written; ALLOW_SPACE: a password may hold spaces.
  const CURLUcode code =
      parsed.Set(text, CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS | CURLU_ALLOW_SPACE);
  if (code == CURLUE_OUT_OF_MEMORY)
    return absl::ResourceExhaustedError("chunkcache: out of memory");
  if (code != CURLUE_OK) return Refused(code);
  if (parsed.Part(CURLUPART_FRAGMENT).has_value()) {
    return BadUrl("a fragment (#) is not allowed");
  }
  ServerUrl server;
  server.cluster = url.starts_with(kClusterScheme) || url.starts_with(kTlsClusterScheme);
  server.tls = url.starts_with(kTlsScheme) || url.starts_with(kTlsClusterScheme);
  const absl::Status status =
      unix_socket ? ParseUnixServer(parsed, server) : ParseTcpServer(parsed, server);
  if (!status.ok()) return status;
  return server;
}

absl::StatusOr<Endpoint> ParseNodeName(std::string_view node) {
  const std::size_t colon = node.rfind(':');
  Endpoint endpoint;
  if (colon == std::string_view::npos ||
      !absl::SimpleAtoi(AbslView(node.substr(colon + 1)), &endpoint.port)) {
    return absl::InternalError(absl::StrCat("redis: bad node address ", AbslView(node)));
  }
  endpoint.host = std::string(node.substr(0, colon));
  if (endpoint.host.size() > 2 && endpoint.host.front() == '[') {
    endpoint.host = endpoint.host.substr(1, endpoint.host.size() - 2);
  }
  return endpoint;
}

}  // namespace chunkcache::redis
