// backends/redis/url.h — where a Redis server is and how to log in to it, from a URL; the names of
// cluster nodes ("host:port").
//
//   redis://[[user]:password@]host[:port][/db]      TCP; port 6379 and database 0 by default
//   redis+cluster://[[user]:password@]host[:port]   the same, naming a node of a Redis Cluster
//   unix:///path/to/redis.sock[?db=N]               a unix socket (file:// URL syntax, RFC 8089)
//   rediss://…, rediss+cluster://…                  as redis:// and redis+cluster://, over TLS
//
// User and password are percent-decoded; "redis://secret@host" (no colon) is a password alone, as
// several clients accept. An IPv6 host is written in brackets: redis://[::1]:6379. The URL is
// parsed by libcurl's URL API (curl_url), so it follows RFC 3986: a '@', '/', '?' or '#' in a
// password is percent-encoded.
//
//   absl::StatusOr<redis::ServerUrl> server = redis::ParseServerUrl("redis://:pw@10.0.0.7/2");
//   // server->seed.Name() == "10.0.0.7:6379", server->password == "pw", server->db == 2
//
// Errors are InvalidArgument and quote nothing of the URL (it may hold a password).
// Thread safety: the functions are safe to call from any thread.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_URL_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_URL_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace chunkcache::redis {

// One Redis server: a TCP host and port, or a unix socket.
struct Endpoint {
  std::string host;  // an IP address or a host name; empty for a unix socket
  int port = 0;
  std::string unix_path;  // empty for TCP

  // "host:port" (as CLUSTER SLOTS and MOVED name nodes), or the socket's path.
  std::string Name() const;
};

// What a Redis URL says.
struct ServerUrl {
  Endpoint seed;         // the server (in a cluster, the node to ask first)
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECTed on each connection unless 0
  bool cluster = false;  // the scheme is redis+cluster:// or rediss+cluster://
  bool tls = false;      // the scheme is rediss:// or rediss+cluster://
};

// Whether `url` has a scheme ParseServerUrl reads: redis://, redis+cluster://, rediss://,
// rediss+cluster:// or unix://.
bool IsServerUrl(std::string_view url);

// The parts of a Redis URL (see the top of this file).
absl::StatusOr<ServerUrl> ParseServerUrl(std::string_view url);

// The endpoint of a node named "host:port" (a bracketed IPv6 host is unbracketed). Internal for a
// name without a port: node names come from the server.
absl::StatusOr<Endpoint> ParseNodeName(std::string_view node);

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_URL_H_
