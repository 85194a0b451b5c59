// The TLS transport of the Redis backend (backends/redis/tls.h, resp_over_tls.h) against TLS-only
// redis-servers with test certificates: round trips, every refusal, mutual TLS, deadlines.

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "backends/redis/resp_over_tls.h"
#include "backends/redis/tls.h"
#include "fixtures/loopback.h"
#include "fixtures/process.h"
#include "fixtures/redis_server.h"
#include "fixtures/tls_certs.h"

namespace chunkcache::redis {
namespace {

namespace fixture = testing::fixture_internal;
using testing::RedisServer;
using testing::RedisTls;
using testing::TestCertificates;

constexpr absl::Duration kTimeout = absl::Seconds(5);

// A TLS-only server presenting `cert` and `key` (signed by the test CA unless said otherwise).
RedisServer::Options TlsServer(const std::string& cert, const std::string& key,
                               bool auth_clients = false) {
  const TestCertificates& certs = TestCertificates::Get();
  RedisTls tls{.cert_file = cert, .key_file = key, .ca_file = certs.ca};
  if (auth_clients) {
    tls.auth_clients = true;
    tls.client_cert_file = certs.client_cert;
    tls.client_key_file = certs.client_key;
  }
  return {.tls = tls};
}

RedisServer::Options GoodServer() {
  const TestCertificates& certs = TestCertificates::Get();
  return TlsServer(certs.server_cert, certs.server_key);
}

// A TLS-only redis-server on a free loopback port, started without RedisServer, whose readiness
// check (PING over a verified TLS connection) cannot pass with a certificate the test means to
// be refused: ready once its port accepts TCP connections.
class UnverifiedTlsServer {
 public:
  UnverifiedTlsServer(const std::string& cert, const std::string& key)
      : port_(fixture::PickFreePort(/*with_cluster_bus=*/false)) {
    const fixture::UniqueFd null(open("/dev/null", O_WRONLY | O_CLOEXEC));
    process_ = fixture::ChildProcess(
        {"redis-server", "--port", "0", "--tls-port", std::to_string(port_), "--tls-cert-file",
         cert, "--tls-key-file", key, "--tls-ca-cert-file", TestCertificates::Get().ca,
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", dir_.path()},
        null.get(), null.get());
    REQUIRE(fixture::WaitFor(std::chrono::seconds(10), [this] {
      try {
        fixture::Connect(port_);
        return true;
      } catch (const std::runtime_error&) {
        return false;
      }
    }));
  }

  int port() const { return port_; }

 private:
  const int port_;
  fixture::TempDir dir_{"chunkcache-tls-"};
  fixture::ChildProcess process_;
};

TlsOptions TrustTestCa() { return {.ca_bundle_path = TestCertificates::Get().ca}; }

std::shared_ptr<const TlsContext> Context(const TlsOptions& options) {
  absl::StatusOr<std::shared_ptr<const TlsContext>> context = TlsContext::Create(options);
  INFO(context.status().ToString());
  REQUIRE(context.ok());
  return *std::move(context);
}

absl::StatusOr<std::unique_ptr<TlsStream>> Open(const TlsOptions& options, int port,
                                                std::string_view name = "localhost") {
  return TlsStream::Connect(Context(options), "127.0.0.1", port, name, absl::Now() + kTimeout);
}

std::unique_ptr<TlsStream> MustOpen(const TlsOptions& options, int port,
                                    std::string_view name = "localhost") {
  absl::StatusOr<std::unique_ptr<TlsStream>> stream = Open(options, port, name);
  INFO(stream.status().ToString());
  REQUIRE(stream.ok());
  return *std::move(stream);
}

// The text of the reply to `args`, which must be a status or string reply.
std::string Run(TlsStream& stream, redisReader& reader,
                std::initializer_list<std::string_view> args) {
  absl::StatusOr<Reply> reply = RoundTrip(stream, reader, args, absl::Now() + kTimeout);
  INFO(reply.status().ToString());
  REQUIRE(reply.ok());
  REQUIRE(((*reply)->type == REDIS_REPLY_STATUS || (*reply)->type == REDIS_REPLY_STRING));
  return std::string(ReplyText(**reply));
}

// The status of opening a stream and running PING on it (a refusal of the client certificate
// comes after the TLS 1.3 handshake, with the first reply).
absl::Status Ping(const TlsOptions& options, int port, std::string_view name = "localhost") {
  absl::StatusOr<std::unique_ptr<TlsStream>> stream = Open(options, port, name);
  if (!stream.ok()) return stream.status();
  RespReader reader = NewRespReader();
  return RoundTrip(**stream, *reader, {"PING"}, absl::Now() + kTimeout).status();
}

// Whether the message of `status` contains `text`.
bool Says(const absl::Status& status, const char* text) {
  return absl::StrContains(status.message(), text);
}

void RequireRefused(const absl::Status& status, const char* cause) {
  INFO(status.ToString());
  REQUIRE(absl::IsUnavailable(status));
  REQUIRE(Says(status, cause));
}

TEST_CASE("PING and a 10 MB SET/GET over TLS") {
  RedisServer server(GoodServer());
  std::unique_ptr<TlsStream> stream = MustOpen(TrustTestCa(), server.port());
  RespReader reader = NewRespReader();
  CHECK(Run(*stream, *reader, {"PING"}) == "PONG");

  std::string value(10 << 20, '\0');
  for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>(i * 7919 >> 3);
  CHECK(Run(*stream, *reader, {"SET", "big", value}) == "OK");
  CHECK(Run(*stream, *reader, {"GET", "big"}) == value);
  CHECK(stream->FitForReuse());
}

TEST_CASE("a second connection to a server resumes the first one's session") {
  RedisServer server(GoodServer());
  const std::shared_ptr<const TlsContext> context = Context(TrustTestCa());
  const auto open = [&](std::string_view name) {
    absl::StatusOr<std::unique_ptr<TlsStream>> stream =
        TlsStream::Connect(context, "127.0.0.1", server.port(), name, absl::Now() + kTimeout);
    INFO(stream.status().ToString());
    REQUIRE(stream.ok());
    RespReader reader = NewRespReader();
    CHECK(Run(**stream, *reader, {"PING"}) == "PONG");  // reads the session tickets too
    return *std::move(stream);
  };
  CHECK_FALSE(open("localhost")->resumed());
  CHECK(open("localhost")->resumed());
  CHECK_FALSE(open("127.0.0.1")->resumed());                       // another name: its own session
  CHECK_FALSE(MustOpen(TrustTestCa(), server.port())->resumed());  // another context
}

TEST_CASE("threads share a TlsContext and its sessions", "[concurrency]") {
  RedisServer server(GoodServer());
  const std::shared_ptr<const TlsContext> context = Context(TrustTestCa());
  std::atomic<int> pongs{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        absl::StatusOr<std::unique_ptr<TlsStream>> stream = TlsStream::Connect(
            context, "127.0.0.1", server.port(), "localhost", absl::Now() + kTimeout);
        if (!stream.ok()) continue;
        RespReader reader = NewRespReader();
        absl::StatusOr<Reply> reply =
            RoundTrip(**stream, *reader, {"PING"}, absl::Now() + kTimeout);
        if (reply.ok() && ReplyText(**reply) == "PONG") ++pongs;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(pongs == 20);
}

TEST_CASE("a server is verified by IP address when that is its name") {
  RedisServer server(GoodServer());
  std::unique_ptr<TlsStream> stream = MustOpen(TrustTestCa(), server.port(), "");
  RespReader reader = NewRespReader();
  CHECK(Run(*stream, *reader, {"PING"}) == "PONG");
}

TEST_CASE("TLS refusals name their cause") {
  const TestCertificates& certs = TestCertificates::Get();

  SECTION("a certificate from another CA: unknown issuer") {
    RedisServer server(GoodServer());
    RequireRefused(Ping({.ca_bundle_path = certs.other_ca}, server.port()), "unknown issuer");
  }
  SECTION("a certificate for another name: host name mismatch") {
    UnverifiedTlsServer server(certs.mismatch_cert, certs.mismatch_key);
    RequireRefused(Ping(TrustTestCa(), server.port()), "host name mismatch");
    RequireRefused(Ping(TrustTestCa(), server.port(), ""), "host name mismatch");
  }
  SECTION("server_name overrides the name the caller gives") {
    RedisServer server(GoodServer());
    TlsOptions options = TrustTestCa();
    options.server_name = "wrong.example";
    RequireRefused(Ping(options, server.port()), "host name mismatch");
  }
  SECTION("an expired certificate") {
    UnverifiedTlsServer server(certs.expired_cert, certs.expired_key);
    RequireRefused(Ping(TrustTestCa(), server.port()), "certificate expired");
  }
  SECTION("a plain-TCP server") {
    // Redis answers a ClientHello (read as an inline command) only if a newline happens to be
    // among its random bytes; otherwise it waits for one.
    RedisServer server;
    const absl::Status status =
        TlsStream::Connect(Context(TrustTestCa()), "127.0.0.1", server.port(), "localhost",
                           absl::Now() + absl::Milliseconds(300))
            .status();
    INFO(status.ToString());
    CHECK((absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)));
    CHECK(Says(status, "plain-TCP port"));
  }
  SECTION("a plain-TCP server answering the ClientHello in plain text") {
    fixture::UniqueFd listener = fixture::TcpSocket();
    const sockaddr_in address = fixture::LoopbackAddress(0);
    REQUIRE(bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) ==
            0);
    REQUIRE(listen(listener.get(), 1) == 0);
    sockaddr_in bound{};
    socklen_t length = sizeof(bound);
    getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &length);
    std::thread server([&listener] {
      const fixture::UniqueFd client(accept(listener.get(), nullptr, nullptr));
      constexpr std::string_view kReply = "-ERR Protocol error: unbalanced quotes in request\r\n";
      send(client.get(), kReply.data(), kReply.size(), MSG_NOSIGNAL);
      char drain[4096];
      while (recv(client.get(), drain, sizeof(drain), 0) > 0) {
      }
    });
    const absl::Status status =
        TlsStream::Connect(Context(TrustTestCa()), "127.0.0.1", ntohs(bound.sin_port), "localhost",
                           absl::Now() + kTimeout)
            .status();
    server.join();
    RequireRefused(status, "does not speak TLS");
  }
}

TEST_CASE("mutual TLS: the client certificate is presented, and refused when missing") {
  const TestCertificates& certs = TestCertificates::Get();
  RedisServer server(TlsServer(certs.server_cert, certs.server_key, /*auth_clients=*/true));
  TlsOptions with_cert = TrustTestCa();
  with_cert.client_cert_path = certs.client_cert;
  with_cert.client_key_path = certs.client_key;
  CHECK(Ping(with_cert, server.port()).ok());

  RequireRefused(Ping(TrustTestCa(), server.port()), "refused the client certificate");
  TlsOptions foreign = with_cert;
  foreign.client_cert_path = certs.other_client_cert;
  foreign.client_key_path = certs.other_client_key;
  RequireRefused(Ping(foreign, server.port()), "refused the client certificate");
}

TEST_CASE("TlsContext refuses files it cannot load") {
  const TestCertificates& certs = TestCertificates::Get();
  CHECK(absl::IsInvalidArgument(
      TlsContext::Create({.ca_bundle_path = certs.dir + "/missing.pem"}).status()));
  CHECK(absl::IsInvalidArgument(TlsContext::Create({.client_cert_path = certs.client_cert,
                                                    .client_key_path = certs.server_key})
                                    .status()));
  CHECK(absl::IsInvalidArgument(
      TlsContext::Create({.client_cert_path = certs.client_cert}).status()));
}

TEST_CASE("a server that stops answering: DeadlineExceeded on the read") {
  RedisServer server(GoodServer());
  std::unique_ptr<TlsStream> stream = MustOpen(TrustTestCa(), server.port());
  RespReader reader = NewRespReader();
  const absl::Time start = absl::Now();
  const absl::Status status =
      RoundTrip(*stream, *reader, {"DEBUG", "SLEEP", "2"}, start + absl::Milliseconds(200))
          .status();
  INFO(status.ToString());
  CHECK(absl::IsDeadlineExceeded(status));
  CHECK(absl::Now() - start < absl::Seconds(1));
  CHECK_FALSE(stream->FitForReuse());
}

TEST_CASE("a handshake with a server that never answers: DeadlineExceeded") {
  RedisServer server(GoodServer());
  std::thread sleeper([&server] { server.Cli({"DEBUG", "SLEEP", "1"}); });
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Status status = TlsStream::Connect(Context(TrustTestCa()), "127.0.0.1", server.port(),
                                                 "localhost", absl::Now() + absl::Milliseconds(200))
                                  .status();
  sleeper.join();
  INFO(status.ToString());
  CHECK(absl::IsDeadlineExceeded(status));
}

TEST_CASE("a server closing mid-write fails the write without SIGPIPE") {
  RedisServer server(GoodServer());
  std::unique_ptr<TlsStream> stream = MustOpen(TrustTestCa(), server.port());
  server.Kill();
  const std::string big(4 << 20, 'x');
  absl::Status status;
  for (int i = 0; i < 4 && status.ok(); ++i) status = stream->Write(big, absl::Now() + kTimeout);
  INFO(status.ToString());
  CHECK(absl::IsUnavailable(status));
  CHECK_FALSE(stream->FitForReuse());
}

}  // namespace
}  // namespace chunkcache::redis
