// End-to-end tests of the catalogue_service example (examples/service/catalogue_service.cc): the
// built binary is started on a free port and spoken to over plain sockets by a tiny HTTP/1.1
// client.

#include <poll.h>
#include <signal.h>
#include <simdjson.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <latch>
#include <map>
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
#include "catalogue.h"
#include "fixtures/redis_server.h"

namespace chunkcache::testing {
namespace {

#ifndef CHUNKCACHE_CATALOGUE_SERVICE

TEST_CASE("the catalogue_service example is not built (CHUNKCACHE_BUILD_EXAMPLES=OFF): skipped") {
  WARN(
      "catalogue_service_test needs the catalogue_service example, built with "
      "CHUNKCACHE_BUILD_EXAMPLES=ON");
}

#else

using redis_fixture_internal::ChildProcess;
using redis_fixture_internal::DescribeWaitStatus;
using redis_fixture_internal::Pipe;
using redis_fixture_internal::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr double kCatalogueMb = 1;

// The JSON the service's origin produces with --catalogue_mb=1.
const std::string& ExpectedCatalogue() {
  static const std::string* const json =
      new std::string(catalogue::GenerateCatalogue({.megabytes = kCatalogueMb}));
  return *json;
}

// The example's process, started with a free port, stopped (SIGTERM, then SIGKILL) on destruction
// and killed with the test's thread if that dies first.
class Service {
 public:
  Service() {
    Pipe out = Pipe::Make();
    const std::vector<std::string> argv = {CHUNKCACHE_CATALOGUE_SERVICE, "--port=0",
                                           absl::StrCat("--catalogue_mb=", kCatalogueMb),
                                           "--origin_delay_ms=300"};
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

  ChildProcess process_;
  UniqueFd stdout_;
  int port_ = 0;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;

  std::string Header(const std::string& lower_case_name) const {
    const auto it = headers.find(lower_case_name);
    return it == headers.end() ? "" : it->second;
  }
};

// A minimal blocking HTTP/1.1 client on one keep-alive connection. Throws on I/O errors and
// after 10 s without progress.
class HttpConnection {
 public:
  explicit HttpConnection(int port) : fd_(redis_fixture_internal::TcpSocket()) {
    const sockaddr_in address = redis_fixture_internal::LoopbackAddress(port);
    if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error(redis_fixture_internal::ErrnoMessage("connect"));
    }
    const timeval timeout = {.tv_sec = 10, .tv_usec = 0};
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
    std::size_t length = 0;
    if (!absl::SimpleAtoi(response.Header("content-length"), &length)) {
      throw std::runtime_error("response without Content-Length");
    }
    buffer_.erase(0, end + 4);
    while (buffer_.size() < length) Receive();
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return response;
  }

  // True if the server closes the connection within `timeout` (and sends nothing more).
  bool ClosedByServer(std::chrono::milliseconds timeout) {
    pollfd fd = {fd_.get(), POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char byte;
    return ::recv(fd_.get(), &byte, 1, 0) == 0;
  }

 private:
  void Receive() {
    char chunk[65536];
    const ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) return;
    if (n == 0) throw std::runtime_error("the server closed the connection");
    if (n < 0) throw std::runtime_error(redis_fixture_internal::ErrnoMessage("recv"));
    buffer_.append(chunk, static_cast<std::size_t>(n));
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

#endif  // CHUNKCACHE_CATALOGUE_SERVICE

}  // namespace
}  // namespace chunkcache::testing
