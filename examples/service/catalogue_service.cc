// catalogue_service: chunkcache used from a service — a small HTTP/1.1 server that answers
// GET /catalogue from a ChunkedCache in front of a slow origin.
//
//   catalogue_service [--port=8080] [--bind=127.0.0.1] [--backend=memory://|redis://host:port]
//                     [--catalogue_mb=10] [--origin_delay_ms=200] [--threads=32]
//                     [--max_connections=1024] [--idle_timeout=5s] [--header_timeout=10s]
//                     [--send_timeout=10s] [--linger=1s] [--max_connection_age=5m]
//
//   GET /catalogue   the catalogue JSON; zstd as stored in the cache if Accept-Encoding has zstd
//   GET /metrics     Prometheus text: the cache's counters and latencies, plus the origin loads
//   GET /healthz     "ok"
//
// What to copy into your own service is marked "Service pattern:" below: the cache is created once
// at start-up, the loader owns what it uses, a client that accepts zstd gets the stored frame
// without a decode, and /metrics renders cache.Stats(). The rest is a deliberately plain HTTP
// server over POSIX sockets (one epoll thread reading requests and writing responses for every
// connection, a fixed pool of threads running the handler, keep-alive, request headers bounded to
// 16 KiB, GET only) so that the example needs no HTTP library. Every stage of a connection has a
// time bound (see ServerLimits), so slow or idle clients cost a descriptor each, never a thread.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../common/standard_fds.h"
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

// What one connection may take, so that slow, idle or hostile clients cannot hold the server. A
// connection costs a handler thread only while its request is handled; in every other stage it
// costs a descriptor and a buffer, for a bounded time.
struct ServerLimits {
  int threads = 32;            // handler threads: requests handled at once
  int max_connections = 1024;  // open at once; at the limit an idle keep-alive connection is
                               // closed to make room, else new ones wait in the listen backlog
  absl::Duration idle_timeout = absl::Seconds(5);     // before a request's first byte (keep-alive)
  absl::Duration header_timeout = absl::Seconds(10);  // first byte to end of headers, then 408
  absl::Duration send_timeout = absl::Seconds(10);    // writing a response without progress
  absl::Duration linger = absl::Seconds(1);  // reading what a client still sends after a closing
                                             // reply, so that the reply is not lost to a reset
  // No request is read on a connection older than this (the reply before gets Connection: close);
  // a reply still being written gets send_timeout more. So a connection lives at most
  // max_connection_age + send_timeout + linger, plus the time its last request is handled.
  absl::Duration max_connection_age = absl::Minutes(5);
};

struct Flags {
  std::string bind = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string backend = "memory://";
  double catalogue_mb = 10;
  int origin_delay_ms = 200;
  ServerLimits limits;
};

constexpr char kUsage[] =
    "usage: catalogue_service [--port=8080] [--bind=127.0.0.1] "
    "[--backend=memory://|redis://host:port[/db]|unix:///path] [--catalogue_mb=10] "
    "[--origin_delay_ms=200] [--threads=32] [--max_connections=1024] [--idle_timeout=5s] "
    "[--header_timeout=10s] [--send_timeout=10s] [--linger=1s] [--max_connection_age=5m]\n"
    "durations as in 500ms, 10s, 5m (at most 168h)\n";

// A duration flag ("10s", "500ms"): positive (or also zero if `zero_ok`) and at most a week, so
// that deadlines computed from it cannot overflow.
bool ParseDurationFlag(absl::string_view value, bool zero_ok, absl::Duration& duration) {
  return absl::ParseDuration(value, &duration) && duration <= absl::Hours(7 * 24) &&
         (duration > absl::ZeroDuration() || (zero_ok && duration == absl::ZeroDuration()));
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  ServerLimits& limits = flags.limits;
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
      ok = absl::SimpleAtoi(value, &limits.threads) && limits.threads > 0;
    } else if (name == "max_connections") {
      ok = absl::SimpleAtoi(value, &limits.max_connections) && limits.max_connections > 0;
    } else if (name == "idle_timeout") {
      ok = ParseDurationFlag(value, false, limits.idle_timeout);
    } else if (name == "header_timeout") {
      ok = ParseDurationFlag(value, false, limits.header_timeout);
    } else if (name == "send_timeout") {
      ok = ParseDurationFlag(value, false, limits.send_timeout);
    } else if (name == "linger") {
      ok = ParseDurationFlag(value, true, limits.linger);
    } else if (name == "max_connection_age") {
      ok = ParseDurationFlag(value, false, limits.max_connection_age);
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

constexpr std::size_t kMaxHeaderBytes = 16 << 10;  // request line and headers

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

// Binds and listens on address:port (non-blocking: the event loop accepts until EAGAIN).
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

// One thread (the event loop) accepts connections, reads request heads and writes responses for
// every connection, with non-blocking sockets and epoll; a fixed pool of threads runs the handler.
// So a connection holds a thread only while its request is handled: a client that sends or reads
// slowly, or idles, holds a descriptor and a buffer, for a time bounded by ServerLimits, and
// cannot keep others (such as a health check) waiting. Requests on one connection are handled one
// at a time and answered in order (pipelining works).
//
// Why not a thread per connection: the threads are then the limit, and a few dozen slow clients
// (slowloris) take all of them however short the timeouts. Why not answer 503 when all threads are
// busy: a health check would fail exactly when the process is fine and only its clients are slow.
class HttpServer {
 public:
  using Handler = std::function<Response(const Request&)>;

  HttpServer(UniqueFd listener, const ServerLimits& limits, Handler handler)
      : listener_(std::move(listener)),
        limits_(limits),
        idle_timeout_(ToClock(limits.idle_timeout)),
        header_timeout_(ToClock(limits.header_timeout)),
        send_timeout_(ToClock(limits.send_timeout)),
        linger_(ToClock(limits.linger)),
        max_age_(ToClock(limits.max_connection_age)),
        handler_(std::move(handler)),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (epoll_.get() < 0 || wake_.get() < 0) std::abort();
    epoll_event event{.events = EPOLLIN, .data = {.fd = wake_.get()}};
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &event) != 0) std::abort();
    SetAccepting(true);
    for (int i = 0; i < limits.threads; ++i) workers_.emplace_back([this] { Work(); });
    loop_ = std::thread([this] { Loop(); });
  }

  // Stops accepting and closes idle connections at once; the requests in progress are handled and
  // answered (with Connection: close) within the usual bounds; then the threads are joined.
  void Stop() {
    if (!loop_.joinable()) return;
    stopping_ = true;
    Wake();
    loop_.join();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      workers_exit_ = true;
    }
    jobs_ready_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
  }

  ~HttpServer() { Stop(); }

 private:
  using Clock = std::chrono::steady_clock;

  enum class State {
    kReading,    // waiting for (the rest of) a request head
    kHandling,   // a worker has the request; the socket is not watched
    kWriting,    // sending the response
    kLingering,  // response sent, write side shut: discarding input until the client closes
  };

  // Touched by the event loop only.
  struct Connection {
    Connection(UniqueFd socket, Clock::time_point now) : fd(std::move(socket)), opened(now) {}

    UniqueFd fd;
    const Clock::time_point opened;
    State state = State::kReading;
    Clock::time_point deadline;  // of the current state: when it passes, the loop acts
    std::uint32_t events = 0;    // what epoll watches for (0: not registered)
    std::string input;           // received and not yet parsed
    int requests = 0;            // read so far
    bool keep_alive = false;     // the request being handled lets the connection stay open
    // The response being written: status line and headers, then the body.
    std::string head;
    std::shared_ptr<const std::string> body;
    std::size_t sent = 0;      // bytes of head and body written
    bool close_after = false;  // linger and close once it is written
  };

  struct Job {
    int fd;
    Request request;
  };
  struct Done {
    int fd;
    Response response;
  };

  static Clock::duration ToClock(absl::Duration duration) {
    return std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(duration));
  }

  void Wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t ignored = ::write(wake_.get(), &one, sizeof(one));
  }

  // ---- Handler threads

  void Work() {
    while (true) {
      std::optional<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        jobs_ready_.wait(lock, [this] { return !jobs_.empty() || workers_exit_; });
        if (jobs_.empty()) return;
        job.emplace(std::move(jobs_.front()));
        jobs_.pop_front();
      }
      Response response = handler_(job->request);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.push_back({job->fd, std::move(response)});
      }
      Wake();
    }
  }

  // ---- The event loop

  void Loop() {
    epoll_event events[64];
    while (true) {
      Clock::time_point now = Clock::now();
      if (stopping_ && !stop_seen_) BeginStop();
      if (stop_seen_ && connections_.empty()) return;
      if (!accepting_ && !stop_seen_ && now >= accept_resume_ &&
          connections_.size() < static_cast<std::size_t>(limits_.max_connections)) {
        SetAccepting(true);
      }
      Clock::time_point wake_at = next_deadline_;
      if (!accepting_ && !stop_seen_ && accept_resume_ > now) {
        wake_at = std::min(wake_at, accept_resume_);
      }
      int timeout = -1;
      if (wake_at != Clock::time_point::max()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(wake_at - now).count();
        timeout = static_cast<int>(std::clamp<std::int64_t>(left, 0, INT_MAX));
      }
      const int n =
          ::epoll_wait(epoll_.get(), events, static_cast<int>(std::size(events)), timeout);
      if (n < 0 && errno != EINTR) {
        absl::FPrintF(stderr, "catalogue_service: epoll_wait: %s\n", std::strerror(errno));
        std::abort();
      }
      now = Clock::now();
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == wake_.get()) {
          std::uint64_t count;
          [[maybe_unused]] ssize_t ignored = ::read(wake_.get(), &count, sizeof(count));
          CompleteRequests(now);
        } else if (fd == listener_.get()) {
          if (accepting_) Accept(now);
        } else if (const auto it = connections_.find(fd); it != connections_.end()) {
          // An event that came with the batch may belong to a descriptor closed and reused since:
          // every handler below copes with a socket that has nothing to read or no room to write.
          Ready(*it->second, now);
        }
      }
      if (now >= next_deadline_) Sweep(now);
    }
  }

  void SetAccepting(bool on) {
    if (on == accepting_) return;
    epoll_event event{.events = EPOLLIN, .data = {.fd = listener_.get()}};
    if (::epoll_ctl(epoll_.get(), on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listener_.get(), &event) ==
        0) {
      accepting_ = on;
    }
  }

  void BeginStop() {
    stop_seen_ = true;
    SetAccepting(false);
    std::vector<int> idle;
    for (const auto& [fd, connection] : connections_) {
      if (connection->state == State::kReading || connection->state == State::kLingering) {
        idle.push_back(fd);
      }
      connection->keep_alive = false;
      connection->close_after = true;
    }
    for (const int fd : idle) connections_.erase(fd);
  }

  void Accept(Clock::time_point now) {
    const auto full = [this] {
      return connections_.size() >= static_cast<std::size_t>(limits_.max_connections);
    };
    for (int i = 0; i < 64; ++i) {  // then the other connections get a turn
      if (full() && IdleConnection() == connections_.end()) {
        SetAccepting(false);  // until a connection closes; new ones wait in the listen backlog
        return;
      }
      UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (fd.get() < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          absl::FPrintF(stderr, "catalogue_service: accept: %s\n", std::strerror(errno));
          SetAccepting(false);
          accept_resume_ = now + std::chrono::milliseconds(100);
        }
        return;  // EAGAIN: none left
      }
      if (full()) connections_.erase(IdleConnection());  // makes room (checked above)
      const int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      const int number = fd.get();
      Connection& added =
          *connections_.emplace(number, std::make_unique<Connection>(std::move(fd), now))
               .first->second;
      SetDeadline(added, std::min(now + idle_timeout_, added.opened + max_age_));
      Watch(added, EPOLLIN);
    }
  }

  // What makes room at max_connections: a keep-alive connection waiting for its next request
  // (never one yet to send its first, which may be a client just accepted); end() if none.
  std::unordered_map<int, std::unique_ptr<Connection>>::iterator IdleConnection() {
    return std::find_if(connections_.begin(), connections_.end(), [](const auto& entry) {
      const Connection& connection = *entry.second;
      return connection.state == State::kReading && connection.input.empty() &&
             connection.requests > 0;
    });
  }

  void Ready(Connection& connection, Clock::time_point now) {
    switch (connection.state) {
      case State::kReading:
        return Read(connection, now);
      case State::kWriting:
        return Write(connection, now);
      case State::kLingering:
        return Discard(connection);
      case State::kHandling:
        return;
    }
  }

  void Read(Connection& connection, Clock::time_point now) {
    // One read per wake-up: a head followed by end of input is answered before the close is seen.
    char chunk[16 << 10];
    const ssize_t n = ::recv(connection.fd.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) return Close(connection);
    if (connection.input.empty()) {  // a request's first byte starts its header deadline
      SetDeadline(connection, std::min(now + header_timeout_, connection.opened + max_age_));
    }
    connection.input.append(chunk, static_cast<std::size_t>(n));
    NextRequest(connection, now);
  }

  // Hands a complete request head in `input` to the handler threads, or answers a bad one.
  void NextRequest(Connection& connection, Clock::time_point now) {
    std::string& input = connection.input;
    const std::size_t end = input.find("\r\n\r\n");
    if (end == std::string::npos && input.size() < kMaxHeaderBytes) return;  // wait for more
    if (end == std::string::npos || end + 4 > kMaxHeaderBytes) return Fail(connection, 431, now);
    Request request;
    const std::optional<int> error =
        ParseRequestHead(absl::string_view(input).substr(0, end), request);
    input.erase(0, end + 4);
    // The stream cannot be trusted after a malformed request: answer, then close.
    if (error) return Fail(connection, *error, now);
    ++connection.requests;
    connection.keep_alive = request.keep_alive && !request.has_body;
    connection.state = State::kHandling;
    connection.deadline = Clock::time_point::max();  // the handler is the service's own time
    Watch(connection, 0);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back({connection.fd.get(), std::move(request)});
    }
    jobs_ready_.notify_one();
  }

  void CompleteRequests(Clock::time_point now) {
    std::vector<Done> done;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done.swap(done_);
    }
    for (Done& completed : done) {
      const auto it = connections_.find(completed.fd);  // kept open while handled
      if (it != connections_.end()) {
        Respond(*it->second, completed.response, it->second->keep_alive, now);
      }
    }
  }

  void Fail(Connection& connection, int status, Clock::time_point now) {
    Respond(connection, TextResponse(status, absl::StrCat(ReasonPhrase(status), "\n")), false, now);
  }

  void Respond(Connection& connection, const Response& response, bool keep_alive,
               Clock::time_point now) {
    keep_alive = keep_alive && !stop_seen_ && now < connection.opened + max_age_;
    const std::size_t body_size = response.body ? response.body->size() : 0;
    connection.head =
        absl::StrFormat("HTTP/1.1 %d %s\r\n", response.status, ReasonPhrase(response.status));
    for (const auto& [name, value] : response.headers) {
      absl::StrAppend(&connection.head, name, ": ", value, "\r\n");
    }
    absl::StrAppend(&connection.head, "Content-Length: ", body_size, "\r\n",
                    keep_alive ? "" : "Connection: close\r\n", "\r\n");
    connection.body = response.body;  // shared: a cached payload is sent without a copy
    connection.sent = 0;
    connection.close_after = !keep_alive;
    connection.state = State::kWriting;
    SetDeadline(connection, WriteDeadline(connection, now));
    Write(connection, now);
  }

  // No progress for send_timeout, or past max_connection_age + send_timeout: the client is gone
  // or not reading.
  Clock::time_point WriteDeadline(const Connection& connection, Clock::time_point now) const {
    return std::min(now + send_timeout_, connection.opened + max_age_ + send_timeout_);
  }

  void Write(Connection& connection, Clock::time_point now) {
    std::size_t budget = std::size_t{4} << 20;  // per wake-up, so that one big body cannot starve
    while (true) {
      const std::size_t head_size = connection.head.size();
      const absl::string_view body =
          connection.body ? absl::string_view(*connection.body) : absl::string_view();
      iovec parts[2];
      int count = 0;
      if (connection.sent < head_size) {
        parts[count++] = {connection.head.data() + connection.sent, head_size - connection.sent};
      }
      const std::size_t body_sent = connection.sent > head_size ? connection.sent - head_size : 0;
      if (body_sent < body.size()) {
        parts[count++] = {const_cast<char*>(body.data()) + body_sent, body.size() - body_sent};
      }
      if (count == 0) return FinishResponse(connection, now);
      if (budget == 0) return Watch(connection, EPOLLOUT);
      // One gather write for head and body, so the head never waits for an ACK alone.
      msghdr message{};
      message.msg_iov = parts;
      message.msg_iovlen = static_cast<std::size_t>(count);
      const ssize_t n = ::sendmsg(connection.fd.get(), &message, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Watch(connection, EPOLLOUT);
      if (n <= 0) return Close(connection);
      connection.sent += static_cast<std::size_t>(n);
      budget -= std::min(budget, static_cast<std::size_t>(n));
      SetDeadline(connection, WriteDeadline(connection, now));
    }
  }

  void FinishResponse(Connection& connection, Clock::time_point now) {
    connection.head.clear();
    connection.body.reset();
    if (connection.close_after) return Linger(connection, now);
    connection.state = State::kReading;
    // Paused at max_connections, a connection going idle can now make room for a waiting one.
    if (!accepting_ && !stop_seen_ && now >= accept_resume_ && connection.input.empty()) {
      SetAccepting(true);
    }
    const Clock::duration timeout = connection.input.empty() ? idle_timeout_ : header_timeout_;
    SetDeadline(connection, std::min(now + timeout, connection.opened + max_age_));
    Watch(connection, EPOLLIN);
    NextRequest(connection, now);  // a pipelined request may be waiting
  }

  // Closing a socket with unread input makes the kernel send a reset, which can destroy the
  // response before the client reads it (an oversized header, an unread body). So: stop writing,
  // and discard what the client still sends until it closes its end — for `linger` at most.
  void Linger(Connection& connection, Clock::time_point now) {
    ::shutdown(connection.fd.get(), SHUT_WR);
    connection.input.clear();
    if (linger_ <= Clock::duration::zero()) return Close(connection);
    connection.state = State::kLingering;
    SetDeadline(connection, now + linger_);
    Watch(connection, EPOLLIN);
  }

  void Discard(Connection& connection) {
    char discard[16 << 10];
    const ssize_t n = ::recv(connection.fd.get(), discard, sizeof(discard), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) Close(connection);
  }

  // Acts on every connection whose deadline has passed.
  void Sweep(Clock::time_point now) {
    next_deadline_ = Clock::time_point::max();
    std::vector<int> expired;
    for (const auto& [fd, connection] : connections_) {
      if (connection->deadline <= now) {
        expired.push_back(fd);
      } else {
        next_deadline_ = std::min(next_deadline_, connection->deadline);
      }
    }
    for (const int fd : expired) {
      Connection& connection = *connections_.at(fd);
      if (connection.state == State::kReading && !connection.input.empty() && !stop_seen_) {
        Fail(connection, 408, now);  // then it lingers, and closes within `linger`
      } else {
        Close(connection);  // idle, not reading our response, or done lingering
      }
    }
  }

  void SetDeadline(Connection& connection, Clock::time_point deadline) {
    connection.deadline = deadline;
    next_deadline_ = std::min(next_deadline_, deadline);
  }

  void Watch(Connection& connection, std::uint32_t events) {
    if (events == connection.events) return;
    epoll_event event{.events = events, .data = {.fd = connection.fd.get()}};
    const int op = connection.events == 0 ? EPOLL_CTL_ADD
                   : events == 0          ? EPOLL_CTL_DEL
                                          : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll_.get(), op, connection.fd.get(), &event) == 0) {
      connection.events = events;
    }  // else its deadline closes it
  }

  // Closes the socket (which also takes it out of epoll) and forgets the connection.
  void Close(Connection& connection) { connections_.erase(connection.fd.get()); }

  const UniqueFd listener_;
  const ServerLimits limits_;
  const Clock::duration idle_timeout_, header_timeout_, send_timeout_, linger_, max_age_;
  const Handler handler_;
  const UniqueFd epoll_;
  const UniqueFd wake_;  // an eventfd: a response is ready, or Stop() was called
  std::atomic<bool> stopping_{false};

  // The event loop's own.
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;  // by descriptor
  Clock::time_point next_deadline_ = Clock::time_point::max();        // no connection's is earlier
  bool accepting_ = false;           // the listening socket is watched
  Clock::time_point accept_resume_;  // after running out of descriptors
  bool stop_seen_ = false;

  std::mutex mutex_;
  std::condition_variable jobs_ready_;
  std::deque<Job> jobs_;       // guarded by mutex_
  std::vector<Done> done_;     // guarded by mutex_
  bool workers_exit_ = false;  // guarded by mutex_

  std::vector<std::thread> workers_;
  std::thread loop_;
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

// Every connection is a descriptor: raises the soft limit to fit max_connections and a margin for
// the backend's connections, or lowers max_connections to what the hard limit allows.
void ReserveDescriptors(ServerLimits& limits) {
  constexpr rlim_t kMargin = 64;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const rlim_t wanted = static_cast<rlim_t>(limits.max_connections) + kMargin;
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0 && ::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < wanted) {
    limits.max_connections =
        static_cast<int>(limit.rlim_cur > kMargin ? limit.rlim_cur - kMargin : 1);
    absl::FPrintF(stderr, "catalogue_service: --max_connections lowered to %d (RLIMIT_NOFILE)\n",
                  limits.max_connections);
  }
}

int Fail(const absl::Status& status) {
  absl::FPrintF(stderr, "catalogue_service: %s\n", status.ToString());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything opens a descriptor: started with 0, 1 or 2 closed, the listening socket or a
  // Redis connection would take that number, and what is printed for stdout would go into it.
  if (!chunkcache::examples::EnsureStandardFds()) return 1;

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
      return std::fflush(stdout) == 0 ? 0 : 1;
    }
  }
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    absl::FPrintF(stderr, "catalogue_service: %s\n%s", flags.status().message(), kUsage);
    return 2;
  }
  ReserveDescriptors(flags->limits);
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
  HttpServer server(*std::move(listener), flags->limits,
                    [&service](const Request& request) { return service.Handle(request); });
  absl::PrintF("listening on %s:%d\n", flags->bind, port);
  if (std::fflush(stdout) != 0) {  // stdout closed (a placeholder): say it where it can be read
    absl::FPrintF(stderr, "catalogue_service: listening on %s:%d\n", flags->bind, port);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  absl::FPrintF(stderr, "catalogue_service: %s, shutting down\n", strsignal(signal_number));
  server.Stop();
  // Then `service` and `cache` go: the cache's destructor waits for a refresh under way.
  return 0;
}
