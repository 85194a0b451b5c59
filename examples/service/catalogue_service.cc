// catalogue_service: chunkcache used from a service — an HTTP/1.1 server (cpp-httplib) that
// answers GET /catalogue from a ChunkedCache in front of a slow origin.
//
//   catalogue_service [--port=8080] [--bind=127.0.0.1] [--backend=memory://|redis://host:port]
//                     [--catalogue_mb=10] [--origin_delay=200ms] [--l1_mb=64] [--threads=32]
//                     [--max_connections=1024] [--idle_timeout=5s] [--header_timeout=10s]
//                     [--send_timeout=10s] [--linger=1s] [--max_connection_age=5m]
//   catalogue_service --help      every flag with its default
//
//   GET /catalogue   the catalogue JSON; zstd as stored in the cache if Accept-Encoding has zstd
//   GET /metrics     Prometheus text: the cache's counters and latencies, the origin loads, and
//                    the time to the first and to the last byte of /catalogue's replies
//   GET /healthz     "ok"
//
// What to copy into your own service is marked "Service pattern:" below: the cache is created once
// at start-up, the loader owns what it uses, a client that accepts zstd gets the stored frame
// without a decode, a stored entry is streamed as it is decoded (ChunkedCache::GetStream, chunked
// transfer encoding: the first 2 MiB frame goes out before the rest is decoded), a loaded one goes
// to the socket from the cached bytes without a copy, and /metrics renders cache.Stats().
//
// A streamed reply that fails after its head went out (a corrupt later frame, the entry replaced
// meanwhile) is cut off: the connection closes without the chunked body's last chunk, so the client
// sees an incomplete reply, never a complete-looking wrong one.
//
// HTTP is cpp-httplib's: parsing, routing, writing replies. httplib serves each connection on a
// thread of its pool, and its timeouts bound each read and write, not a stage of a connection: a
// client that sends its headers a byte at a time keeps a thread for ever, and an idle keep-alive
// connection is closed neither to make room for a new one nor at shutdown (stop() waits out its
// keep-alive timeout). So BoundedServer below takes over httplib's loop over a connection's
// requests and bounds every stage (see ServerLimits). A connection still holds a thread while it
// is open, so the pool has max_connections threads. A streamed reply decodes its first frame in
// its handler's turn (--threads) and the rest on a thread of its own while it is written, one frame
// ahead of the client at most, as bounded as any write (send_timeout, one reply per connection).

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <semaphore>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../common/flags_help.h"
#include "../common/piece_pump.h"
#include "../common/standard_fds.h"
#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "internal/mutex.h"
#include "internal/unique_fd.h"

ABSL_FLAG(std::string, bind, "127.0.0.1", "IPv4 or IPv6 address to listen on.");
ABSL_FLAG(int, port, 8080, "TCP port to listen on; 0 picks a free one (printed at start-up).");
ABSL_FLAG(
    std::string, backend, "memory://",
    "Where the cache keeps its entries: memory://, redis://[[user]:password@]host[:port][/db], "
    "redis+cluster://host:port or unix:///path/to/redis.sock[?db=N].");
ABSL_FLAG(double, catalogue_mb, 10, "Size of the catalogue the origin produces, in MiB (> 0).");
ABSL_FLAG(absl::Duration, origin_delay, absl::Milliseconds(200),
          "How long one origin load takes (the database and GraphQL layer it stands in for).");
ABSL_FLAG(int, l1_mb, 64,
          "Near cache (L1) size in MiB; 0 turns it off. A streamed reply is sent from it in one "
          "piece when it holds the catalogue (loads fill it, streams do not).");
ABSL_FLAG(int, threads, 32, "Requests handled at once; more wait for a turn.");
ABSL_FLAG(int, max_connections, 1024,
          "Connections open at once, each served by a thread of its own. At the limit an idle "
          "keep-alive connection is closed to make room, else new ones wait in the listen "
          "backlog. Lowered to fit RLIMIT_NOFILE.");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Seconds(5),
          "How long a connection may wait before a request's first byte.");
ABSL_FLAG(absl::Duration, header_timeout, absl::Seconds(10),
          "From a request's first byte to the end of its headers; then 408.");
ABSL_FLAG(absl::Duration, send_timeout, absl::Seconds(10),
          "How long writing a response may go without progress.");
ABSL_FLAG(absl::Duration, linger, absl::Seconds(1),
          "After a reply that closes the connection, how long what the client still sends is read "
          "and discarded, so that the reply is not lost to a reset (0: close at once).");
ABSL_FLAG(absl::Duration, max_connection_age, absl::Minutes(5),
          "No request is read on a connection older than this: the reply before it gets "
          "Connection: close.");

namespace {

using Clock = std::chrono::steady_clock;
using chunkcache::examples::PiecePump;
using chunkcache::internal::CondVar;
using chunkcache::internal::Mutex;
using chunkcache::internal::MutexLock;
using chunkcache::internal::UniqueFd;

constexpr std::string_view kCatalogueKey = "catalogue";

constexpr char kUsage[] =
    "an HTTP server answering GET /catalogue, /metrics and /healthz\n"
    "from a chunkcache ChunkedCache in front of a slow origin.\n\n"
    "usage: catalogue_service [flags]   (durations as in 500ms, 10s, 5m; at most 168h)";

// ---- Flags ------------------------------------------------------------------------------------

// What one connection may take, so that slow, idle or hostile clients cannot hold the server: each
// connection is served by a thread of its own (httplib's model), for a bounded time.
struct ServerLimits {
  int threads = 32;            // requests handled at once
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

// What the flags say, checked by ReadFlags().
struct Settings {
  std::string bind;
  int port = 0;
  std::string backend;
  double catalogue_mb = 0;
  absl::Duration origin_delay;
  int l1_mb = 64;
  ServerLimits limits;
};

// A duration flag: positive (or also zero if `zero_ok`) and at most a week, so that deadlines
// computed from it cannot overflow.
absl::Status CheckDuration(absl::string_view name, absl::Duration value, bool zero_ok) {
  if (value <= absl::Hours(7 * 24) &&
      (value > absl::ZeroDuration() || (zero_ok && value == absl::ZeroDuration()))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--", name, "=", absl::FormatDuration(value),
                                                 ": must be ", zero_ok ? "0 or more" : "above 0",
                                                 " and at most 168h"));
}

absl::StatusOr<Settings> ReadFlags() {
  Settings settings{.bind = absl::GetFlag(FLAGS_bind),
                    .port = absl::GetFlag(FLAGS_port),
                    .backend = absl::GetFlag(FLAGS_backend),
                    .catalogue_mb = absl::GetFlag(FLAGS_catalogue_mb),
                    .origin_delay = absl::GetFlag(FLAGS_origin_delay),
                    .l1_mb = absl::GetFlag(FLAGS_l1_mb),
                    .limits = {.threads = absl::GetFlag(FLAGS_threads),
                               .max_connections = absl::GetFlag(FLAGS_max_connections),
                               .idle_timeout = absl::GetFlag(FLAGS_idle_timeout),
                               .header_timeout = absl::GetFlag(FLAGS_header_timeout),
                               .send_timeout = absl::GetFlag(FLAGS_send_timeout),
                               .linger = absl::GetFlag(FLAGS_linger),
                               .max_connection_age = absl::GetFlag(FLAGS_max_connection_age)}};
  const ServerLimits& limits = settings.limits;
  in6_addr address;
  if (::inet_pton(AF_INET, settings.bind.c_str(), &address) != 1 &&
      ::inet_pton(AF_INET6, settings.bind.c_str(), &address) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--bind=", settings.bind, ": not an IPv4 or IPv6 address"));
  }
  if (settings.port < 0 || settings.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port=", settings.port, ": 0 to 65535"));
  }
  if (!(settings.catalogue_mb > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--catalogue_mb=", settings.catalogue_mb, ": must be above 0"));
  }
  if (settings.l1_mb < 0 || settings.l1_mb > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--l1_mb=", settings.l1_mb, ": 0 to 1048576 (1 TiB)"));
  }
  if (limits.threads < 1 || limits.max_connections < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--threads=", limits.threads,
                                                   ", --max_connections=", limits.max_connections,
                                                   ": each must be at least 1"));
  }
  for (const absl::Status& status :
       {CheckDuration("origin_delay", settings.origin_delay, true),
        CheckDuration("idle_timeout", limits.idle_timeout, false),
        CheckDuration("header_timeout", limits.header_timeout, false),
        CheckDuration("send_timeout", limits.send_timeout, false),
        CheckDuration("linger", limits.linger, true),
        CheckDuration("max_connection_age", limits.max_connection_age, false)}) {
    if (!status.ok()) return status;
  }
  return settings;
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
    return chunkcache::testing::GenerateCatalogue({.megabytes = megabytes_});
  }

  std::uint64_t loads() const { return loads_.load(std::memory_order_relaxed); }

 private:
  const double megabytes_;
  const absl::Duration delay_;
  std::atomic<std::uint64_t> loads_{0};
};

// Service pattern: the launch-night serving options (README "Serving through a spike").
chunkcache::CacheOptions ServingOptions(int l1_mb) {
  return {
      .ttl = absl::Minutes(10),
      // The near cache: a hit is a pointer copy (a stream: one piece, no decode).
      .l1_capacity_bytes = static_cast<std::size_t>(l1_mb) << 20,
      .l1_fresh_for = absl::Seconds(1),  // then one manifest read revalidates it
      .soft_ttl = absl::Minutes(5),      // older: served, refreshed in the background
      .lease_ttl = absl::Seconds(10),    // a cold key: one process loads (Redis only)
      .breaker_failure_threshold = 5,    // backend down: straight to the origin
      .log =
          [](chunkcache::LogLevel, std::string_view message) {
            // The library's messages start with "chunkcache: ".
            absl::FPrintF(stderr, "%s\n", absl::string_view(message.data(), message.size()));
          },
  };
}

// ---- Replies ----------------------------------------------------------------------------------

// A body is written in slices of this size: the first byte is timed after the first slice, and
// httplib's copies of what one write hands it (a chunked write copies it twice) stay small.
constexpr std::size_t kWriteSlice = 256 << 10;

// A Prometheus histogram over chunkcache's latency bounds (LatencyBucketBounds(): 50 us to 30 s,
// then +Inf). Safe for concurrent use.
class Histogram {
 public:
  Histogram() : bounds_(chunkcache::LatencyBucketBounds()) {}

  void Record(absl::Duration value) {
    std::size_t i = 0;
    while (i + 1 < bounds_.size() && value > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_nanos_.fetch_add(std::max<std::int64_t>(0, absl::ToInt64Nanoseconds(value)),
                         std::memory_order_relaxed);
  }

  // Appends the _bucket, _sum and _count samples of `name`, each labelled with `label`
  // (`key="value"`).
  void AppendSamples(std::string& out, absl::string_view name, absl::string_view label) const {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i].load(std::memory_order_relaxed);
      const std::string le = bounds_[i] == absl::InfiniteDuration()
                                 ? "+Inf"
                                 : absl::StrFormat("%.9g", absl::ToDoubleSeconds(bounds_[i]));
      absl::StrAppendFormat(&out, "%s_bucket{%s,le=\"%s\"} %d\n", name, label, le, cumulative);
    }
    absl::StrAppendFormat(&out, "%s_sum{%s} %.9g\n%s_count{%s} %d\n", name, label,
                          static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / 1e9,
                          name, label, cumulative);
  }

 private:
  const std::array<absl::Duration, chunkcache::kLatencyBuckets> bounds_;
  std::array<std::atomic<std::uint64_t>, chunkcache::kLatencyBuckets> counts_{};
  std::atomic<std::uint64_t> sum_nanos_{0};
};

// How a GET /catalogue body went out: the `body` label of the reply-time histograms.
enum class BodyKind {
  kStream,  // GetStream: frame by frame as it is decoded (chunked)
  kWhole,   // the bytes GetOrLoad returned (a miss, or a stream that could not start)
  kZstd,    // the stored zstd frames
};
constexpr std::array<const char*, 3> kBodyLabels = {"stream", "whole", "zstd"};

// The service's own figures of GET /catalogue, for /metrics. Safe for concurrent use.
struct ReplyMetrics {
  // From the request's first byte to its reply's first body slice written, and to its last.
  std::array<Histogram, 3> first_byte, last_byte;
  std::atomic<std::uint64_t> streams_cut{0};  // streamed replies cut off after their head

  void AppendTo(std::string& out) const {
    absl::StrAppend(&out,
                    "# HELP catalogue_time_to_first_byte_seconds GET /catalogue: from the "
                    "request's first byte to the reply body's first bytes written, by body.\n"
                    "# TYPE catalogue_time_to_first_byte_seconds histogram\n");
    for (std::size_t i = 0; i < kBodyLabels.size(); ++i) {
      first_byte[i].AppendSamples(out, "catalogue_time_to_first_byte_seconds",
                                  absl::StrCat("body=\"", kBodyLabels[i], "\""));
    }
    absl::StrAppend(&out,
                    "# HELP catalogue_time_to_last_byte_seconds GET /catalogue: from the "
                    "request's first byte to the whole reply written, by body.\n"
                    "# TYPE catalogue_time_to_last_byte_seconds histogram\n");
    for (std::size_t i = 0; i < kBodyLabels.size(); ++i) {
      last_byte[i].AppendSamples(out, "catalogue_time_to_last_byte_seconds",
                                 absl::StrCat("body=\"", kBodyLabels[i], "\""));
    }
    absl::StrAppend(&out,
                    "# HELP catalogue_streams_cut_total Streamed GET /catalogue replies cut off "
                    "after their head by a failed read (the connection closed mid-body).\n"
                    "# TYPE catalogue_streams_cut_total counter\n"
                    "catalogue_streams_cut_total ",
                    streams_cut.load(std::memory_order_relaxed), "\n");
  }
};

// Times one reply into ReplyMetrics; used by the thread writing it.
class ReplyTimer {
 public:
  ReplyTimer(ReplyMetrics& metrics, BodyKind kind, Clock::time_point start)
      : metrics_(metrics), kind_(static_cast<std::size_t>(kind)), start_(start) {}

  // After each slice of the body written.
  void Wrote() {
    if (first_written_) return;
    first_written_ = true;
    metrics_.first_byte[kind_].Record(Elapsed());
  }
  // After the whole body was written.
  void Finished() { metrics_.last_byte[kind_].Record(Elapsed()); }

 private:
  absl::Duration Elapsed() const { return absl::FromChrono(Clock::now() - start_); }

  ReplyMetrics& metrics_;
  const std::size_t kind_;
  const Clock::time_point start_;
  bool first_written_ = false;
};

// Service pattern: the reply body is the cache's shared bytes, handed to httplib through a content
// provider that holds them, so that even a 10 MB payload goes to the socket without a copy (and as
// it is: httplib compresses no provider's body). The status stays httplib's default, 200.
// `timer`, if any, times it.
void Reply(httplib::Response& response, const char* content_type, chunkcache::Bytes body,
           std::shared_ptr<ReplyTimer> timer = nullptr) {
  const std::size_t size = body->size();
  response.set_content_provider(
      size, content_type,
      [body = std::move(body), timer = std::move(timer)](std::size_t offset, std::size_t length,
                                                         httplib::DataSink& sink) {
        const std::size_t slice = std::min(length, kWriteSlice);
        if (!sink.write(body->data() + offset, slice)) return false;
        if (timer != nullptr) {
          timer->Wrote();
          if (offset + slice == body->size()) timer->Finished();
        }
        return true;
      });
}

// Service pattern: a stored entry streamed as it is decoded. `pump` runs GetStream and has handed
// out `first`; the chunked reply sends it, then the pump's next pieces, in slices. A failed read
// after the head went out is handed to `cut` with the bytes sent, and the provider returns false:
// httplib stops and the connection closes without the body's last chunk, so the client sees an
// incomplete reply.
using CutHandler = std::function<void(const absl::Status& why, std::uint64_t sent)>;
void ReplyStream(httplib::Response& response, std::shared_ptr<PiecePump> pump,
                 std::string_view first, std::shared_ptr<ReplyTimer> timer, CutHandler cut) {
  struct Stream {
    std::shared_ptr<PiecePump> pump;
    std::string_view pending;  // of the piece in hand, not yet written
    std::shared_ptr<ReplyTimer> timer;
    std::uint64_t sent = 0;
  };
  auto stream = std::make_shared<Stream>(Stream{std::move(pump), first, std::move(timer)});
  response.set_chunked_content_provider(
      "application/json", [stream, cut = std::move(cut)](std::size_t, httplib::DataSink& sink) {
        if (stream->pending.empty()) {
          absl::StatusOr<std::string_view> next = stream->pump->Next();
          if (!next.ok()) {
            cut(next.status(), stream->sent);
            return false;
          }
          if (next->empty()) {  // the end
            sink.done();
            stream->timer->Finished();
            return true;
          }
          stream->pending = *next;
        }
        const std::size_t slice = std::min(stream->pending.size(), kWriteSlice);
        if (!sink.write(stream->pending.data(), slice)) return false;  // the client is gone
        stream->pending.remove_prefix(slice);
        stream->sent += slice;
        stream->timer->Wrote();
        return true;
      });
}

void ReplyText(httplib::Response& response, int status, std::string text) {
  response.status = status;
  Reply(response, "text/plain; charset=utf-8",
        std::make_shared<const std::string>(std::move(text)));
}

// ---- Connections ------------------------------------------------------------------------------

constexpr std::size_t kMaxHeadBytes = 16 << 10;  // request line and headers

Clock::duration ToClock(absl::Duration duration) {
  return std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(duration));
}

// One accepted connection, as httplib reads requests from it and writes replies to it. Reads are
// buffered and bounded by the current stage's deadline (waiting for a request, then reading its
// head) and by kMaxHeadBytes; a write may go send_timeout without progress. Used by the thread
// serving the connection only, except fd(), which ConnectionTable shuts down from others.
class Connection final : public httplib::Stream {
 public:
  Connection(int fd, const ServerLimits& limits)
      : fd_(fd),
        opened_(Clock::now()),
        idle_timeout_(ToClock(limits.idle_timeout)),
        header_timeout_(ToClock(limits.header_timeout)),
        send_timeout_(ToClock(limits.send_timeout)),
        linger_(ToClock(limits.linger)),
        max_age_(ToClock(limits.max_connection_age)) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);  // every wait is a poll with a bound
  }

  int fd() const { return fd_.get(); }
  int requests() const { return requests_; }
  // When the current request's first byte was here.
  Clock::time_point request_started() const { return request_started_; }
  bool timed_out() const { return timed_out_; }
  bool head_too_large() const { return head_too_large_; }

  // Waits for the next request's first byte, for idle_timeout at most (or until max_connection_age
  // or a shutdown of the socket). True if it came.
  bool AwaitRequest() {
    if (begin_ < end_) return true;  // pipelined behind the last one
    return Receive(std::min(Clock::now() + idle_timeout_, opened_ + max_age_)) > 0;
  }

  // Starts reading a request whose first byte is here: its head must be complete within
  // header_timeout and kMaxHeadBytes.
  void StartRequest() {
    ++requests_;
    request_started_ = Clock::now();
    head_bytes_ = 0;
    timed_out_ = head_too_large_ = false;
    read_deadline_ = std::min(Clock::now() + header_timeout_, opened_ + max_age_);
  }

  // No request is read after this one.
  bool TooOld() const { return Clock::now() >= opened_ + max_age_; }

  // After a reply that closes the connection: stops writing, and discards what the client still
  // sends until it closes its end, for `linger` at most. Closing a socket with unread input makes
  // the kernel send a reset, which can destroy the reply before the client reads it.
  void Linger() {
    ::shutdown(fd(), SHUT_WR);
    const Clock::time_point deadline = Clock::now() + linger_;
    while (Receive(deadline) > 0) begin_ = end_;
  }

  // httplib::Stream
  bool is_readable() const override { return begin_ < end_ || Wait(POLLIN, read_deadline_); }
  bool is_writable() const override { return Wait(POLLOUT, WriteDeadline()); }

  ssize_t read(char* out, std::size_t size) override {
    if (head_bytes_ >= kMaxHeadBytes) {
      head_too_large_ = true;
      return -1;
    }
    if (begin_ == end_) {
      const ssize_t received = Receive(read_deadline_);
      if (received <= 0) {
        timed_out_ = received < 0 && Clock::now() >= read_deadline_;
        return received;
      }
    }
    size = std::min({size, end_ - begin_, kMaxHeadBytes - head_bytes_});
    std::memcpy(out, buffer_ + begin_, size);
    begin_ += size;
    head_bytes_ += size;
    return static_cast<ssize_t>(size);
  }

  ssize_t write(const char* data, std::size_t size) override {
    const Clock::time_point deadline = WriteDeadline();
    while (true) {
      const ssize_t sent = ::send(fd(), data, size, MSG_NOSIGNAL);
      if (sent >= 0) return sent;
      if (errno == EINTR) continue;
      if ((errno != EAGAIN && errno != EWOULDBLOCK) || !Wait(POLLOUT, deadline)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  socket_t socket() const override { return fd(); }

 private:
  // No progress for send_timeout, or past max_connection_age + send_timeout: the client is gone
  // or not reading.
  Clock::time_point WriteDeadline() const {
    return std::min(Clock::now() + send_timeout_, opened_ + max_age_ + send_timeout_);
  }

  // True if the socket has `events` (or an error or hang-up to report) before `deadline`.
  bool Wait(short events, Clock::time_point deadline) const {
    while (true) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd socket = {fd(), events, 0};
      const int ready =
          ::poll(&socket, 1, static_cast<int>(std::min<std::int64_t>(left.count(), INT_MAX)));
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  }

  // Refills the (consumed) buffer: the bytes received, 0 at end of input, -1 on an error or at
  // `deadline`.
  ssize_t Receive(Clock::time_point deadline) {
    begin_ = end_ = 0;
    while (true) {
      const ssize_t received = ::recv(fd(), buffer_, sizeof(buffer_), 0);
      if (received >= 0) {
        end_ = static_cast<std::size_t>(received);
        return received;
      }
      if (errno == EINTR) continue;
      if ((errno != EAGAIN && errno != EWOULDBLOCK) || !Wait(POLLIN, deadline)) return -1;
    }
  }

  using AddressFunction = int (*)(int, sockaddr*, socklen_t*);
  void Address(AddressFunction function, std::string& ip, int& port) const {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    char host[NI_MAXHOST];
    char service[NI_MAXSERV];
    if (function(fd(), reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof(host), service,
                      sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(service);
    }
  }

  const UniqueFd fd_;
  const Clock::time_point opened_;
  const Clock::duration idle_timeout_, header_timeout_, send_timeout_, linger_, max_age_;
  Clock::time_point read_deadline_ = Clock::time_point::min();
  int requests_ = 0;  // started so far
  Clock::time_point request_started_;
  std::size_t head_bytes_ = 0;  // of the current request, handed to httplib
  bool timed_out_ = false;      // the current request's head did not come within its deadline
  bool head_too_large_ = false;
  char buffer_[16 << 10];
  std::size_t begin_ = 0, end_ = 0;  // what of buffer_ is received and not yet read
};

// The open connections, so that one thread can close others: at max_connections an idle
// keep-alive connection makes room for a new one, and Stop() closes every idle one. A connection
// is closed from outside by shutting its socket down, which wakes its thread. Thread-safe.
class ConnectionTable {
 public:
  explicit ConnectionTable(int max_connections)
      : max_connections_(static_cast<std::size_t>(max_connections)) {}

  // For each accepted connection, before a thread takes it: waits while max_connections are
  // open, closing an idle one to make room if there is one. Returns at once after Stop().
  void Admit() {
    MutexLock lock(&mutex_);
    while (open_ + admitted_ >= max_connections_ && !stopping_) {
      const auto idle = std::find_if(entries_.begin(), entries_.end(), [](const auto& item) {
        return item.second.evictable && !item.second.closed;
      });
      if (idle == entries_.end()) {
        changed_.Wait(&mutex_);
      } else {
        Close(*idle->first, idle->second);
      }
    }
    ++admitted_;
  }

  // The admitted `connection` is served by the calling thread until Remove().
  void Add(Connection* connection) {
    MutexLock lock(&mutex_);
    --admitted_;
    ++open_;
    entries_[connection] = Entry{};
  }

  void Remove(Connection* connection) {
    MutexLock lock(&mutex_);
    if (!entries_[connection].closed) --open_;
    entries_.erase(connection);
    changed_.SignalAll();
  }

  // Marks `connection` as waiting for its next request (idle: Stop() closes it, and so does
  // Admit() once it has served one) or as busy again. False if it must close instead: stopping,
  // or closed by the table while it waited.
  bool SetIdle(Connection* connection, bool idle) {
    MutexLock lock(&mutex_);
    Entry& entry = entries_[connection];
    entry.idle = idle;
    entry.evictable = idle && connection->requests() > 0;
    if (entry.evictable) changed_.SignalAll();
    return !entry.closed && !(idle && stopping_);
  }

  // Closes every idle connection, and ends the reading on the others (they see the end of
  // input); their replies are still written, with Connection: close (stopping() is true).
  void Stop() {
    MutexLock lock(&mutex_);
    stopping_ = true;
    for (auto& [connection, entry] : entries_) {
      if (entry.idle && !entry.closed) {
        Close(*connection, entry);
      } else {
        ::shutdown(connection->fd(), SHUT_RD);
      }
    }
    changed_.SignalAll();
  }

  bool stopping() {
    MutexLock lock(&mutex_);
    return stopping_;
  }

 private:
  struct Entry {
    bool idle = false;       // waiting for a request
    bool evictable = false;  // idle, and has served a request (a new one may yet send its first)
    bool closed = false;     // shut down by the table: no longer counted in open_
  };

  // Shuts `connection` down: its thread sees the end of input and closes it.
  void Close(const Connection& connection, Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    ::shutdown(connection.fd(), SHUT_RDWR);
    entry.closed = true;
    --open_;
  }

  const std::size_t max_connections_;
  Mutex mutex_;
  CondVar changed_;  // a connection closed or became evictable, or Stop()
  std::unordered_map<Connection*, Entry> entries_ ABSL_GUARDED_BY(mutex_);
  std::size_t open_ ABSL_GUARDED_BY(mutex_) = 0;      // not closed by the table
  std::size_t admitted_ ABSL_GUARDED_BY(mutex_) = 0;  // waiting for a thread
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
};

// httplib's thread pool, with ConnectionTable::Admit() before each connection is queued: the
// accept loop pauses at max_connections, and new connections wait in the listen backlog.
class AdmittingThreadPool final : public httplib::TaskQueue {
 public:
  AdmittingThreadPool(ConnectionTable& table, std::size_t threads)
      : table_(table), pool_(threads) {}

  void enqueue(std::function<void()> task) override {
    table_.Admit();
    pool_.enqueue(std::move(task));
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  ConnectionTable& table_;
  httplib::ThreadPool pool_;
};

// An httplib::Server for GET endpoints whose connections are bounded by ServerLimits: register
// handlers with Get() and Bind() on one thread, then run listen_after_bind() on a thread and call
// Shutdown() from another. Other methods get 405, an unknown path 404; a request body is never read
// (the connection closes after the reply); Range is ignored (every reply is whole). A request
// httplib cannot parse gets 400 (505 for an HTTP version other than 1.0 and 1.1, 408 if its head is
// not in within header_timeout, 431 if it is over 16 KiB), and the connection closes.
//
// It replaces httplib's per-connection loop, process_and_close_socket (the virtual function
// httplib's own SSLServer overrides), with one that waits for each request within the limits and
// hands it to httplib's process_request. One thread per connection (httplib's pool, as large as
// max_connections); handlers run on it, `threads` of them at once.
class BoundedServer final : public httplib::Server {
 public:
  explicit BoundedServer(const ServerLimits& limits)
      : limits_(limits), table_(limits.max_connections), handler_slots_(limits.threads) {
    new_task_queue = [this] {
      return new AdmittingThreadPool(table_, static_cast<std::size_t>(limits_.max_connections));
    };
    set_payload_max_length(0);  // no body is read
    set_socket_options([this](socket_t fd) {
      const int one = 1;  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a
                          // second server on the same port would start and share the traffic
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      listener_ = fd;
    });
    set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
      const std::string length = request.get_header_value("Content-Length");
      if ((!length.empty() && length != "0") || request.has_header("Transfer-Encoding")) {
        close_after_reply_ = true;  // its body is not read
      }
      if (request.method == "GET") return HandlerResponse::Unhandled;
      ReplyText(response, 405, "only GET\n");
      response.set_header("Allow", "GET");
      close_after_reply_ = true;
      return HandlerResponse::Handled;
    });
    set_error_handler([](const httplib::Request& request, httplib::Response& response) {
      if (response.status == 404) {
        ReplyText(response, 404, "not found\n");
      } else if (response.status == 400 || response.status == 414) {
        UnparsedRequest(request, response);
      }
    });
    // Every reply: whether the connection closes after it, said once as Connection: close
    // (httplib's "Keep-Alive: timeout=5, max=5" would not state the bounds here).
    set_post_routing_handler([this](const httplib::Request&, httplib::Response& response) {
      close_after_reply_ = close_after_reply_ || table_.stopping() || current_->TooOld() ||
                           response.get_header_value("Connection") == "close";
      response.headers.erase("Keep-Alive");
      response.headers.erase("Connection");
      response.headers.erase("Accept-Ranges");  // httplib's, for HEAD: Range is ignored here
      if (close_after_reply_) response.set_header("Connection", "close");
    });
  }

  // Registers `handler` for GET `path`; at most `threads` handlers run at once.
  void Get(const std::string& path, Handler handler) {
    httplib::Server::Get(path, [this, handler = std::move(handler)](const httplib::Request& request,
                                                                    httplib::Response& response) {
      handler_slots_.acquire();
      absl::Cleanup release = [this] { handler_slots_.release(); };
      handler(request, response);
    });
  }

  // Binds `address`:`port` (0: any free port); the port, or an error.
  absl::StatusOr<int> Bind(const std::string& address, int port) {
    const int bound =
        port == 0 ? bind_to_any_port(address) : (bind_to_port(address, port) ? port : -1);
    if (bound < 0) {
      return absl::UnavailableError(
          absl::StrFormat("cannot listen on %s:%d: %s", address, port, std::strerror(errno)));
    }
    // httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when the library was
    // built), which a burst of connections overflows, each one dropped costing its client a
    // second: listening again sets the usual 128.
    ::listen(listener_, 128);
    return bound;
  }

  // When the request being handled on the calling thread (a handler's, or a content provider's)
  // began: its first byte.
  static Clock::time_point RequestStarted() {
    return current_ != nullptr ? current_->request_started() : Clock::now();
  }

  // Stops accepting, closes idle connections at once and ends the reading of requests in
  // progress; those being handled are answered with Connection: close. Then
  // listen_after_bind() returns, once every connection's thread is done.
  void Shutdown() {
    table_.Stop();
    stop();
  }

 private:
  // A request httplib could not parse: the status that says why.
  static void UnparsedRequest(const httplib::Request& request, httplib::Response& response) {
    if (current_->timed_out()) {
      response.status = 408;
    } else if (current_->head_too_large()) {
      response.status = 431;
    } else if (absl::StartsWith(request.version, "HTTP/") && request.version != "HTTP/1.0" &&
               request.version != "HTTP/1.1") {
      response.status = 505;
    }
    close_after_reply_ = true;  // what follows on the connection cannot be trusted
  }

  // httplib gzips or brotli-compresses a chunked reply of a text or JSON type on the fly when the
  // request's Accept-Encoding holds "gzip" or "br" anywhere: CPU on every such reply, and a body
  // its handler did not make. Those codings are dropped from the header before routing, so every
  // reply goes out as made; handlers still see the rest ("zstd;q=0.9").
  static void KeepRepliesAsMade(httplib::Request& request) {
    if (!request.has_header("Accept-Encoding")) return;
    std::vector<absl::string_view> kept;
    const std::string offered = request.get_header_value("Accept-Encoding");
    for (absl::string_view coding : absl::StrSplit(offered, ',')) {
      if (!absl::StrContains(coding, "gzip") && !absl::StrContains(coding, "br")) {
        kept.push_back(coding);
      }
    }
    const std::string reduced = absl::StrJoin(kept, ",");
    request.headers.erase("Accept-Encoding");
    if (!absl::StripAsciiWhitespace(reduced).empty()) {
      request.headers.emplace("Accept-Encoding", reduced);
    }
  }

  bool process_and_close_socket(socket_t fd) override {
    Connection connection(fd, limits_);
    current_ = &connection;
    table_.Add(&connection);
    while (table_.SetIdle(&connection, true) && connection.AwaitRequest() &&
           table_.SetIdle(&connection, false)) {
      connection.StartRequest();
      close_after_reply_ = false;
      bool closed_by_client = false;  // Connection: close, or HTTP/1.0 without keep-alive
      const bool answered = process_request(connection, /*close_connection=*/false,
                                            closed_by_client, [](httplib::Request& request) {
                                              request.ranges.clear();
                                              KeepRepliesAsMade(request);
                                            });
      if (!answered || closed_by_client || close_after_reply_) {
        connection.Linger();
        break;
      }
    }
    table_.Remove(&connection);
    current_ = nullptr;
    return true;
  }

  // The connection the calling thread serves, and whether it closes after the reply being made:
  // httplib runs the handlers of a connection's requests on the thread that serves it.
  static thread_local Connection* current_;
  static thread_local bool close_after_reply_;

  const ServerLimits limits_;
  ConnectionTable table_;
  std::counting_semaphore<> handler_slots_;
  socket_t listener_ = -1;
};

thread_local Connection* BoundedServer::current_ = nullptr;
thread_local bool BoundedServer::close_after_reply_ = false;

// ---- The service ------------------------------------------------------------------------------

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

// GET /catalogue, /metrics and /healthz over one ChunkedCache and its origin. Safe for concurrent
// use (the cache is); `cache` must outlive it.
class CatalogueService {
 public:
  CatalogueService(chunkcache::ChunkedCache& cache, std::shared_ptr<Origin> origin)
      : cache_(cache), origin_(std::move(origin)) {}

  // Registers the endpoints on `server`, which must not outlive this.
  void Register(BoundedServer& server) {
    server.Get("/catalogue", [this](const httplib::Request& request, httplib::Response& response) {
      Catalogue(request, response);
    });
    server.Get("/metrics",
               [this](const httplib::Request&, httplib::Response& response) { Metrics(response); });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
      ReplyText(response, 200, "ok");
    });
  }

 private:
  void Catalogue(const httplib::Request& request, httplib::Response& response) {
    const Clock::time_point start = BoundedServer::RequestStarted();
    const bool zstd = AcceptsZstd(request.get_header_value("Accept-Encoding"));
    // Streamed: JSON to an HTTP/1.1 client (chunked transfer encoding is 1.1's). After a stream
    // found the stored entry corrupt, one request goes through GetOrLoad, which drops a corrupt
    // entry and loads it again: streams alone would fail until it expired.
    if (!zstd && request.version == "HTTP/1.1" && !stored_suspect_.exchange(false) &&
        Stream(response, start)) {
      return;
    }
    // Service pattern: the loader owns what it uses — here a copy of the shared_ptr to the origin,
    // never `this` or a reference to a local. With soft_ttl the cache keeps the loader and runs it
    // later, in a background refresh, after this request has been answered.
    absl::StatusOr<chunkcache::Bytes> json =
        cache_.GetOrLoad(kCatalogueKey, [origin = origin_] { return origin->Load(); });
    if (!json.ok()) {
      absl::FPrintF(stderr, "catalogue_service: GET /catalogue: %s\n", json.status().ToString());
      response.status = 503;
      response.set_header("Retry-After", "1");
      Reply(response, "application/json",
            std::make_shared<const std::string>(
                absl::StrFormat(R"({"error":"catalogue unavailable","code":"%s"})",
                                absl::StatusCodeToString(json.status().code()))));
      return;
    }
    response.set_header("Vary", "Accept-Encoding");
    response.set_header("X-Origin-Loads", absl::StrCat(origin_->loads()));
    // Service pattern: zstd pass-through. The cache stores the catalogue as one zstd frame, so a
    // client that accepts zstd gets the stored bytes (~3.7x smaller) with no decode and no
    // re-compression. If they cannot be read (the backend is down, the entry was just replaced),
    // the JSON in hand is still a good answer.
    if (zstd) {
      absl::StatusOr<chunkcache::CompressedPayload> compressed =
          cache_.GetCompressed(kCatalogueKey);
      if (compressed.ok()) {
        response.set_header("Content-Encoding", "zstd");
        return Reply(response, "application/json", compressed->zstd,
                     std::make_shared<ReplyTimer>(reply_metrics_, BodyKind::kZstd, start));
      }
    }
    // The cached bytes themselves.
    Reply(response, "application/json", *std::move(json),
          std::make_shared<ReplyTimer>(reply_metrics_, BodyKind::kWhole, start));
  }

  // Service pattern: a stored catalogue is streamed as it is decoded (GetStream), so its first
  // bytes leave before the rest is decoded. Its first frame is read here, before the reply's head
  // is made: a miss (GetStream does not load), an entry found unreadable or a backend error return
  // false, and GetOrLoad answers with its status as before.
  bool Stream(httplib::Response& response, Clock::time_point start) {
    auto pump = std::make_shared<PiecePump>([this](const chunkcache::PieceSink& sink) {
      return cache_.GetStream(kCatalogueKey, sink);
    });
    absl::StatusOr<std::string_view> first = pump->Next();
    if (!first.ok() || first->empty()) return false;
    response.set_header("Vary", "Accept-Encoding");
    response.set_header("X-Origin-Loads", absl::StrCat(origin_->loads()));
    ReplyStream(response, std::move(pump), *first,
                std::make_shared<ReplyTimer>(reply_metrics_, BodyKind::kStream, start),
                [this](const absl::Status& why, std::uint64_t sent) {
                  reply_metrics_.streams_cut.fetch_add(1, std::memory_order_relaxed);
                  if (absl::IsDataLoss(why)) stored_suspect_.store(true);
                  absl::FPrintF(stderr,
                                "catalogue_service: GET /catalogue: stream cut off after %d bytes: "
                                "%s\n",
                                sent, why.ToString());
                });
    return true;
  }

  // Service pattern: /metrics is the cache's Stats() in Prometheus text, with the service's own
  // families appended in the same format.
  void Metrics(httplib::Response& response) {
    absl::StatusOr<std::string> text =
        chunkcache::ToPrometheusText(cache_.Stats(), {.labels = {{"cache", "catalogue"}}});
    if (!text.ok()) return ReplyText(response, 500, text.status().ToString());
    absl::StrAppend(&*text,
                    "# HELP catalogue_origin_loads_total Catalogue loads from the origin.\n"
                    "# TYPE catalogue_origin_loads_total counter\n"
                    "catalogue_origin_loads_total ",
                    origin_->loads(), "\n");
    reply_metrics_.AppendTo(*text);
    Reply(response, "text/plain; version=0.0.4",
          std::make_shared<const std::string>(*std::move(text)));
  }

  chunkcache::ChunkedCache& cache_;
  const std::shared_ptr<Origin> origin_;
  ReplyMetrics reply_metrics_;
  std::atomic<bool> stored_suspect_{false};  // a stream found the stored entry corrupt
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
  absl::FPrintF(stderr, "catalogue_service: %s\n", status.message());
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

  absl::SetProgramUsageMessage(kUsage);
  chunkcache::examples::ConfigureFlagsUsage("catalogue_service", "catalogue_service.cc");
  if (chunkcache::examples::WantsHelp(absl::MakeConstSpan(argv, argc))) {
    absl::PrintF("%s",
                 chunkcache::examples::FlagsHelp("catalogue_service", "catalogue_service.cc"));
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1) {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("unexpected argument ", args[1], " (see --help)")));
  }
  absl::StatusOr<Settings> settings = ReadFlags();
  if (!settings.ok()) return Fail(settings.status());
  ReserveDescriptors(settings->limits);

  // Service pattern: the backend comes from configuration; a Redis URL may hold a password, so
  // errors print the status, never the URL.
  absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
      chunkcache::NewBackendFromUrl(settings->backend);
  if (!backend.ok()) return Fail(backend.status());

  // Service pattern: one ChunkedCache for the life of the process, shared by every request
  // thread. Single-flight, the near cache, stale-while-revalidate and the breaker all live in
  // it: a cache made per request would have none of them.
  auto origin = std::make_shared<Origin>(settings->catalogue_mb, settings->origin_delay);
  chunkcache::ChunkedCache cache(*std::move(backend), ServingOptions(settings->l1_mb));
  CatalogueService service(cache, origin);

  BoundedServer server(settings->limits);
  service.Register(server);
  absl::StatusOr<int> port = server.Bind(settings->bind, settings->port);
  if (!port.ok()) return Fail(port.status());
  std::thread listener([&server] { server.listen_after_bind(); });
  absl::PrintF("listening on %s:%d\n", settings->bind, *port);
  if (std::fflush(stdout) != 0) {  // stdout closed (a placeholder): say it where it can be read
    absl::FPrintF(stderr, "catalogue_service: listening on %s:%d\n", settings->bind, *port);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  absl::FPrintF(stderr, "catalogue_service: %s, shutting down\n", strsignal(signal_number));
  server.Shutdown();
  listener.join();
  // Then `server`, `service` and `cache` go: the cache's destructor waits for a refresh under way.
  return 0;
}
