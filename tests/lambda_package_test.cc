// The Lambda zip (scripts/package-lambda) run the way Lambda runs it, with nothing of the build
// machine: unpacked into /var/task of an otherwise empty root, where the only other file is a
// statically linked /bin/sh (Debian's busybox-static), and started as /var/task/bootstrap under
// chroot (as root; else inside a user namespace made by `unshare --map-root-user`) with a
// Lambda-like environment and nothing else. No /lib, no /usr, no /etc unless a case adds the file
// Lambda provides. The loopback Runtime API stand-in, Redis and a DNS stand-in run outside the
// root; the network namespace is shared, so 127.0.0.1 reaches them.
//
// The zip is CHUNKCACHE_LAMBDA_ZIP (built from this build's bootstrap by the lambda_package
// target), or the file the environment variable of that name points at, to check a zip built
// elsewhere. The exec -> first /next time is printed as a warning.

#include <arpa/inet.h>
#include <elf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/lambda_runtime_api.h"
#include "fixtures/momento_emulator.h"
#include "fixtures/redis_server.h"
#include "simdjson.h"
#include "zstd.h"

namespace chunkcache {
namespace {

#ifdef CHUNKCACHE_LAMBDA_ZIP

namespace fs = std::filesystem;
using testing::LambdaInvocation;
using testing::LambdaRuntimeApi;
using testing::MomentoEmulator;
using testing::RedisServer;
using testing::redis_fixture_internal::CapturedRun;
using testing::redis_fixture_internal::ChildProcess;
using testing::redis_fixture_internal::Pipe;
using testing::redis_fixture_internal::RunAndCapture;
using testing::redis_fixture_internal::TempDir;
using testing::redis_fixture_internal::UniqueFd;

constexpr std::size_t kBufferedLimit = 6291456;        // Lambda's buffered response limit
constexpr std::uintmax_t kLambdaZipLimit = 50u << 20;  // direct upload
constexpr std::uintmax_t kLambdaUnpackedLimit = 250u << 20;
constexpr auto kRunTimeout = std::chrono::seconds(60);
constexpr auto kWait = std::chrono::seconds(10);

// What Lambda sets for a provided.* runtime (besides AWS_LAMBDA_RUNTIME_API): LD_LIBRARY_PATH
// names the image's library directories, which the bootstrap must not use.
const std::vector<std::string> kLambdaEnvironment = {
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
    "_HANDLER=catalogue",
    "PATH=/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:"
    "/var/task/lib:/opt/lib",
    "TZ=:UTC",
    "LANG=en_US.UTF-8",
    "AWS_REGION=us-east-1",
    "AWS_LAMBDA_FUNCTION_NAME=catalogue-test",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024",
};

std::string ZipPath() {
  const char* path = std::getenv("CHUNKCACHE_LAMBDA_ZIP");
  return path != nullptr && *path != '\0' ? path : CHUNKCACHE_LAMBDA_ZIP;
}

std::int64_t EpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `name` as found in PATH (or /usr/sbin, /sbin); "" if nowhere. Absolute, because the tools run
// under `env -i`, without a PATH.
std::string FindTool(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = absl::StrCat(path != nullptr ? path : "", ":/usr/sbin:/sbin:/usr/bin:/bin");
  for (absl::string_view dir : absl::StrSplit(dirs, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Whether the ELF executable at `path` asks for no program interpreter (is statically linked).
bool IsStaticElf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Elf64_Ehdr header{};
  if (!in.read(reinterpret_cast<char*>(&header), sizeof(header)) ||
      std::string_view(reinterpret_cast<const char*>(header.e_ident), 4) != ELFMAG ||
      header.e_ident[EI_CLASS] != ELFCLASS64) {
    return false;
  }
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr program{};
    in.seekg(static_cast<std::streamoff>(header.e_phoff + i * header.e_phentsize));
    if (!in.read(reinterpret_cast<char*>(&program), sizeof(program))) return false;
    if (program.p_type == PT_INTERP) return false;
  }
  return true;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The sum of the "Loads" of the EMF lines in `out` (one per invocation), and their number.
std::pair<std::uint64_t, int> EmfLoads(const std::string& out) {
  std::uint64_t loads = 0;
  int lines = 0;
  simdjson::dom::parser parser;
  for (const std::string& line : Lines(out)) {
    simdjson::dom::element root;
    REQUIRE(parser.parse(line).get(root) == simdjson::SUCCESS);
    std::uint64_t value = 0;
    REQUIRE(root["Loads"].get(value) == simdjson::SUCCESS);
    loads += value;
    ++lines;
  }
  return {loads, lines};
}

// The zip unpacked into ROOT/var/task, and busybox as ROOT/bin/sh: nothing else.
class EmptyRoot {
 public:
  EmptyRoot() {
    const std::string zip = ZipPath();
    INFO("the zip: " << zip);
    REQUIRE(fs::is_regular_file(zip));
    fs::create_directories(task_dir());
    fs::create_directories(path() + "/bin");
    const CapturedRun unzip = RunAndCapture({"unzip", "-q", zip, "-d", task_dir()});
    INFO(unzip.err);
    REQUIRE(unzip.succeeded());  // unzip keeps the modes stored in the zip, as Lambda does

    const std::string busybox = FindTool("busybox");
    INFO("busybox: " << busybox);
    REQUIRE_FALSE(busybox.empty());  // scripts/install-deps installs busybox-static
    REQUIRE(IsStaticElf(busybox));
    fs::copy_file(busybox, path() + "/bin/sh");
    fs::permissions(path() + "/bin/sh", fs::perms::owner_all | fs::perms::group_read |
                                            fs::perms::group_exec | fs::perms::others_read |
                                            fs::perms::others_exec);
  }

  const std::string& path() const { return dir_.path(); }
  std::string task_dir() const { return path() + "/var/task"; }

  // Adds a file that Lambda provides (e.g. /etc/resolv.conf) at `absolute` inside the root.
  void AddFile(const std::string& absolute, const std::string& content) const {
    const fs::path file = path() + absolute;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << content;
  }

  // Runs /var/task/bootstrap in the root with only the Lambda environment, `env` and the Runtime
  // API address, until it has served `invocations`. Sets exec_to_first_next_ms when there was a
  // /next.
  CapturedRun Run(const LambdaRuntimeApi& api, int invocations,
                  const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {"env", "-i"};
    argv.insert(argv.end(), kLambdaEnvironment.begin(), kLambdaEnvironment.end());
    argv.push_back("AWS_LAMBDA_RUNTIME_API=" + api.address());
    argv.push_back("CHUNKCACHE_MAX_INVOCATIONS=" + std::to_string(invocations));
    argv.insert(argv.end(), env.begin(), env.end());
    if (::geteuid() != 0) {
      // Unprivileged: root of a user namespace of its own, which may chroot; same network.
      const std::string unshare = FindTool("unshare");
      REQUIRE_FALSE(unshare.empty());
      argv.insert(argv.end(), {unshare, "--user", "--map-root-user"});
    }
    const std::string chroot = FindTool("chroot");
    REQUIRE_FALSE(chroot.empty());
    argv.insert(argv.end(), {chroot, path(), "/var/task/bootstrap"});

    const std::int64_t exec_at = EpochMs();
    CapturedRun run = RunAndCapture(argv, kRunTimeout);
    const LambdaRuntimeApi::Stats stats = api.GetStats();
    exec_to_first_next_ms = stats.first_next_at_ms.has_value()
                                ? std::optional<std::int64_t>(*stats.first_next_at_ms - exec_at)
                                : std::nullopt;
    return run;
  }

  std::optional<std::int64_t> exec_to_first_next_ms;

 private:
  TempDir dir_{"chunkcache-lambda-root-"};
};

// The bootstrap's own "init took N ms" figure (main to the first /next), for the printout.
std::string InitLine(const std::string& err) {
  for (const std::string& line : Lines(err)) {
    if (absl::StrContains(line, "init took")) return line;
  }
  return "(no init line)";
}

void ReportStart(const char* what, const EmptyRoot& root, const CapturedRun& run) {
  REQUIRE(root.exec_to_first_next_ms.has_value());
  WARN(what << ": exec -> first /next " << *root.exec_to_first_next_ms
            << " ms in the empty root (env -i, chroot, /bin/sh, loader, libraries, init); "
            << InitLine(run.err));
}

// The zstd-base64 answer decoded.
std::string DecodeZstdBase64(const std::string& response) {
  simdjson::dom::parser parser;
  simdjson::dom::element body;
  REQUIRE(parser.parse(response).get(body) == simdjson::SUCCESS);
  std::string_view data;
  std::uint64_t raw_size = 0;
  REQUIRE(body["data"].get(data) == simdjson::SUCCESS);
  REQUIRE(body["raw_size"].get(raw_size) == simdjson::SUCCESS);
  std::string frame;
  REQUIRE(absl::Base64Unescape(absl::string_view(data.data(), data.size()), &frame));
  std::string decoded(raw_size, '\0');
  REQUIRE(ZSTD_decompress(decoded.data(), decoded.size(), frame.data(), frame.size()) == raw_size);
  return decoded;
}

// A DNS server on 127.53.0.N:53 (UDP) that knows one name: A `name` -> 127.0.0.1; AAAA and other
// types of it: no records; any other name: NXDOMAIN. Counts the queries for `name`.
class LoopbackDns {
 public:
  explicit LoopbackDns(std::string name) : name_(std::move(name)) {
    for (int n = 1; n <= 32 && !fd_.valid(); ++n) {
      UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      REQUIRE(fd.valid());
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(53);
      address.sin_addr.s_addr = htonl((127u << 24) | (53u << 16) | static_cast<std::uint32_t>(n));
      if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
        fd_ = std::move(fd);
        address_ = "127.53.0." + std::to_string(n);
      }
    }
    REQUIRE(fd_.valid());  // needs root (port 53)
    thread_ = std::thread([this] { Serve(); });
  }
  LoopbackDns(const LoopbackDns&) = delete;
  LoopbackDns& operator=(const LoopbackDns&) = delete;
  ~LoopbackDns() {
    stop_ = true;
    thread_.join();
  }

  const std::string& address() const { return address_; }
  int queries() const { return queries_; }

 private:
  void Serve() {
    while (!stop_) {
      pollfd ready{fd_.get(), POLLIN, 0};
      if (::poll(&ready, 1, 50) <= 0) continue;
      unsigned char query[512];
      sockaddr_in from{};
      socklen_t from_size = sizeof(from);
      const ssize_t n = ::recvfrom(fd_.get(), query, sizeof(query), 0,
                                   reinterpret_cast<sockaddr*>(&from), &from_size);
      if (n < 12) continue;
      // The question: labels, then QTYPE and QCLASS.
      std::size_t at = 12;
      std::string name;
      while (at < static_cast<std::size_t>(n) && query[at] != 0) {
        const std::size_t length = query[at];
        if (at + 1 + length > static_cast<std::size_t>(n)) break;
        absl::StrAppend(&name, name.empty() ? "" : ".",
                        absl::string_view(reinterpret_cast<const char*>(query + at + 1), length));
        at += 1 + length;
      }
      if (at + 5 > static_cast<std::size_t>(n)) continue;
      const std::size_t question_end = at + 5;
      const int type = (query[at + 1] << 8) | query[at + 2];
      const bool known = absl::AsciiStrToLower(name) == name_;
      if (known) ++queries_;
      std::string reply(reinterpret_cast<const char*>(query), question_end);
      reply[2] = static_cast<char>(0x81);                 // a response, recursion desired
      reply[3] = static_cast<char>(known ? 0x80 : 0x83);  // recursion available; NXDOMAIN
      reply[4] = 0, reply[5] = 1;                         // one question
      reply[6] = 0, reply[7] = known && type == 1 ? 1 : 0;
      reply[8] = reply[9] = reply[10] = reply[11] = 0;
      if (known && type == 1) {
        // The question's name (a pointer to offset 12), A, IN, TTL 60, 127.0.0.1.
        reply +=
            std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01", 16);
      }
      ::sendto(fd_.get(), reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from),
               from_size);
    }
  }

  const std::string name_;
  UniqueFd fd_;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::thread thread_;
};

// python3 -c: a TLS front (CERT KEY UPSTREAM_PORT) on a free 127.0.0.1 port for a plain TCP server
// on 127.0.0.1; prints "PORT n" once listening.
constexpr char kTlsFrontScript[] = R"py(
import socket, ssl, sys, threading
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
upstream = int(sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print("PORT", listener.getsockname()[1], flush=True)

def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def serve(client):
    try:
        tls = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError) as e:
        print("handshake failed:", e, file=sys.stderr, flush=True)
        client.close()
        return
    server = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pipe, args=(tls, server), daemon=True).start()
    pipe(server, tls)

while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
)py";

// A self-signed certificate for IP 127.0.0.1 (made with the openssl tool) and a TLS front with it
// for the plain-HTTP server on 127.0.0.1:`upstream_port`.
class LoopbackTls {
 public:
  explicit LoopbackTls(int upstream_port) {
    const CapturedRun made = RunAndCapture(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", dir_.path() + "/key.pem", "-out", cert(), "-days", "2", "-subj",
         "/CN=chunkcache-lambda-test", "-addext", "subjectAltName=IP:127.0.0.1"});
    INFO(made.err);
    REQUIRE(made.succeeded());
    Pipe out = Pipe::Make();
    const UniqueFd log(::open((dir_.path() + "/front.log").c_str(),
                              O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    REQUIRE(log.valid());
    process_ = ChildProcess({"python3", "-c", kTlsFrontScript, cert(), dir_.path() + "/key.pem",
                             std::to_string(upstream_port)},
                            out.write_end.get(), log.get());
    out.write_end.Reset();
    const std::optional<std::string> line = testing::momento_fixture_internal::ReadLineWithPrefix(
        out.read_end.get(), "PORT ", std::chrono::seconds(10));
    REQUIRE(line.has_value());
    port_ = std::stoi(*line);
  }

  std::string cert() const { return dir_.path() + "/cert.pem"; }
  int port() const { return port_; }

 private:
  TempDir dir_{"chunkcache-lambda-tls-"};
  ChildProcess process_;
  int port_ = 0;
};

TEST_CASE("the Lambda zip carries its loader and C library, within Lambda's size limits") {
  EmptyRoot root;
  const std::string task = root.task_dir();
  std::ifstream script(task + "/bootstrap");
  std::string first_line;
  std::getline(script, first_line);
  CHECK(first_line == "#!/bin/sh");
  CHECK(::access((task + "/bootstrap").c_str(), X_OK) == 0);
  CHECK(::access((task + "/bin/bootstrap").c_str(), X_OK) == 0);
  CHECK(::access((task + "/lib/ld-linux-x86-64.so.2").c_str(), X_OK) == 0);
  for (const char* lib : {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"}) {
    INFO(lib);
    CHECK(fs::is_regular_file(absl::StrCat(task, "/lib/", lib)));
  }
  CHECK(fs::is_regular_file(task + "/etc/ca-certificates.crt"));

  std::uintmax_t unpacked = 0;
  int files = 0;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(task)) {
    if (entry.is_regular_file()) {
      unpacked += entry.file_size();
      ++files;
    }
  }
  const std::uintmax_t zipped = fs::file_size(ZipPath());
  WARN("the zip: " << zipped / 1024 << " KiB, unpacked " << unpacked / 1024 << " KiB in " << files
                   << " files");
  CHECK(zipped < kLambdaZipLimit);
  CHECK(unpacked < kLambdaUnpackedLimit);
}

TEST_CASE("in an empty root: the 10 MB catalogue from memory, cold and warm, streamed above 6 MB") {
  EmptyRoot root;
  LambdaRuntimeApi api;
  const std::string cold = api.Enqueue(R"({"op":"catalogue"})").at(0);
  const std::string warm = api.Enqueue(R"({"op":"catalogue"})").at(0);
  const std::string zstd = api.Enqueue(R"({"op":"catalogue","format":"zstd-base64"})").at(0);
  const std::string buffered = api.Enqueue(R"({"op":"catalogue","format":"json"})").at(0);
  const CapturedRun run = root.Run(api, 4);
  INFO(run.err);
  REQUIRE(run.succeeded());
  ReportStart("memory://", root, run);

  const std::string json = testing::GenerateCatalogue({.megabytes = 10});
  REQUIRE(json.size() > kBufferedLimit);
  for (const std::string& id : {cold, warm}) {
    std::optional<LambdaInvocation> done = api.WaitFor(id, kWait);
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
    CHECK(done->mode == "streaming");
    CHECK(done->response == json);
  }
  std::optional<LambdaInvocation> compressed = api.WaitFor(zstd, kWait);
  REQUIRE(compressed.has_value());
  CHECK(compressed->state == "succeeded");
  CHECK(compressed->mode == "buffered");
  CHECK(compressed->response.size() < kBufferedLimit);
  CHECK(DecodeZstdBase64(compressed->response) == json);
  std::optional<LambdaInvocation> refused = api.WaitFor(buffered, kWait);
  REQUIRE(refused.has_value());
  CHECK(refused->state == "errored");
  CHECK(refused->error_type == "ResourceExhausted");

  const auto took = [&](const std::string& id) {
    const std::optional<LambdaInvocation> done = api.WaitFor(id, kWait);
    return done->done_at_ms - done->next_at_ms;
  };
  WARN("memory://, /next to answered: cold " << took(cold) << " ms, warm " << took(warm)
                                             << " ms (10 MB streamed), zstd-base64 " << took(zstd)
                                             << " ms");

  const auto [loads, lines] = EmfLoads(run.out);
  CHECK(lines == 4);
  CHECK(loads == 1);  // the origin once: the cold invocation; the rest warm
}

TEST_CASE("in an empty root: the 10 MB catalogue from a Redis on loopback, again after a restart") {
  RedisServer redis;
  const std::string backend = "CHUNKCACHE_BACKEND=" + redis.url();
  const std::string json = testing::GenerateCatalogue({.megabytes = 10});
  EmptyRoot root;

  LambdaRuntimeApi first;
  const std::string cold = first.Enqueue(R"({"op":"catalogue"})").at(0);
  const std::string warm = first.Enqueue(R"({"op":"catalogue","format":"stream"})").at(0);
  const CapturedRun run = root.Run(first, 2, {backend});
  INFO(run.err);
  REQUIRE(run.succeeded());
  ReportStart("redis:// (first start)", root, run);
  for (const std::string& id : {cold, warm}) {
    std::optional<LambdaInvocation> done = first.WaitFor(id, kWait);
    REQUIRE(done.has_value());
    CHECK(done->state == "succeeded");
    CHECK(done->mode == "streaming");
    CHECK(done->response == json);
  }
  CHECK(EmfLoads(run.out).first == 1);

  // A new execution environment: empty near cache, the entry comes from Redis, no origin load.
  LambdaRuntimeApi second;
  const std::string from_redis = second.Enqueue(R"({"op":"catalogue"})").at(0);
  const CapturedRun again = root.Run(second, 1, {backend});
  INFO(again.err);
  REQUIRE(again.succeeded());
  ReportStart("redis:// (second start)", root, again);
  std::optional<LambdaInvocation> done = second.WaitFor(from_redis, kWait);
  REQUIRE(done.has_value());
  CHECK(done->state == "succeeded");
  CHECK(done->response == json);
  CHECK(EmfLoads(again.out) == std::make_pair(std::uint64_t{0}, 1));
}

TEST_CASE("in an empty root: host names resolve through the /etc/resolv.conf Lambda provides") {
  if (::geteuid() != 0) {
    WARN("skipped: serving DNS on port 53 needs root");
    return;
  }
  constexpr char kName[] = "redis.chunkcache.test";
  LoopbackDns dns(kName);
  RedisServer redis;
  EmptyRoot root;
  root.AddFile("/etc/resolv.conf", "nameserver " + dns.address() + "\n");
  // A systemd distribution's line: modules the zip does not carry are skipped (libc has files and
  // dns built in). No /etc/hosts: the name must come from DNS.
  root.AddFile("/etc/nsswitch.conf", "hosts: files myhostname resolve [!UNAVAIL=return] dns\n");

  LambdaRuntimeApi api;
  const std::string id = api.Enqueue(R"({"op":"catalogue","format":"zstd-base64"})").at(0);
  const CapturedRun run =
      root.Run(api, 1,
               {absl::StrCat("CHUNKCACHE_BACKEND=redis://", kName, ":", redis.port()),
                "CHUNKCACHE_CATALOGUE_MB=1"});
  INFO(run.err);
  REQUIRE(run.succeeded());
  CHECK(dns.queries() >= 1);
  std::optional<LambdaInvocation> done = api.WaitFor(id, kWait);
  REQUIRE(done.has_value());
  CHECK(done->state == "succeeded");
  CHECK(DecodeZstdBase64(done->response) == testing::GenerateCatalogue({.megabytes = 1}));
}

TEST_CASE("in an empty root: https verifies against the zip's CA bundle, or CHUNKCACHE_CA_BUNDLE") {
  MomentoEmulator momento;
  LoopbackTls tls(momento.port());
  EmptyRoot root;
  std::ifstream cert(tls.cert());
  root.AddFile("/certs/test-ca.pem", std::string(std::istreambuf_iterator<char>(cert), {}));
  const std::vector<std::string> env = {
      absl::StrCat("CHUNKCACHE_BACKEND=momento+https://127.0.0.1:", tls.port(), "/",
                   momento.options().caches.at(0)),
      "MOMENTO_API_KEY=" + momento.api_key(), "CHUNKCACHE_CATALOGUE_MB=1"};
  LambdaRuntimeApi api;
  const std::string id = api.Enqueue(R"({"op":"catalogue","format":"manifest"})").at(0);

  SECTION("the CA named by CHUNKCACHE_CA_BUNDLE: the entry goes to Momento over TLS") {
    std::vector<std::string> with_ca = env;
    with_ca.push_back("CHUNKCACHE_CA_BUNDLE=/certs/test-ca.pem");
    const CapturedRun run = root.Run(api, 1, with_ca);
    INFO(run.err);
    REQUIRE(run.succeeded());
    std::optional<LambdaInvocation> done = api.WaitFor(id, kWait);
    REQUIRE(done.has_value());
    INFO(done->error_message);
    CHECK(done->state == "succeeded");
    CHECK(momento.Stats().puts >= 1);  // the entry was stored, through the TLS front
  }

  SECTION("by default the zip's bundle, which is found and loaded, and lacks the test CA") {
    const CapturedRun run = root.Run(api, 1, env);
    INFO(run.err);
    REQUIRE(run.succeeded());
    std::optional<LambdaInvocation> done = api.WaitFor(id, kWait);
    REQUIRE(done.has_value());
    INFO(done->error_message);
    CHECK(done->state == "errored");
    // Not "error setting certificate file: /etc/ssl/certs/ca-certificates.crt" (libcurl's Debian
    // default, absent here and on Amazon Linux): the bundle was read, the peer was refused.
    CHECK(absl::StrContains(done->error_message, "SSL certificate problem"));
    CHECK(momento.Stats().requests == 0);
  }
}

TEST_CASE("in an empty root: an unusable backend is reported to /runtime/init/error") {
  EmptyRoot root;
  LambdaRuntimeApi api;
  const CapturedRun run = root.Run(api, 1, {"CHUNKCACHE_BACKEND=redis://127.0.0.1:1"});
  INFO(run.err);
  CHECK_FALSE(run.succeeded());
  CHECK(absl::StrContains(run.err, "init failed"));  // the bootstrap ran, and failed its init
  std::optional<std::pair<std::string, std::string>> init = api.InitError();
  REQUIRE(init.has_value());
  CHECK(init->first == "Unavailable");
  CHECK(api.GetStats().next_requests == 0);
}

#else

TEST_CASE("the Lambda package test needs the examples") {
  WARN("built without CHUNKCACHE_BUILD_EXAMPLES: there is no Lambda zip to test");
}

#endif

}  // namespace
}  // namespace chunkcache
