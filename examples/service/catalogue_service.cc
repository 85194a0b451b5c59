// catalogue_service: chunkcache used from a service — a small HTTP/1.1 server that answers
// GET /catalogue from a ChunkedCache in front of a slow origin.
//
//   catalogue_service [--port=8080] [--bind=127.0.0.1] [--backend=memory://|redis://host:port]
//                     [--catalogue_mb=10] [--origin_delay_ms=200] [--threads=32]
//
//   GET /catalogue   the catalogue JSON; zstd as stored in the cache if Accept-Encoding has zstd
//   GET /metrics     Prometheus text: the cache's counters and latencies, plus the origin loads
//   GET /healthz     "ok"
//
// What to copy into your own service is marked "Service pattern:" below: the cache is created once
// at start-up, the loader owns what it uses, a client that accepts zstd gets the stored frame
// without a decode, and /metrics renders cache.Stats(). The rest is a deliberately plain HTTP
// server over POSIX sockets (a fixed pool of threads accepting on one listening socket, keep-alive,
// request headers bounded to 16 KiB, GET only) so that the example needs no HTTP library.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catalogue.h"
#include "chunkcache/chunkcache.h"

namespace {

constexpr std::string_view kCatalogueKey = "catalogue";

// ---- Flags ------------------------------------------------------------------------------------

struct Flags {
  std::string bind = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string backend = "memory://";
  double catalogue_mb = 10;
  int origin_delay_ms = 200;
  int threads = 32;  // connections served at once; more wait in the listen backlog
};

constexpr char kUsage[] =
    "usage: catalogue_service [--port=8080] [--bind=127.0.0.1] "
    "[--backend=memory://|redis://host:port[/db]|unix:///path] [--catalogue_mb=10] "
    "[--origin_delay_ms=200] [--threads=32]\n";

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument ", arg));
    }
    const std::pair<absl::string_view, absl::string_view> name_value =
        absl::StrSplit(arg, absl::MaxSplits('=', 1));
    const auto [name, value] = name_value;
    bool ok = true;
    if (name == "bind") {
      flags.bind = std::string(value);
    } else if (name == "port") {
      ok = absl::SimpleAtoi(value, &flags.port) && flags.port >= 0 && flags.port < 65536;
    } else if (name == "backend") {
      flags.backend = std::string(value);
    } else if (name == "catalogue_mb") {
      ok = absl::SimpleAtod(value, &flags.catalogue_mb) && flags.catalogue_mb > 0;
    } else if (name == "origin_delay_ms") {
      ok = absl::SimpleAtoi(value, &flags.origin_delay_ms) && flags.origin_delay_ms >= 0;
    } else if (name == "threads") {
      ok = absl::SimpleAtoi(value, &flags.threads) && flags.threads > 0;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value for --", name));
  }
  return flags;
}

// ---- The origin -------------------------------------------------------------------------------

// Stands in for the database and GraphQL layer behind the catalogue: slow, and counted, so that
// X-Origin-Loads and /metrics show how rarely the cache lets a request through to it.
class Origin {
 public:
  Origin(double megabytes, absl::Duration delay) : megabytes_(megabytes), delay_(delay) {}

  absl::StatusOr<std::string> Load() {
    loads_.fetch_add(1, std::memory_order_relaxed);
    absl::SleepFor(delay_);
    return chunkcache::catalogue::GenerateCatalogue({.megabytes = megabytes_});
  }

  std::uint64_t loads() const { return loads_.load(std::memory_order_relaxed); }

 private:
  const double megabytes_;
  const absl::Duration delay_;
  std::atomic<std::uint64_t> loads_{0};
};

// Service pattern: the backend comes from configuration; a Redis URL may hold a password, so
// errors print the status, never the URL.
// Service pattern: the launch-night serving options (README "Serving through a spike").
chunkcache::CacheOptions ServingOptions() {
  return {
      .ttl = absl::Minutes(10),
      .l1_capacity_bytes = std::size_t{64} << 20,  // near cache: a hit is a pointer copy
      .l1_fresh_for = absl::Seconds(1),            // then one manifest read revalidates it
      .soft_ttl = absl::Minutes(5),                // older: served, refreshed in the background
      .lease_ttl = absl::Seconds(10),              // a cold key: one process loads (Redis only)
      .breaker_failure_threshold = 5,              // backend down: straight to the origin
      .log =
          [](chunkcache::LogLevel, std::string_view message) {
            // The library's messages start with "chunkcache: ".
            absl::FPrintF(stderr, "%s\n", absl::string_view(message.data(), message.size()));
          },
  };
}

// ---- HTTP -------------------------------------------------------------------------------------

constexpr std::size_t kMaxHeaderBytes = 16 << 10;               // request line and headers
constexpr auto kKeepAliveIdle = std::chrono::seconds(5);        // between requests
constexpr auto kHeaderTimeout = std::chrono::seconds(10);       // first byte to end of headers
constexpr timeval kSendTimeout = {.tv_sec = 10, .tv_usec = 0};  // a client that stops reading

struct Request {
  std::string method;
  std::string path;                                          // the target without its query string
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  bool keep_alive = true;
  bool has_body = false;  // we never read bodies, so such a connection is closed after the reply

  absl::string_view Header(absl::string_view lower_case_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_case_name) return value;
    }
    return {};
  }
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  // Shared, so that a cached payload goes to the socket without a copy.
  std::shared_ptr<const std::string> body;
};

Response TextResponse(int status, std::string text) {
  return {.status = status,
          .headers = {{"Content-Type", "text/plain; charset=utf-8"}},
          .body = std::make_shared<const std::string>(std::move(text))};
}

absl::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

// Parses the request line and headers (`head` without its final blank line); the HTTP status to
// answer if they are malformed.
std::optional<int> ParseRequestHead(absl::string_view head, Request& request) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  const std::vector<absl::string_view> request_line = absl::StrSplit(lines[0], ' ');
  if (request_line.size() != 3 || request_line[0].empty() || request_line[1].empty()) return 400;
  const absl::string_view version = request_line[2];
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return absl::StartsWith(version, "HTTP/") ? 505 : 400;
  }
  request.method = std::string(request_line[0]);
  request.path = std::string(request_line[1].substr(0, request_line[1].find('?')));
  request.keep_alive = version == "HTTP/1.1";
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::size_t colon = lines[i].find(':');
    // No colon, an empty name, or obsolete line folding (a line starting with white space).
    if (colon == absl::string_view::npos || colon == 0 || absl::ascii_isspace(lines[i][0])) {
      return 400;
    }
    std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(lines[i].substr(colon + 1));
    if (name == "connection") {
      for (absl::string_view option : absl::StrSplit(value, ',')) {
        option = absl::StripAsciiWhitespace(option);
        if (absl::EqualsIgnoreCase(option, "close")) request.keep_alive = false;
        if (absl::EqualsIgnoreCase(option, "keep-alive")) request.keep_alive = true;
      }
    } else if ((name == "content-length" && value != "0") || name == "transfer-encoding") {
      request.has_body = true;
    }
    request.headers.emplace_back(std::move(name), std::string(value));
  }
  return std::nullopt;
}

// True if an Accept-Encoding value lists zstd with a non-zero q ("gzip, zstd;q=0.9").
bool AcceptsZstd(absl::string_view accept_encoding) {
  for (absl::string_view coding : absl::StrSplit(accept_encoding, ',')) {
    const std::vector<absl::string_view> parts = absl::StrSplit(coding, ';');
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(parts[0]), "zstd")) continue;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      absl::string_view param = absl::StripAsciiWhitespace(parts[i]);
      double q = 1;
      if (absl::ConsumePrefix(&param, "q=") && absl::SimpleAtod(param, &q) && q <= 0) {
        return false;
      }
    }
    return true;
  }
  return false;
}

// Owns a file descriptor.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Binds and listens on address:port (non-blocking, so that idle workers can share it).
absl::StatusOr<UniqueFd> Listen(const std::string& address, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--bind: not an IPv4 address: ", address));
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int one = 1;
  if (fd.get() < 0 || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd.get(), 128) != 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot listen on %s:%d: %s", address, port, std::strerror(errno)));
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_in addr{};
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  return ntohs(addr.sin_port);
}

// A fixed pool of threads, each accepting on the listening socket and then serving its connection
// until the client closes it, it idles past kKeepAliveIdle, or the server stops. Every blocking
// wait also watches a "stop" pipe, so Stop() wakes idle connections at once.
class HttpServer {
 public:
  using Handler = std::function<Response(const Request&)>;

  HttpServer(UniqueFd listener, int threads, Handler handler)
      : listener_(std::move(listener)), handler_(std::move(handler)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
    stop_read_ = UniqueFd(fds[0]);
    stop_write_ = UniqueFd(fds[1]);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { AcceptLoop(); });
  }

  // Stops accepting, lets the requests in progress finish, closes every connection, joins.
  void Stop() {
    stopping_ = true;
    [[maybe_unused]] ssize_t ignored = ::write(stop_write_.get(), "x", 1);  // never read: stays up
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
  }

  ~HttpServer() {
    if (!workers_.empty()) Stop();
  }

 private:
  enum class Wait { kReadable, kStop, kTimeout, kError };

  // Waits until `fd` is readable, the server stops, or `timeout` passes.
  Wait WaitReadable(int fd, std::chrono::milliseconds timeout) const {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
    while (true) {
      const int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Wait::kError;
      if (n == 0) return Wait::kTimeout;
      return fds[1].revents != 0 ? Wait::kStop : Wait::kReadable;
    }
  }

  void AcceptLoop() {
    while (WaitReadable(listener_.get(), std::chrono::milliseconds(-1)) == Wait::kReadable) {
      // Several idle workers wake for one connection; the losers get EAGAIN and wait again.
      UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (connection.get() < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          absl::FPrintF(stderr, "catalogue_service: accept: %s\n", std::strerror(errno));
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
      const int one = 1;
      ::setsockopt(connection.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ::setsockopt(connection.get(), SOL_SOCKET, SO_SNDTIMEO, &kSendTimeout, sizeof(kSendTimeout));
      Serve(connection.get());
    }
  }

  // Serves requests on one connection (keep-alive, pipelining) until it is to be closed.
  void Serve(int fd) {
    std::string buffer;  // bytes received and not yet parsed
    while (true) {
      Request request;
      std::optional<int> error;
      const std::optional<std::string> head = ReadHead(fd, buffer, error);
      if (!head && !error) return;  // the client left, idled out, or the server is stopping
      if (head) error = ParseRequestHead(*head, request);
      if (error) {
        // The stream cannot be trusted after a malformed request: answer, then close.
        if (SendResponse(fd, TextResponse(*error, absl::StrCat(ReasonPhrase(*error), "\n")),
                         false)) {
          LingeringClose(fd);
        }
        return;
      }
      const bool keep_alive = request.keep_alive && !request.has_body && !stopping_;
      if (!SendResponse(fd, handler_(request), keep_alive)) return;
      if (!keep_alive) {
        LingeringClose(fd);
        return;
      }
    }
  }

  // Reads up to the blank line that ends a request's headers and returns what precedes it.
  // Returns nullopt with `error` set to the status to answer (431, 408), or nullopt alone when the
  // connection is to be closed silently.
  std::optional<std::string> ReadHead(int fd, std::string& buffer, std::optional<int>& error) {
    std::chrono::steady_clock::time_point deadline;  // set by the request's first byte
    while (true) {
      const std::size_t end = buffer.find("\r\n\r\n");
      if (end != std::string::npos && end + 4 <= kMaxHeaderBytes) {
        std::string head = buffer.substr(0, end);
        buffer.erase(0, end + 4);
        return head;
      }
      if (end != std::string::npos || buffer.size() >= kMaxHeaderBytes) {
        error = 431;
        return std::nullopt;
      }
      const auto now = std::chrono::steady_clock::now();
      if (!buffer.empty() && deadline == std::chrono::steady_clock::time_point()) {
        deadline = now + kHeaderTimeout;
      }
      const auto timeout =
          buffer.empty() ? std::chrono::milliseconds(kKeepAliveIdle)
                         : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      const Wait wait = WaitReadable(fd, std::max(timeout, std::chrono::milliseconds(0)));
      if (wait == Wait::kTimeout && !buffer.empty()) error = 408;
      if (wait != Wait::kReadable) return std::nullopt;
      char chunk[4096];
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // Writes the status line, headers and body; false if the client is gone.
  static bool SendResponse(int fd, const Response& response, bool keep_alive) {
    const absl::string_view body = response.body ? absl::string_view(*response.body) : "";
    std::string head =
        absl::StrFormat("HTTP/1.1 %d %s\r\n", response.status, ReasonPhrase(response.status));
    for (const auto& [name, value] : response.headers) {
      absl::StrAppend(&head, name, ": ", value, "\r\n");
    }
    absl::StrAppend(&head, "Content-Length: ", body.size(), "\r\n",
                    keep_alive ? "" : "Connection: close\r\n", "\r\n");
    // One gather write for head and body, so the head never waits for an ACK alone.
    iovec parts[2] = {{head.data(), head.size()}, {const_cast<char*>(body.data()), body.size()}};
    std::size_t first = 0;  // the first part not completely sent
    while (first < 2) {
      msghdr message{};
      message.msg_iov = &parts[first];
      message.msg_iovlen = 2 - first;
      const ssize_t n = ::sendmsg(fd, &message, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      auto sent = static_cast<std::size_t>(n);
      for (; first < 2 && sent >= parts[first].iov_len; ++first) sent -= parts[first].iov_len;
      if (first < 2) {
        parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + sent;
        parts[first].iov_len -= sent;
      }
    }
    return true;
  }

  // Closing a socket with unread input makes the kernel send a reset, which can destroy the
  // response before the client reads it (an oversized header, an unread body). So: stop writing,
  // and discard what the client still sends for a moment, until it closes its end.
  void LingeringClose(int fd) const {
    ::shutdown(fd, SHUT_WR);
    char discard[4096];
    for (int i = 0; i < 256; ++i) {
      if (WaitReadable(fd, std::chrono::milliseconds(1000)) != Wait::kReadable) return;
      if (::recv(fd, discard, sizeof(discard), 0) <= 0) return;
    }
  }

  const UniqueFd listener_;
  const Handler handler_;
  UniqueFd stop_read_, stop_write_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
};

// ---- The service ------------------------------------------------------------------------------

class CatalogueService {
 public:
  CatalogueService(chunkcache::ChunkedCache& cache, std::shared_ptr<Origin> origin)
      : cache_(cache), origin_(std::move(origin)) {}

  Response Handle(const Request& request) {
    if (request.method != "GET") {
      Response response = TextResponse(405, "only GET\n");
      response.headers.emplace_back("Allow", "GET");
      return response;
    }
    if (request.path == "/catalogue") return Catalogue(request);
    if (request.path == "/metrics") return Metrics();
    if (request.path == "/healthz") return TextResponse(200, "ok");
    return TextResponse(404, "not found\n");
  }

 private:
  Response Catalogue(const Request& request) {
    // Service pattern: the loader owns what it uses — here a copy of the shared_ptr to the origin,
    // never `this` or a reference to a local. With soft_ttl the cache keeps the loader and runs it
    // later, in a background refresh, after this request has been answered.
    absl::StatusOr<chunkcache::Bytes> json =
        cache_.GetOrLoad(kCatalogueKey, [origin = origin_] { return origin->Load(); });
    if (!json.ok()) {
      absl::FPrintF(stderr, "catalogue_service: GET /catalogue: %s\n", json.status().ToString());
      return {.status = 503,
              .headers = {{"Content-Type", "application/json"}, {"Retry-After", "1"}},
              .body = std::make_shared<const std::string>(
                  absl::StrFormat(R"({"error":"catalogue unavailable","code":"%s"})",
                                  absl::StatusCodeToString(json.status().code())))};
    }
    Response response;
    response.headers = {{"Content-Type", "application/json"},
                        {"Vary", "Accept-Encoding"},
                        {"X-Origin-Loads", absl::StrCat(origin_->loads())}};
    // Service pattern: zstd pass-through. The cache stores the catalogue as one zstd frame, so a
    // client that accepts zstd gets the stored bytes (~3.7x smaller) with no decode and no
    // re-compression. If they cannot be read (the backend is down, the entry was just replaced),
    // the JSON in hand is still a good answer.
    if (AcceptsZstd(request.Header("accept-encoding"))) {
      absl::StatusOr<chunkcache::CompressedPayload> compressed =
          cache_.GetCompressed(kCatalogueKey);
      if (compressed.ok()) {
        response.headers.emplace_back("Content-Encoding", "zstd");
        response.body = compressed->zstd;
        return response;
      }
    }
    response.body = *std::move(json);  // the cached bytes themselves, not a copy
    return response;
  }

  // Service pattern: /metrics is the cache's Stats() in Prometheus text, with the service's own
  // families appended in the same format.
  Response Metrics() {
    absl::StatusOr<std::string> text =
        chunkcache::ToPrometheusText(cache_.Stats(), {.labels = {{"cache", "catalogue"}}});
    if (!text.ok()) return TextResponse(500, text.status().ToString());
    absl::StrAppend(&*text,
                    "# HELP catalogue_origin_loads_total Catalogue loads from the origin.\n"
                    "# TYPE catalogue_origin_loads_total counter\n"
                    "catalogue_origin_loads_total ",
                    origin_->loads(), "\n");
    return {.status = 200,
            .headers = {{"Content-Type", "text/plain; version=0.0.4"}},
            .body = std::make_shared<const std::string>(*std::move(text))};
  }

  chunkcache::ChunkedCache& cache_;
  const std::shared_ptr<Origin> origin_;
};

int Fail(const absl::Status& status) {
  absl::FPrintF(stderr, "catalogue_service: %s\n", status.ToString());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGINT and SIGTERM are blocked in every thread (threads inherit the mask) and taken by
  // sigwait below, so shutdown is ordinary code rather than a signal handler. SIGPIPE is ignored:
  // a client or a Redis server that goes away must be an error, not the end of the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--help") {
      absl::PrintF("%s", kUsage);
      return 0;
    }
  }
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    absl::FPrintF(stderr, "catalogue_service: %s\n%s", flags.status().message(), kUsage);
    return 2;
  }
  absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
      chunkcache::NewBackendFromUrl(std::string_view(flags->backend.data(), flags->backend.size()));
  if (!backend.ok()) return Fail(backend.status());

  // Service pattern: one ChunkedCache for the life of the process, shared by every request
  // thread. Single-flight, the near cache, stale-while-revalidate and the breaker all live in
  // it: a cache made per request would have none of them.
  auto origin =
      std::make_shared<Origin>(flags->catalogue_mb, absl::Milliseconds(flags->origin_delay_ms));
  chunkcache::ChunkedCache cache(*std::move(backend), ServingOptions());
  CatalogueService service(cache, origin);

  absl::StatusOr<UniqueFd> listener = Listen(flags->bind, flags->port);
  if (!listener.ok()) return Fail(listener.status());
  const int port = BoundPort(listener->get());
  HttpServer server(*std::move(listener), flags->threads,
                    [&service](const Request& request) { return service.Handle(request); });
  absl::PrintF("listening on %s:%d\n", flags->bind, port);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  absl::FPrintF(stderr, "catalogue_service: %s, shutting down\n", strsignal(signal_number));
  server.Stop();
  // Then `service` and `cache` go: the cache's destructor waits for a refresh under way.
  return 0;
}
