// End-to-end tests of the catalogue_service example (examples/service/catalogue_service.cc): the
// built binary is started on a free port and spoken to over plain sockets by a tiny HTTP/1.1
// client.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <simdjson.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "corrupt_entry.h"
#include "fixtures/redis_server.h"

namespace chunkcache::testing {
namespace {

#ifndef CHUNKCACHE_CATALOGUE_SERVICE

TEST_CASE("the catalogue_service example is not built (no examples, or no cpp-httplib): skipped") {
  WARN(
      "catalogue_service_test needs the catalogue_service example, built with "
      "CHUNKCACHE_BUILD_EXAMPLES=ON where pkg-config finds cpp-httplib");
}

#else

using redis_fixture_internal::CapturedRun;
using redis_fixture_internal::ChildProcess;
using redis_fixture_internal::DescribeWaitStatus;
using redis_fixture_internal::Pipe;
using redis_fixture_internal::RunAndCapture;
using redis_fixture_internal::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr double kCatalogueMb = 1;

// The JSON the service's origin produces with --catalogue_mb=1.
const std::string& ExpectedCatalogue() {
  static const std::string* const json =
      new std::string(testing::GenerateCatalogue({.megabytes = kCatalogueMb}));
  return *json;
}

// How to start the example: flags after the test's defaults (a later flag wins), and whether its
// standard output is closed.
struct ServiceOptions {
  std::vector<std::string> args;
  // Starts it through `sh -c 'exec ... >&-'`, so it runs with descriptor 1 closed; the port is then
  // picked by the test rather than read from its stdout.
  bool stdout_closed = false;
};

// The example's process, started with a free port, stopped (SIGTERM, then SIGKILL) on destruction
// and killed with the test's thread if that dies first.
class Service {
 public:
  explicit Service(const ServiceOptions& options = ServiceOptions()) {
    std::vector<std::string> argv = {CHUNKCACHE_CATALOGUE_SERVICE,
                                     absl::StrCat("--catalogue_mb=", kCatalogueMb),
                                     "--origin_delay=300ms"};
    if (options.stdout_closed) {
      port_ = redis_fixture_internal::PickFreePort(false);
      argv.push_back(absl::StrCat("--port=", port_));
      argv.insert(argv.end(), options.args.begin(), options.args.end());
      argv.insert(argv.begin(), {"/bin/sh", "-c", R"(exec "$0" "$@" >&-)"});
      process_ = ChildProcess(argv, STDERR_FILENO, STDERR_FILENO);
      WaitUntilAccepting();
      return;
    }
    argv.push_back("--port=0");
    argv.insert(argv.end(), options.args.begin(), options.args.end());
    Pipe out = Pipe::Make();
    process_ = ChildProcess(argv, out.write_end.get(), STDERR_FILENO);
    out.write_end.Reset();
    stdout_ = std::move(out.read_end);
    port_ = ReadPort();
  }

  int port() const { return port_; }
  ChildProcess& process() { return process_; }

 private:
  // Reads "listening on 127.0.0.1:PORT\n" from the service's stdout.
  int ReadPort() {
    const absl::string_view kPrefix = "listening on 127.0.0.1:";
    std::string line;
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
    while (line.find('\n') == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd fd = {stdout_.get(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
        throw std::runtime_error("catalogue_service printed no port within 10 s");
      }
      char buffer[256];
      const ssize_t n = ::read(stdout_.get(), buffer, sizeof(buffer));
      if (n <= 0) {
        throw std::runtime_error("catalogue_service " + DescribeWaitStatus(process_.Wait()) +
                                 " before printing its port; stdout: " + line);
      }
      line.append(buffer, static_cast<std::size_t>(n));
    }
    int port = 0;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&text, kPrefix) || !absl::SimpleAtoi(text, &port)) {
      throw std::runtime_error("unexpected first line from catalogue_service: " + line);
    }
    return port;
  }

  // Polls port_ until a connection succeeds (at most 10 s).
  void WaitUntilAccepting() {
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
    while (true) {
      const UniqueFd fd = redis_fixture_internal::TcpSocket();
      const sockaddr_in address = redis_fixture_internal::LoopbackAddress(port_);
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
        return;
      }
      if (!process_.running()) {
        throw std::runtime_error("catalogue_service " + DescribeWaitStatus(process_.Wait()) +
                                 " before accepting connections");
      }
      if (Clock::now() > deadline) {
        throw std::runtime_error("catalogue_service accepted no connection within 10 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  ChildProcess process_;
  UniqueFd stdout_;
  int port_ = 0;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  // A chunked body: whether its last chunk came (else the server closed the connection first, and
  // `body` holds the chunks before that).
  bool chunked = false;
  bool complete = true;

  std::string Header(const std::string& lower_case_name) const {
    const auto it = headers.find(lower_case_name);
    return it == headers.end() ? "" : it->second;
  }
};

// A minimal blocking HTTP/1.1 client on one keep-alive connection. Throws on I/O errors and
// after `timeout` (10 s unless told) without progress.
class HttpConnection {
 public:
  explicit HttpConnection(int port, std::chrono::milliseconds io_timeout = std::chrono::seconds(10))
      : fd_(redis_fixture_internal::TcpSocket()) {
    const sockaddr_in address = redis_fixture_internal::LoopbackAddress(port);
    if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error(redis_fixture_internal::ErrnoMessage("connect"));
    }
    const timeval timeout = {.tv_sec = io_timeout.count() / 1000,
                             .tv_usec = io_timeout.count() % 1000 * 1000};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  }

  HttpResponse Get(absl::string_view target, absl::string_view extra_headers = "") {
    Send(absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: 127.0.0.1\r\n", extra_headers, "\r\n"));
    return ReadResponse();
  }

  void Send(absl::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(redis_fixture_internal::ErrnoMessage("send"));
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  HttpResponse ReadResponse() {
    std::size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) Receive();
    const std::vector<absl::string_view> lines =
        absl::StrSplit(absl::string_view(buffer_).substr(0, end), "\r\n");
    HttpResponse response;
    const std::vector<absl::string_view> status_line = absl::StrSplit(lines[0], ' ');
    if (status_line.size() < 2 || status_line[0] != "HTTP/1.1" ||
        !absl::SimpleAtoi(status_line[1], &response.status)) {
      throw std::runtime_error("bad status line: " + std::string(lines[0]));
    }
    for (std::size_t i = 1; i < lines.size(); ++i) {
      const std::size_t colon = lines[i].find(':');
      if (colon == absl::string_view::npos) throw std::runtime_error("bad header line");
      response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
          std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    }
    buffer_.erase(0, end + 4);
    if (response.Header("transfer-encoding") == "chunked") {
      response.chunked = true;
      response.complete = ReadChunks(response.body);
      return response;
    }
    std::size_t length = 0;
    if (!absl::SimpleAtoi(response.Header("content-length"), &length)) {
      throw std::runtime_error("response without Content-Length");
    }
    while (buffer_.size() < length) Receive();
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return response;
  }

  // Reads a chunked body into `body`: true once its last chunk (and the empty trailer) came, false
  // if the server closed the connection before. Throws on bad framing.
  bool ReadChunks(std::string& body) {
    while (true) {
      std::size_t line_end;
      while ((line_end = buffer_.find("\r\n")) == std::string::npos) {
        if (!ReceiveOrEof()) return false;
      }
      const absl::string_view line = absl::string_view(buffer_).substr(0, line_end);
      std::size_t size = 0;
      if (!absl::SimpleHexAtoi(line.substr(0, line.find(';')), &size)) {
        throw std::runtime_error("bad chunk size line: " + std::string(line));
      }
      if (size == 0) {  // the last chunk; no trailer fields are expected
        while (buffer_.size() < line_end + 4) {
          if (!ReceiveOrEof()) return false;
        }
        if (buffer_.compare(line_end, 4, "\r\n\r\n") != 0) {
          throw std::runtime_error("trailer fields after the last chunk");
        }
        buffer_.erase(0, line_end + 4);
        return true;
      }
      while (buffer_.size() < line_end + 2 + size + 2) {
        if (!ReceiveOrEof()) return false;
      }
      if (buffer_.compare(line_end + 2 + size, 2, "\r\n") != 0) {
        throw std::runtime_error("a chunk not followed by CRLF");
      }
      body.append(buffer_, line_end + 2, size);
      buffer_.erase(0, line_end + 2 + size + 2);
    }
  }

  // True if the server closes the connection within `timeout` (and sends nothing more).
  bool ClosedByServer(std::chrono::milliseconds timeout) {
    pollfd fd = {fd_.get(), POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char byte;
    return ::recv(fd_.get(), &byte, 1, 0) == 0;
  }

  int fd() const { return fd_.get(); }

 private:
  void Receive() {
    if (!ReceiveOrEof()) throw std::runtime_error("the server closed the connection");
  }

  // Appends what comes to buffer_; false at the end of input.
  bool ReceiveOrEof() {
    char chunk[65536];
    const ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) return true;
    if (n == 0) return false;
    if (n < 0) throw std::runtime_error(redis_fixture_internal::ErrnoMessage("recv"));
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  UniqueFd fd_;
  std::string buffer_;
};

bool IsValidJson(const std::string& text) {
  simdjson::dom::parser parser;
  return parser.parse(text).error() == simdjson::SUCCESS;
}

// The value of the sample `series` (name and labels exactly as printed), or -1 if it is absent.
double SampleValue(const std::string& metrics, absl::string_view series) {
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (absl::ConsumePrefix(&line, series) && absl::ConsumePrefix(&line, " ")) {
      double value = 0;
      return absl::SimpleAtod(line, &value) ? value : -1;
    }
  }
  return -1;
}

// Clients that hold connections open by sending slowly: each sends its opening bytes (cycled from
// `openings`), then one byte every `interval`, and never a complete next request. A client the
// server has cut off (a send fails) connects again at once, as an attacker would; cut_offs()
// counts those.
class SlowClients {
 public:
  SlowClients(int port, int count, std::vector<std::string> openings,
              std::chrono::milliseconds interval)
      : port_(port), openings_(std::move(openings)), interval_(interval) {
    for (int i = 0; i < count; ++i) clients_.push_back(Connect(i));
    thread_ = std::thread([this] { Drip(); });
  }
  ~SlowClients() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  int cut_offs() const { return cut_offs_; }

 private:
  UniqueFd Connect(int i) const {
    UniqueFd fd = redis_fixture_internal::TcpSocket();
    const sockaddr_in address = redis_fixture_internal::LoopbackAddress(port_);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      return UniqueFd();
    }
    const std::string& opening = openings_[static_cast<std::size_t>(i) % openings_.size()];
    ::send(fd.get(), opening.data(), opening.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    return fd;
  }

  void Drip() {
    while (!stop_) {
      std::this_thread::sleep_for(interval_);
      for (std::size_t i = 0; i < clients_.size() && !stop_; ++i) {
        if (clients_[i].valid() &&
            ::send(clients_[i].get(), "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
          continue;
        }
        if (clients_[i].valid()) ++cut_offs_;
        clients_[i] = Connect(static_cast<int>(i));
      }
    }
  }

  const int port_;
  const std::vector<std::string> openings_;
  const std::chrono::milliseconds interval_;
  std::vector<UniqueFd> clients_;  // only the dripping thread touches them once it runs
  std::atomic<bool> stop_{false};
  std::atomic<int> cut_offs_{0};
  std::thread thread_;
};

// What a client saw that sent `opening` and then kept sending a byte every 100 ms.
struct DripResult {
  int status = 0;                                        // of the reply it got, 0 if none
  std::optional<std::chrono::milliseconds> reply_after;  // from the start
  std::optional<std::chrono::milliseconds> cut_after;    // from the reply to a failed send
};

// Sends `opening` on a new connection, then a byte every 100 ms while reading what comes back,
// until a send fails (the server has closed the connection) or `give_up_after` passes.
DripResult DripUntilCutOff(int port, absl::string_view opening,
                           std::chrono::milliseconds give_up_after) {
  HttpConnection connection(port);
  const int fd = connection.fd();
  const Clock::time_point start = Clock::now();
  connection.Send(opening);
  DripResult result;
  std::string received;
  bool eof = false;
  while (Clock::now() - start < give_up_after) {
    pollfd readable = {fd, POLLIN, 0};
    if (!eof && ::poll(&readable, 1, 100) > 0) {
      char chunk[4096];
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) received.append(chunk, static_cast<std::size_t>(n));
      if (n == 0) eof = true;  // the server stopped writing (it may still be reading)
      if (!result.reply_after && received.find("\r\n\r\n") != std::string::npos) {
        result.reply_after =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
        const std::vector<absl::string_view> status_line =
            absl::StrSplit(absl::string_view(received).substr(0, received.find("\r\n")), ' ');
        if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &result.status)) {
          result.status = -1;
        }
      }
      if (n > 0) continue;
    } else if (eof) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) {
      if (result.reply_after) {
        result.cut_after =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start) -
            *result.reply_after;
      }
      return result;
    }
  }
  return result;
}

// The target of /proc/PID/fd/FD, or the error.
std::string DescriptorTarget(pid_t pid, int fd) {
  std::error_code error;
  const std::filesystem::path target = std::filesystem::read_symlink(
      "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd), error);
  return error ? "(" + error.message() + ")" : target.string();
}

TEST_CASE("cold-cache requests from many clients share one origin load", "[concurrency]") {
  Service service;
  constexpr int kClients = 16;
  std::vector<HttpResponse> responses(kClients);
  std::vector<std::string> errors(kClients);
  std::latch start(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      std::optional<HttpConnection> connection;
      try {
        connection.emplace(service.port());
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
      start.arrive_and_wait();  // all connected: the requests arrive together on a cold cache
      if (!connection) return;
      try {
        responses[i] = connection->Get("/catalogue");
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (std::thread& client : clients) client.join();

  for (int i = 0; i < kClients; ++i) {
    INFO("client " << i);
    REQUIRE(errors[i].empty());
    CHECK(responses[i].status == 200);
    CHECK(responses[i].Header("content-type") == "application/json");
    CHECK(responses[i].Header("content-encoding").empty());
    CHECK(responses[i].Header("x-origin-loads") == "1");
    CHECK(responses[i].body == responses[0].body);
  }
  CHECK(IsValidJson(responses[0].body));
  CHECK(responses[0].body == ExpectedCatalogue());
}

TEST_CASE("a client that accepts zstd gets the stored frame, which decodes to the JSON") {
  Service service;
  HttpConnection connection(service.port());
  const HttpResponse response = connection.Get("/catalogue", "Accept-Encoding: gzip, zstd\r\n");
  REQUIRE(response.status == 200);
  CHECK(response.Header("content-encoding") == "zstd");
  CHECK(response.Header("content-type") == "application/json");
  CHECK(response.Header("x-origin-loads") == "1");
  const std::string& json = ExpectedCatalogue();
  CHECK(response.body.size() < json.size() / 2);

  std::string decoded(json.size() + 1, '\0');
  const std::size_t size =
      ZSTD_decompress(decoded.data(), decoded.size(), response.body.data(), response.body.size());
  REQUIRE_FALSE(ZSTD_isError(size));
  decoded.resize(size);
  CHECK(decoded == json);

  // zstd refused with q=0, or not offered: the JSON itself, from the same cached entry.
  for (const char* header : {"Accept-Encoding: zstd;q=0\r\n", "Accept-Encoding: gzip\r\n", ""}) {
    INFO(header);
    const HttpResponse plain = connection.Get("/catalogue", header);
    CHECK(plain.status == 200);
    CHECK(plain.Header("content-encoding").empty());
    CHECK(plain.body == json);
    CHECK(plain.Header("x-origin-loads") == "1");
  }
}

TEST_CASE("/metrics is Prometheus text with the cache's counters and the origin loads") {
  Service service;
  HttpConnection connection(service.port());
  for (int i = 0; i < 5; ++i) REQUIRE(connection.Get("/catalogue").status == 200);

  const HttpResponse response = connection.Get("/metrics");
  REQUIRE(response.status == 200);
  CHECK(response.Header("content-type") == "text/plain; version=0.0.4");
  const std::string& text = response.body;
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');

  // Every sample line is `name{labels} value` or `name value`.
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$)");
  int samples = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line.front() == '#') {
      CHECK((absl::StartsWith(line, "# HELP ") || absl::StartsWith(line, "# TYPE ")));
      continue;
    }
    INFO(line);
    CHECK(std::regex_match(line.begin(), line.end(), sample));
    double value = 0;
    CHECK(absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value));
    ++samples;
  }
  CHECK(samples > 20);
  CHECK(absl::StrContains(text, "chunkcache_hits_total{cache=\"catalogue\"}"));
  CHECK(absl::StrContains(text, "chunkcache_l1_hits_total"));
  CHECK(SampleValue(text, "chunkcache_l1_hits_total{cache=\"catalogue\"}") > 0);
  CHECK(SampleValue(text, "chunkcache_loads_total{cache=\"catalogue\"}") == 1);
  CHECK(absl::StrContains(text, "# TYPE catalogue_origin_loads_total counter\n"));
  CHECK(SampleValue(text, "catalogue_origin_loads_total") == 1);
}

TEST_CASE("health, unknown paths, other methods and oversized headers get their status") {
  Service service;
  HttpConnection connection(service.port());

  HttpResponse response = connection.Get("/healthz");
  CHECK(response.status == 200);
  CHECK(response.body == "ok");
  CHECK(connection.Get("/nope").status == 404);
  CHECK(connection.Get("/healthz?probe=1").status == 200);

  connection.Send("POST /catalogue HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  response = connection.ReadResponse();
  CHECK((response.status == 405 || response.status == 400));
  CHECK(response.Header("connection") == "close");  // its body was not read
  CHECK(connection.ClosedByServer(std::chrono::seconds(5)));

  {
    HttpConnection oversized(service.port());
    oversized.Send(absl::StrCat(
        "GET /catalogue HTTP/1.1\r\nHost: x\r\nX-Big: ", std::string(20 << 10, 'a'), "\r\n\r\n"));
    const HttpResponse error = oversized.ReadResponse();
    CHECK(error.status >= 400);
    CHECK(error.status < 500);
  }
  {
    HttpConnection garbage(service.port());
    garbage.Send("NONSENSE\r\n\r\n");
    CHECK(garbage.ReadResponse().status == 400);
  }
  {
    HttpConnection http2(service.port());
    http2.Send("GET /healthz HTTP/2.0\r\n\r\n");
    CHECK(http2.ReadResponse().status == 505);
  }

  // Still serving; HTTP/1.0 without keep-alive is answered and closed.
  HttpConnection after(service.port());
  CHECK(after.Get("/healthz").status == 200);
  HttpConnection old(service.port());
  old.Send("GET /healthz HTTP/1.0\r\n\r\n");
  CHECK(old.ReadResponse().status == 200);
  CHECK(old.ClosedByServer(std::chrono::seconds(5)));
  CHECK(service.process().running());
}

TEST_CASE("SIGTERM stops the service within seconds, with exit code 0") {
  Service service;
  HttpConnection idle(service.port());  // a keep-alive connection waiting for its next request
  REQUIRE(idle.Get("/healthz").status == 200);

  const pid_t pid = service.process().pid();
  const Clock::time_point start = Clock::now();
  REQUIRE(::kill(pid, SIGTERM) == 0);
  std::optional<int> status;
  while (!(status = service.process().TryReap()) &&
         Clock::now() - start < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(status.has_value());
  INFO(DescribeWaitStatus(*status));
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(Clock::now() - start < std::chrono::seconds(3));
  CHECK(idle.ClosedByServer(std::chrono::seconds(1)));
}

TEST_CASE("slow clients, more than the handler threads, do not keep /healthz from answering",
          "[concurrency]") {
  constexpr int kThreads = 8;
  Service service({.args = {absl::StrCat("--threads=", kThreads)}});
  // Half send a request head a byte at a time; half drip after a Connection: close reply, which
  // the server answers and then reads (lingers) until the client stops sending.
  constexpr int kSlowClients = 40;
  SlowClients slow(service.port(), kSlowClients,
                   {"GET /catalogue HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
                   std::chrono::milliseconds(200));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // every slow client is in

  constexpr auto kProbeTimeout = std::chrono::seconds(2);
  std::chrono::milliseconds slowest(0);
  int answered = 0;
  int unanswered = 0;
  constexpr int kProbes = 16;
  for (int i = 0; i < kProbes; ++i) {
    const Clock::time_point start = Clock::now();
    try {
      HttpConnection probe(service.port(), kProbeTimeout);
      const HttpResponse response = probe.Get("/healthz");
      CHECK(response.status == 200);
      CHECK(response.body == "ok");
      ++answered;
    } catch (const std::exception& e) {
      FAIL_CHECK("/healthz probe " << i << ": " << e.what());
      ++unanswered;
    }
    slowest = std::max(slowest,
                       std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start));
    if (unanswered == 3) break;  // enough said: keep the test short
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  INFO("slowest /healthz: " << slowest.count() << " ms; slow clients cut off: " << slow.cut_offs());
  CHECK(answered == kProbes);
  CHECK(slowest < kProbeTimeout);

  // A real request too, while the slow clients are still there.
  try {
    HttpConnection client(service.port(), std::chrono::seconds(5));
    CHECK(client.Get("/catalogue").body == ExpectedCatalogue());
  } catch (const std::exception& e) {
    FAIL_CHECK("GET /catalogue: " << e.what());
  }
  // Those dripping after a Connection: close reply were cut off (linger: 1 s), each at least once.
  CHECK(slow.cut_offs() >= kSlowClients / 2);
  slow.Stop();
  CHECK(service.process().running());
}

TEST_CASE("a client that keeps sending after a Connection: close or a 408 reply is cut off soon") {
  SECTION("Connection: close (default linger: 1 s)") {
    Service service;
    const DripResult result =
        DripUntilCutOff(service.port(), "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
                        std::chrono::seconds(6));
    CHECK(result.status == 200);
    REQUIRE(result.reply_after.has_value());
    INFO("cut off " << (result.cut_after ? result.cut_after->count() : -1)
                    << " ms after the reply");
    REQUIRE(result.cut_after.has_value());
    CHECK(*result.cut_after < std::chrono::milliseconds(2500));
  }
  SECTION("408 after --header_timeout=1s") {
    Service service({.args = {"--header_timeout=1s"}});
    const DripResult result = DripUntilCutOff(
        service.port(), "GET /healthz HTTP/1.1\r\nX-Slow: ", std::chrono::seconds(8));
    CHECK(result.status == 408);
    REQUIRE(result.reply_after.has_value());
    INFO("408 after " << result.reply_after->count() << " ms, cut off "
                      << (result.cut_after ? result.cut_after->count() : -1) << " ms later");
    CHECK(*result.reply_after >= std::chrono::milliseconds(900));
    CHECK(*result.reply_after < std::chrono::milliseconds(2500));
    REQUIRE(result.cut_after.has_value());
    CHECK(*result.cut_after < std::chrono::milliseconds(2500));
  }
}

TEST_CASE("a keep-alive connection is closed after --max_connection_age") {
  Service service({.args = {"--max_connection_age=1s"}});
  HttpConnection connection(service.port());
  const Clock::time_point start = Clock::now();
  // A request every 100 ms: the one past the age is answered with Connection: close, or the
  // connection is closed between two requests.
  bool closed = false;
  while (!closed && Clock::now() - start < std::chrono::seconds(4)) {
    try {
      const HttpResponse response = connection.Get("/healthz");
      REQUIRE(response.status == 200);
      closed = response.Header("connection") == "close";
      if (closed) CHECK(connection.ClosedByServer(std::chrono::seconds(2)));
    } catch (const std::exception& e) {
      closed = absl::StrContains(e.what(), "closed") || absl::StrContains(e.what(), "reset");
      if (!closed) FAIL(e.what());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  INFO("closed after " << age.count() << " ms");
  CHECK(closed);
  CHECK(age >= std::chrono::milliseconds(900));
  CHECK(age < std::chrono::milliseconds(2500));
}

TEST_CASE("at --max_connections an idle keep-alive connection makes room for a new one") {
  constexpr int kMaxConnections = 4;
  Service service({.args = {absl::StrCat("--max_connections=", kMaxConnections)}});
  std::vector<std::unique_ptr<HttpConnection> > idle;
  for (int i = 0; i < kMaxConnections; ++i) {
    idle.push_back(std::make_unique<HttpConnection>(service.port()));
    REQUIRE(idle.back()->Get("/healthz").status == 200);
  }
  HttpConnection newcomer(service.port(), std::chrono::seconds(2));
  CHECK(newcomer.Get("/healthz").status == 200);
  int closed = 0;
  for (auto& connection : idle)
    closed += connection->ClosedByServer(std::chrono::milliseconds(200));
  CHECK(closed == 1);
}

TEST_CASE("with standard output closed the service serves, and writes nothing into its sockets") {
  RedisServer redis;
  Service service({.args = {"--backend=" + redis.url()}, .stdout_closed = true});
  // Descriptor 1 is a placeholder, not the Redis connection or the listening socket.
  CHECK(DescriptorTarget(service.process().pid(), 1) == "/dev/null");

  HttpConnection connection(service.port());
  for (int i = 0; i < 3; ++i) {
    const HttpResponse response = connection.Get("/catalogue");
    CHECK(response.status == 200);
    CHECK(response.body == ExpectedCatalogue());
  }
  CHECK(connection.Get("/healthz").body == "ok");
  // Redis saw only the cache's commands: nothing it refused (such as the "listening on" line).
  redis_fixture_internal::RespConnection admin(redis.port());
  const std::string stats = admin.Command({"INFO", "stats"}).text;
  INFO(stats);
  CHECK(absl::StrContains(stats, "total_error_replies:0\r\n"));
  CHECK(service.process().running());
}

TEST_CASE("--help prints the usage and every flag of the service with its default, exit 0") {
  const CapturedRun help = RunAndCapture({CHUNKCACHE_CATALOGUE_SERVICE, "--help"});
  INFO(help.err);
  CHECK(help.succeeded());
  CHECK(absl::StartsWith(help.out, "catalogue_service: "));
  for (const char* flag :
       {"--backend (default: memory://)", "--bind (default: 127.0.0.1)",
        "--catalogue_mb (default: 10)", "--header_timeout (default: 10s)", "--l1_mb (default: 64)",
        "--idle_timeout (default: 5s)", "--linger (default: 1s)",
        "--max_connection_age (default: 5m)", "--max_connections (default: 1024)",
        "--origin_delay (default: 200ms)", "--port (default: 8080)",
        "--send_timeout (default: 10s)", "--threads (default: 32)"}) {
    CHECK(absl::StrContains(help.out, flag));
  }
  CHECK_FALSE(absl::StrContains(help.out, "--flagfile"));  // absl's own flags are not listed
  for (absl::string_view line : absl::StrSplit(help.out, '\n')) {
    INFO(line);
    CHECK(line.size() <= 96);  // help text folded at 90 columns after a 6-space indent
  }
}

TEST_CASE("a bad flag or argument stops the service at start-up: a message, exit code 1") {
  for (const char* arg :
       {"--threads=0", "--max_connections=-1", "--port=70000", "--catalogue_mb=0", "--l1_mb=-1",
        "--linger=-1s", "--idle_timeout=0s", "--header_timeout=200h", "--origin_delay=soon",
        "--bind=localhost", "--no_such_flag=1", "stray"}) {
    const CapturedRun run =
        RunAndCapture({CHUNKCACHE_CATALOGUE_SERVICE, "--port=0", arg}, std::chrono::seconds(10));
    INFO(arg << ": " << run.err);
    CHECK(WIFEXITED(run.wait_status));
    CHECK(WEXITSTATUS(run.wait_status) == 1);
    CHECK(run.out.empty());  // it never listened
    CHECK_FALSE(run.err.empty());
  }
}

TEST_CASE("pipelined requests are answered in order, each whole (Range is ignored)") {
  Service service;
  HttpConnection connection(service.port());
  connection.Send(
      "GET /healthz HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n"
      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const HttpResponse first = connection.ReadResponse();
  CHECK(first.status == 200);
  CHECK(first.body == "ok");
  CHECK(first.Header("content-range").empty());
  CHECK(first.Header("connection").empty());
  CHECK(connection.ReadResponse().status == 404);
  CHECK(connection.ReadResponse().body == "ok");
}

TEST_CASE("a request head over 16 KiB gets 431 and the connection closes, however it is split") {
  Service service;
  std::string many_headers = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; many_headers.size() <= (17 << 10); ++i) {
    absl::StrAppend(&many_headers, "X-Header-", i, ": ", std::string(100, 'a'), "\r\n");
  }
  const std::string one_long_header =
      absl::StrCat("GET /healthz HTTP/1.1\r\nX-Big: ", std::string(17 << 10, 'a'), "\r\n");
  for (const std::string& head : {many_headers, one_long_header}) {
    HttpConnection connection(service.port());
    connection.Send(head + "\r\n");
    const HttpResponse response = connection.ReadResponse();
    CHECK(response.status == 431);
    CHECK(response.Header("connection") == "close");
    CHECK(connection.ClosedByServer(std::chrono::seconds(5)));
  }
  HttpConnection after(service.port());
  CHECK(after.Get("/healthz").status == 200);
}

using testing::StoreWithCorruptLastChunk;

TEST_CASE("a stored catalogue is streamed chunked as it is decoded, and timed in /metrics") {
  // 5 MiB: three frames. Without a near cache every warm request reads the stored frames.
  Service service({.args = {"--catalogue_mb=5", "--l1_mb=0"}});
  const std::string json = testing::GenerateCatalogue({.megabytes = 5});
  HttpConnection connection(service.port());

  // Cold: GetStream misses, GetOrLoad loads and answers with the bytes it has (Content-Length).
  const HttpResponse cold = connection.Get("/catalogue");
  REQUIRE(cold.status == 200);
  CHECK_FALSE(cold.chunked);
  CHECK(cold.body == json);
  CHECK(cold.Header("x-origin-loads") == "1");

  // Warm: streamed, whatever else the client offers (httplib would gzip or brotli a chunked JSON
  // reply for a client offering those; the service sends it as the cache decodes it).
  for (const char* offered : {"", "Accept-Encoding: gzip, deflate, br\r\n"}) {
    INFO(offered);
    const HttpResponse warm = connection.Get("/catalogue", offered);
    REQUIRE(warm.status == 200);
    CHECK(warm.chunked);
    CHECK(warm.complete);
    CHECK(warm.Header("content-length").empty());
    CHECK(warm.Header("content-type") == "application/json");
    CHECK(warm.Header("content-encoding").empty());
    CHECK(warm.Header("vary") == "Accept-Encoding");
    CHECK(warm.Header("x-origin-loads") == "1");
    CHECK(warm.body == json);
  }

  const HttpResponse metrics = connection.Get("/metrics");
  REQUIRE(metrics.status == 200);
  const std::string& text = metrics.body;
  CHECK(absl::StrContains(text, "# TYPE catalogue_time_to_first_byte_seconds histogram\n"));
  CHECK(absl::StrContains(text, "# TYPE catalogue_time_to_last_byte_seconds histogram\n"));
  const std::string stream = "{body=\"stream\"}";
  const std::string whole = "{body=\"whole\"}";
  CHECK(SampleValue(text, "catalogue_time_to_first_byte_seconds_count" + stream) == 2);
  CHECK(SampleValue(text, "catalogue_time_to_last_byte_seconds_count" + stream) == 2);
  CHECK(SampleValue(text, "catalogue_time_to_first_byte_seconds_count" + whole) == 1);
  CHECK(SampleValue(text, "catalogue_time_to_last_byte_seconds_count" + whole) == 1);
  CHECK(SampleValue(
            text, "catalogue_time_to_first_byte_seconds_bucket{body=\"stream\",le=\"+Inf\"}") == 2);
  const double first_byte = SampleValue(text, "catalogue_time_to_first_byte_seconds_sum" + stream);
  const double last_byte = SampleValue(text, "catalogue_time_to_last_byte_seconds_sum" + stream);
  CHECK(first_byte > 0);
  CHECK(first_byte <= last_byte);
  CHECK(SampleValue(text, "catalogue_streams_cut_total") == 0);
  CHECK(SampleValue(text, "chunkcache_loads_total{cache=\"catalogue\"}") == 1);

  // HTTP/1.0 has no chunked transfer encoding: such a client gets the whole reply.
  HttpConnection http10(service.port());
  http10.Send("GET /catalogue HTTP/1.0\r\n\r\n");
  const HttpResponse whole_reply = http10.ReadResponse();
  CHECK(whole_reply.status == 200);
  CHECK_FALSE(whole_reply.chunked);
  CHECK(whole_reply.body == json);
}

TEST_CASE("once the near copy is older than l1_fresh_for, a stream sends the confirmed copy") {
  Service service;  // near cache on; l1_fresh_for is 1 s
  HttpConnection connection(service.port());
  REQUIRE(connection.Get("/catalogue").status == 200);  // cold: loaded, the near cache holds it
  const HttpResponse fresh = connection.Get("/catalogue");
  CHECK(fresh.chunked);
  CHECK(fresh.body == ExpectedCatalogue());
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  // GetStream reads the manifest, which names the near copy: that copy goes out.
  const HttpResponse confirmed = connection.Get("/catalogue");
  CHECK(confirmed.status == 200);
  CHECK(confirmed.chunked);
  CHECK(confirmed.complete);
  CHECK(confirmed.body == ExpectedCatalogue());
  CHECK(service.process().running());
}

TEST_CASE("a corrupt later frame cuts a streamed reply off: never a complete-looking body") {
  RedisServer redis;
  const std::string url = "redis://127.0.0.1:" + std::to_string(redis.port());
  const std::string json = testing::GenerateCatalogue({.megabytes = 8});
  StoreWithCorruptLastChunk(url, json);
  Service service({.args = {"--catalogue_mb=8", "--backend=" + url}});

  HttpConnection connection(service.port());
  const HttpResponse cut = connection.Get("/catalogue");
  CHECK(cut.status == 200);  // the head went out before the damage was found
  CHECK(cut.chunked);
  CHECK_FALSE(cut.complete);  // the connection closed without the last chunk
  CHECK(cut.body.size() < json.size());
  CHECK(absl::StartsWith(json, cut.body));
  CHECK(connection.ClosedByServer(std::chrono::seconds(5)));

  // The next request reads through GetOrLoad, which drops the corrupt entry and loads it again;
  // the one after streams the new entry whole.
  HttpConnection next(service.port());
  const HttpResponse healed = next.Get("/catalogue");
  CHECK(healed.status == 200);
  CHECK_FALSE(healed.chunked);
  CHECK(healed.body == json);
  CHECK(healed.Header("x-origin-loads") == "1");
  const HttpResponse streamed = next.Get("/catalogue");
  CHECK(streamed.status == 200);
  CHECK(streamed.complete);
  CHECK(streamed.body == json);

  const std::string metrics = next.Get("/metrics").body;
  CHECK(SampleValue(metrics, "catalogue_streams_cut_total") == 1);
  CHECK(SampleValue(metrics, "chunkcache_corrupt_reads_total{cache=\"catalogue\"}") >= 1);
}

#endif  // CHUNKCACHE_CATALOGUE_SERVICE

}  // namespace
}  // namespace chunkcache::testing
