// End-to-end tests of the `chunkcache` command-line tool (tools/chunkcache_cli.cc): the built
// binary is run against a real redis-server and the Momento emulator, and its exit codes, stdout
// and stderr are checked.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "chunkcache/tool.h"
#include "fixtures/momento_emulator.h"
#include "fixtures/redis_server.h"
#include "fixtures/tls_certs.h"
#include "test_util.h"

namespace chunkcache::testing {
namespace {

#ifndef CHUNKCACHE_CLI

TEST_CASE("the chunkcache tool is not built (CHUNKCACHE_BUILD_EXAMPLES=OFF): skipped") {
  WARN("chunkcache_cli_test needs the chunkcache tool, built with CHUNKCACHE_BUILD_EXAMPLES=ON");
}

#else

struct CliResult {
  int exit_code = -1;  // -1 if the tool did not exit normally (killed by a signal)
  std::string out;
  std::string err;
  bool timed_out = false;  // RunCliWithStdio killed it at its timeout
};

// Runs `chunkcache args...`, with `env` ("NAME=value") added to its environment.
CliResult RunCli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv;
  if (!env.empty()) {
    argv.push_back("env");
    argv.insert(argv.end(), env.begin(), env.end());
  }
  argv.push_back(CHUNKCACHE_CLI);
  argv.insert(argv.end(), args.begin(), args.end());
  const redis_fixture_internal::CapturedRun run =
      redis_fixture_internal::RunAndCapture(argv, std::chrono::seconds(30));
  CliResult result;
  if (WIFEXITED(run.wait_status)) result.exit_code = WEXITSTATUS(run.wait_status);
  result.out = run.out;
  result.err = run.err;
  return result;
}

// How RunCliWithStdio sets up the tool's descriptors 0 and 1 (2 is always captured).
struct Stdio {
  bool close_stdin = false;  // otherwise stdin_fd, or /dev/null when that is -1
  int stdin_fd = -1;
  bool close_stdout = false;  // otherwise captured
};

// Runs `chunkcache args...` with the descriptors of `stdio` and waits up to `timeout` for it to
// exit; past that it is killed and the result says timed_out.
CliResult RunCliWithStdio(const std::vector<std::string>& args, const Stdio& stdio,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  using redis_fixture_internal::Pipe;
  std::vector<std::string> argv = {CHUNKCACHE_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c_argv;
  for (std::string& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);

  Pipe out = Pipe::Make();  // O_CLOEXEC: the child keeps only what the file actions give it
  Pipe err = Pipe::Make();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdio.close_stdin) {
    posix_spawn_file_actions_addclose(&actions, 0);
  } else if (stdio.stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdio.stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  if (stdio.close_stdout) {
    posix_spawn_file_actions_addclose(&actions, 1);
  } else {
    posix_spawn_file_actions_adddup2(&actions, out.write_end.get(), 1);
  }
  posix_spawn_file_actions_adddup2(&actions, err.write_end.get(), 2);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(spawned == 0);
  out.write_end.Reset();
  err.write_end.Reset();

  CliResult result;
  if (!redis_fixture_internal::ReadUntilClosed(out.read_end.get(), err.read_end.get(), &result.out,
                                               &result.err,
                                               std::chrono::steady_clock::now() + timeout)) {
    result.timed_out = true;
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && !result.timed_out) result.exit_code = WEXITSTATUS(status);
  return result;
}

// Writes `size` bytes of zeros into a pipe from a thread and keeps the pipe open until
// destroyed, so the reader never sees end of input: only a bounded read lets it finish.
class EndlessInput {
 public:
  explicit EndlessInput(std::size_t size) : pipe_(redis_fixture_internal::Pipe::Make()) {
    writer_ = std::thread([this, size] {
      // The reader may leave early: take EPIPE instead of a process-wide SIGPIPE.
      sigset_t pipe_signal;
      sigemptyset(&pipe_signal);
      sigaddset(&pipe_signal, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
      const std::string block(1 << 16, '\0');
      while (written_ < size) {
        const ssize_t n = ::write(pipe_.write_end.get(), block.data(),
                                  std::min(block.size(), size - written_.load()));
        if (n > 0) {
          written_ += static_cast<std::size_t>(n);
        } else if (errno != EINTR) {
          break;  // EPIPE: the reader is gone
        }
      }
      const timespec no_wait{};
      sigtimedwait(&pipe_signal, nullptr, &no_wait);  // consume a pending SIGPIPE, if any
      done_ = true;
    });
  }
  ~EndlessInput() {
    CloseReadEnd();  // a blocked writer gets EPIPE
    writer_.join();
  }

  // The end the reader's stdin is made of. Close it once the reader has it: while it is open
  // here too, the writer would never see the reader go.
  int read_end() const { return pipe_.read_end.get(); }
  void CloseReadEnd() { pipe_.read_end.Reset(); }
  // Bytes the reader has taken so far (up to a pipe buffer more than it actually read).
  std::size_t written() const { return written_; }
  // True once the writer stopped: wrote everything or found the reader gone.
  bool done() const { return done_; }

 private:
  redis_fixture_internal::Pipe pipe_;
  std::atomic<std::size_t> written_{0};
  std::atomic<bool> done_{false};
  std::thread writer_;
};

// The tool's error report: exactly one line, naming the tool.
bool IsOneErrorLine(const std::string& err) {
  return err.rfind("chunkcache: ", 0) == 0 && !err.empty() && err.back() == '\n' &&
         std::count(err.begin(), err.end(), '\n') == 1;
}

// The generation printed by `put`: "... (generation 1f2e3d4c5b6a7988)".
std::string GenerationOf(const std::string& put_output) {
  const std::string marker = "(generation ";
  const std::size_t at = put_output.find(marker);
  if (at == std::string::npos) return "";
  return put_output.substr(at + marker.size(), 16);
}

// The number of chunks printed by `put`: "... in 4 chunks ...".
int ChunkCountOf(const std::string& put_output) {
  const std::size_t in = put_output.rfind(" in ");
  if (in == std::string::npos) return -1;
  return std::stoi(put_output.substr(in + 4));
}

std::size_t Count(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string_view::npos;
       at = text.find(what, at + what.size())) {
    ++n;
  }
  return n;
}

TEST_CASE("put, inspect, verify, corruption, repair and delete of an entry on Redis") {
  RedisServer server;
  TempDir dir;
  const std::string json = testing::GenerateCatalogue({.megabytes = 3});
  const std::filesystem::path input = dir.path() / "catalogue.json";
  WriteFile(input, json);
  const std::string backend = "--backend=" + server.url();

  const CliResult put =
      RunCli({backend, "--chunk_size=262144", "put", "catalogue", input.string()});
  INFO("put: " << put.out << put.err);
  REQUIRE(put.exit_code == 0);
  REQUIRE(put.out.rfind("stored catalogue: " + std::to_string(json.size()) + " bytes -> ", 0) == 0);
  const std::string generation = GenerationOf(put.out);
  REQUIRE(generation.size() == 16);
  const int chunks = ChunkCountOf(put.out);
  REQUIRE(chunks >= 3);
  const std::string chunk_key = "cc:{catalogue}:" + generation + ":1";

  const CliResult inspect = RunCli({backend, "inspect", "catalogue"});
  INFO("inspect: " << inspect.out << inspect.err);
  CHECK(inspect.exit_code == 0);
  // Format version 3: an 80-byte header and 12 bytes for each of the two frames of 3 MB.
  CHECK(inspect.out.find("cc:{catalogue} (104 bytes)") != std::string::npos);
  CHECK(inspect.out.find("frames:         2 of 1573062 bytes") != std::string::npos);
  CHECK(inspect.out.find(generation) != std::string::npos);
  CHECK(inspect.out.find(std::to_string(json.size()) + " bytes") != std::string::npos);
  CHECK(inspect.out.find("chunk size:     262144 bytes") != std::string::npos);
  CHECK(inspect.out.find("chunked, " + std::to_string(chunks) + " chunks") != std::string::npos);
  for (int i = 0; i < chunks; ++i) {
    CHECK(inspect.out.find("cc:{catalogue}:" + generation + ":" + std::to_string(i)) !=
          std::string::npos);
  }
  CHECK(Count(inspect.out, "expected   262144  actual   262144  ok") ==
        static_cast<std::size_t>(chunks - 1));
  CHECK(Count(inspect.out, "ttl ") >= static_cast<std::size_t>(chunks));  // one per chunk
  CHECK(inspect.out.find("ttl:            manifest ") != std::string::npos);
  CHECK(inspect.out.find("checksum ok:    yes") != std::string::npos);
  CHECK(inspect.err.empty());

  CliResult verify = RunCli({backend, "verify", "catalogue"});
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.rfind("ok: catalogue", 0) == 0);

  // Same size, damaged bytes: only the checksum can tell.
  server.Cli({"SETRANGE", chunk_key, "100", "XXXX"});
  verify = RunCli({backend, "verify", "catalogue"});
  CHECK(verify.exit_code == 2);
  CHECK(verify.out.find("corrupt") != std::string::npos);
  CHECK(verify.out.find("checksum") != std::string::npos);
  CliResult damaged = RunCli({backend, "inspect", "catalogue"});
  CHECK(damaged.exit_code == 2);
  CHECK(damaged.out.find("checksum ok:    NO") != std::string::npos);

  server.Cli({"DEL", chunk_key});
  verify = RunCli({backend, "verify", "catalogue"});
  CHECK(verify.exit_code == 2);
  CHECK(verify.out.find("corrupt") != std::string::npos);
  CHECK(verify.out.find(chunk_key + ") is missing") != std::string::npos);
  damaged = RunCli({backend, "inspect", "catalogue"});
  CHECK(damaged.out.find("MISSING") != std::string::npos);

  const std::filesystem::path output = dir.path() / "out.json";
  const CliResult failed_get = RunCli({backend, "get", "catalogue", "-o", output.string()});
  CHECK(failed_get.exit_code != 0);
  CHECK(failed_get.out.empty());
  CHECK(IsOneErrorLine(failed_get.err));
  CHECK(!std::filesystem::exists(output));

  // A new Put repairs the entry.
  REQUIRE(RunCli({backend, "--chunk_size=262144", "put", "catalogue", input.string()}).exit_code ==
          0);
  const CliResult get = RunCli({backend, "get", "catalogue", "-o", output.string()});
  CHECK(get.exit_code == 0);
  CHECK(get.out.empty());
  CHECK(get.err.empty());  // no progress line: stderr is not a terminal
  CHECK(ReadFile(output) == json);
  CHECK(RunCli({backend, "verify", "catalogue"}).exit_code == 0);

  const CliResult del = RunCli({backend, "del", "catalogue"});
  CHECK(del.exit_code == 0);
  verify = RunCli({backend, "verify", "catalogue"});
  CHECK(verify.exit_code == 3);
  CHECK(verify.out.rfind("missing", 0) == 0);
  const CliResult missing_get = RunCli({backend, "get", "catalogue"});
  CHECK(missing_get.exit_code == 3);
  CHECK(IsOneErrorLine(missing_get.err));
}

TEST_CASE("put, get and verify over rediss:// with --ca_bundle; an untrusted server is refused") {
  const TestCertificates& certs = TestCertificates::Get();
  RedisServer server(
      {.tls = RedisTls{
           .cert_file = certs.server_cert, .key_file = certs.server_key, .ca_file = certs.ca}});
  REQUIRE(server.url().rfind("rediss://", 0) == 0);
  TempDir dir;
  const std::string json = testing::GenerateCatalogue({.megabytes = 1});
  const std::filesystem::path input = dir.path() / "catalogue.json";
  WriteFile(input, json);
  const std::string backend = "--backend=" + server.url();
  const std::string ca = "--ca_bundle=" + certs.ca;

  const CliResult put = RunCli({backend, ca, "put", "catalogue", input.string()});
  INFO("put: " << put.out << put.err);
  REQUIRE(put.exit_code == 0);
  const CliResult get = RunCli({backend, ca, "get", "catalogue"});
  CHECK(get.exit_code == 0);
  CHECK(get.out == json);
  const CliResult verify = RunCli({backend, ca, "verify", "catalogue"});
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.rfind("ok: catalogue", 0) == 0);

  // Without the test CA the server cannot be trusted: a clear error, nothing read.
  const CliResult untrusted =
      RunCli({backend, "--ca_bundle=" + certs.other_ca, "get", "catalogue"});
  CHECK(untrusted.exit_code != 0);
  CHECK(untrusted.out.empty());
  CHECK_THAT(untrusted.err, Catch::Contains("certificate"));
}

TEST_CASE("get --compressed writes the stored zstd frame, and put reads stdin for -") {
  RedisServer server;
  TempDir dir;
  const std::string json = testing::GenerateCatalogue({.megabytes = 1});
  const std::filesystem::path input = dir.path() / "catalogue.json";
  WriteFile(input, json);
  const std::string backend = "--backend=" + server.url();

  // sh gives the tool the file as its stdin (the fixture's children read /dev/null).
  const redis_fixture_internal::CapturedRun put = redis_fixture_internal::RunAndCapture(
      {"sh", "-c", "exec \"$0\" \"$@\" < '" + input.string() + "'", CHUNKCACHE_CLI, backend,
       "--chunk_size=65536", "put", "doc", "-"},
      std::chrono::seconds(30));
  INFO("put: " << put.out << put.err);
  REQUIRE(put.succeeded());
  CHECK(put.out.find("stored doc: " + std::to_string(json.size()) + " bytes") == 0);

  const CliResult compressed = RunCli({backend, "get", "doc", "--compressed"});
  REQUIRE(compressed.exit_code == 0);
  CHECK(compressed.out.size() < json.size() / 2);
  const std::optional<std::string> decoded = ZstdCliDecompress(compressed.out);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == json);

  const CliResult plain = RunCli({backend, "get", "doc"});
  CHECK(plain.exit_code == 0);
  CHECK(plain.out == json);
}

TEST_CASE("bench-get and stats report their figures") {
  RedisServer server;
  TempDir dir;
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, testing::GenerateCatalogue({.megabytes = 0.5}));
  const std::string backend = "--backend=" + server.url();
  REQUIRE(RunCli({backend, "put", "doc", input.string()}).exit_code == 0);

  const CliResult bench = RunCli({backend, "bench-get", "doc", "--count=5"});
  INFO("bench-get: " << bench.out << bench.err);
  CHECK(bench.exit_code == 0);
  CHECK(bench.out.find("5 gets, 0 errors") != std::string::npos);
  CHECK(bench.out.find("p50 ") != std::string::npos);
  CHECK(bench.out.find("p99 ") != std::string::npos);
  CHECK(bench.out.find("MB/s") != std::string::npos);
  CHECK(RunCli({backend, "bench-get", "doc", "-n", "2"}).out.find("2 gets") != std::string::npos);

  const CliResult stats = RunCli({backend, "stats", "doc", "absent"});
  INFO("stats: " << stats.out << stats.err);
  CHECK(stats.exit_code == 0);
  CHECK(stats.out.find("gets                 = 2") != std::string::npos);
  CHECK(stats.out.find("hits                 = 1") != std::string::npos);
  CHECK(stats.out.find("misses               = 1") != std::string::npos);
  CHECK(stats.out.find("get_latency          = count 2") != std::string::npos);

  const CliResult prometheus = RunCli({backend, "stats", "doc", "--format=prometheus"});
  CHECK(prometheus.exit_code == 0);
  CHECK(prometheus.out.find("chunkcache_hits_total 1") != std::string::npos);
  const CliResult emf = RunCli({backend, "stats", "doc", "--format=emf"});
  CHECK(emf.exit_code == 0);
  CHECK(emf.out.rfind("{\"_aws\":", 0) == 0);
  const CliResult bad_format = RunCli({backend, "stats", "--format=xml"});
  CHECK(bad_format.exit_code == 1);
  CHECK(IsOneErrorLine(bad_format.err));
}

TEST_CASE("--help lists every command and flag") {
  const CliResult help = RunCli({"--help"});
  CHECK(help.exit_code == 0);
  for (const char* command : {"put KEY FILE|-", "get KEY", "del KEY", "inspect KEY", "verify KEY",
                              "stats", "bench-get"}) {
    CHECK(help.out.find(command) != std::string::npos);
  }
  for (const char* flag :
       {"--backend", "--prefix", "--chunk_size", "--max_payload_size", "--level", "--ttl",
        "--timeout", "--compressed", "--output", "--count", "--format"}) {
    CHECK(help.out.find(flag) != std::string::npos);
  }
  CHECK(help.out.find("memory://") != std::string::npos);
  CHECK(help.out.find("momento+https://") != std::string::npos);
}

TEST_CASE("usage errors and an unknown backend scheme are one line and exit code 1") {
  const CliResult scheme = RunCli({"--backend=ftp://user:secret@example.com", "get", "k"});
  CHECK(scheme.exit_code == 1);
  CHECK(IsOneErrorLine(scheme.err));
  CHECK(scheme.err.find("unknown backend scheme \"ftp\"") != std::string::npos);
  CHECK(scheme.err.find("secret") == std::string::npos);
  CHECK(scheme.out.empty());

  const CliResult command = RunCli({"frobnicate", "k"});
  CHECK(command.exit_code == 1);
  CHECK(IsOneErrorLine(command.err));
  const CliResult arguments = RunCli({"put", "k"});
  CHECK(arguments.exit_code == 1);
  CHECK(IsOneErrorLine(arguments.err));
  const CliResult unreachable = RunCli({"--backend=redis://127.0.0.1:1", "verify", "k"});
  CHECK(unreachable.exit_code == 1);
  CHECK(IsOneErrorLine(unreachable.err));
}

TEST_CASE("a miss names the key, the stored key it read and the backend, never its password") {
  RedisServer server({.extra_args = {"--requirepass", "hunter2"}});
  const std::string where = "redis://127.0.0.1:" + std::to_string(server.port());
  const std::string backend =
      "--backend=redis://:hunter2@127.0.0.1:" + std::to_string(server.port()) + "/0";
  const std::string expected = "no such key \"catalogue\" (read cc:{catalogue} on " + where + ")";

  const CliResult get = RunCli({backend, "get", "catalogue"});
  INFO("get: " << get.err);
  CHECK(get.exit_code == 3);
  CHECK(IsOneErrorLine(get.err));
  CHECK(get.err == "chunkcache: get: " + expected + " [NOT_FOUND]\n");
  const CliResult inspect = RunCli({backend, "--prefix=app:", "inspect", "catalogue"});
  INFO("inspect: " << inspect.err);
  CHECK(inspect.exit_code == 3);
  CHECK(inspect.err == "chunkcache: inspect: no such key \"catalogue\" (read app:{catalogue} on " +
                           where + ") [NOT_FOUND]\n");
  const CliResult verify = RunCli({backend, "verify", "catalogue"});
  INFO("verify: " << verify.out << verify.err);
  CHECK(verify.exit_code == 3);
  CHECK(verify.out == "missing: catalogue: " + expected + "\n");
  for (const CliResult* run : {&get, &inspect, &verify}) {
    CHECK(run->out.find("hunter2") == std::string::npos);
    CHECK(run->err.find("hunter2") == std::string::npos);
  }
}

TEST_CASE("put, get, inspect and verify through Momento (emulator)") {
  MomentoEmulator emulator;
  TempDir dir;
  const std::string json = testing::GenerateCatalogue({.megabytes = 1});
  const std::filesystem::path input = dir.path() / "catalogue.json";
  WriteFile(input, json);
  const std::string backend = "--backend=momento+" + emulator.endpoint() + "/test-cache";
  const std::vector<std::string> env = {"MOMENTO_API_KEY=" + emulator.api_key()};

  const CliResult put =
      RunCli({backend, "--chunk_size=131072", "put", "catalogue", input.string()}, env);
  INFO("put: " << put.out << put.err);
  REQUIRE(put.exit_code == 0);
  CHECK(ChunkCountOf(put.out) >= 2);

  const std::filesystem::path output = dir.path() / "out.json";
  const CliResult get = RunCli({backend, "get", "catalogue", "--output=" + output.string()}, env);
  CHECK(get.exit_code == 0);
  CHECK(ReadFile(output) == json);

  const CliResult inspect = RunCli({backend, "inspect", "catalogue"}, env);
  CHECK(inspect.exit_code == 0);
  CHECK(inspect.out.find("not reported by this backend") != std::string::npos);

  const CliResult verify = RunCli({backend, "verify", "catalogue"}, env);
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.rfind("ok: catalogue", 0) == 0);

  for (const CliResult* run : {&put, &get, &inspect, &verify}) {
    CHECK(run->out.find(emulator.api_key()) == std::string::npos);
    CHECK(run->err.find(emulator.api_key()) == std::string::npos);
  }
}

TEST_CASE("on Momento a put at the largest chunk size stores full chunks under the longest key") {
  MomentoEmulator emulator;  // refuses len(key) + len(value) > 5,000,000 with 413, as Momento
  TempDir dir;
  // Random base64 in a JSON string: zstd leaves about 3/4, so the first chunk is a full one.
  std::string json = "[\"";
  std::uint64_t state = 42;
  while (json.size() < 7'200'000) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    json.push_back("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[state >> 58]);
  }
  json += "\"]";
  const std::filesystem::path input = dir.path() / "big.json";
  WriteFile(input, json);
  const std::string backend = "--backend=momento+" + emulator.endpoint() + "/test-cache";
  const std::vector<std::string> env = {"MOMENTO_API_KEY=" + emulator.api_key()};
  const std::string key(1024, '%');  // the longest logical key, every byte escaped in stored keys

  const CliResult put = RunCli({backend, "--chunk_size=5000000", "put", key, input.string()}, env);
  INFO("put: " << put.out << put.err);
  REQUIRE(put.exit_code == 0);
  CHECK(ChunkCountOf(put.out) == 2);
  std::size_t largest = 0;
  for (const auto& [stored_key, size] : emulator.Keys("test-cache")) {
    CHECK(stored_key.size() + size <= 5'000'000);
    largest = std::max(largest, size);
  }
  CHECK(largest > 4'900'000);

  const std::filesystem::path output = dir.path() / "out.json";
  const CliResult get = RunCli({backend, "get", key, "--output=" + output.string()}, env);
  INFO("get: " << get.out << get.err);
  CHECK(get.exit_code == 0);
  CHECK(ReadFile(output) == json);
}

TEST_CASE("the Momento API key never appears in the output, even on an auth error") {
  MomentoEmulator emulator;
  TempDir dir;
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, R"({"a":1})");
  const std::string backend = "--backend=momento+" + emulator.endpoint() + "/test-cache";
  const std::string wrong_key = "wrong-secret-api-key-0123456789";
  const std::vector<std::string> env = {"MOMENTO_API_KEY=" + wrong_key};

  const std::vector<std::vector<std::string>> commands = {{backend, "put", "doc", input.string()},
                                                          {backend, "get", "doc"},
                                                          {backend, "inspect", "doc"},
                                                          {backend, "verify", "doc"},
                                                          {backend, "del", "doc"},
                                                          {backend, "stats", "doc"}};
  for (const std::vector<std::string>& args : commands) {
    const CliResult run = RunCli(args, env);
    INFO(args[1] << ": " << run.out << run.err);
    CHECK(run.exit_code == 1);
    CHECK(IsOneErrorLine(run.err));
    CHECK(run.err.find("UNAUTHENTICATED") != std::string::npos);
    CHECK(run.out.find(wrong_key) == std::string::npos);
    CHECK(run.err.find(wrong_key) == std::string::npos);
  }
}

TEST_CASE("get with standard output closed fails and never writes the JSON into the Redis socket") {
  RedisServer server;
  TempDir dir;
  // Redis reads a line of its inline protocol as a command: "FLUSHALL" on its own line empties the
  // database if the JSON reaches the connection.
  const std::string json = "[1\n,\n\"FLUSHALL\"\n]\n";
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, json);
  const std::string backend = "--backend=" + server.url();
  REQUIRE(RunCli({backend, "put", "doc", input.string()}).exit_code == 0);
  server.Cli({"SET", "other", "kept"});
  const std::string keys_before = server.Cli({"DBSIZE"});
  REQUIRE(keys_before == "2");

  const CliResult get = RunCliWithStdio({backend, "get", "doc"}, {.close_stdout = true});
  INFO("get: " << get.err);
  CHECK(get.exit_code == 1);
  CHECK(IsOneErrorLine(get.err));
  CHECK(get.err.find("standard output is closed") != std::string::npos);
  CHECK(server.Cli({"DBSIZE"}) == keys_before);
  CHECK(server.Cli({"GET", "other"}) == "kept");

  // Other commands refuse before doing anything, as their outcome could not be reported.
  const CliResult put =
      RunCliWithStdio({backend, "put", "new", input.string()}, {.close_stdout = true});
  CHECK(put.exit_code == 1);
  CHECK(put.err.find("standard output is closed: nothing was done") != std::string::npos);
  CHECK(server.Cli({"EXISTS", "cc:{new}"}) == "0");
  CHECK(server.Cli({"DBSIZE"}) == keys_before);

  // get -o FILE needs no stdout.
  const std::filesystem::path output = dir.path() / "out.json";
  const CliResult to_file =
      RunCliWithStdio({backend, "get", "doc", "-o", output.string()}, {.close_stdout = true});
  INFO("get -o: " << to_file.err);
  CHECK(to_file.exit_code == 0);
  CHECK(ReadFile(output) == json);
}

TEST_CASE("a failed write to standard output is an error exit") {
  if (!std::filesystem::exists("/dev/full")) {
    WARN("no /dev/full: skipped");
    return;
  }
  RedisServer server;
  TempDir dir;
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, testing::GenerateCatalogue({.megabytes = 0.2}));
  const std::string backend = "--backend=" + server.url();
  REQUIRE(RunCli({backend, "put", "doc", input.string()}).exit_code == 0);

  for (const char* command : {"get", "inspect", "verify"}) {
    const redis_fixture_internal::CapturedRun run = redis_fixture_internal::RunAndCapture(
        {"sh", "-c", "exec \"$0\" \"$@\" > /dev/full", CHUNKCACHE_CLI, backend, command, "doc"},
        std::chrono::seconds(30));
    INFO(command << ": " << run.err);
    CHECK(WIFEXITED(run.wait_status));
    CHECK(WEXITSTATUS(run.wait_status) == 1);
    CHECK(IsOneErrorLine(run.err));
    CHECK(run.err.find("cannot write standard output: No space left on device") !=
          std::string::npos);
  }
}

TEST_CASE("put - reads at most max_payload_size + 1 bytes of standard input") {
  RedisServer server;
  const std::string backend = "--backend=" + server.url();

  // Twice the limit, and the pipe never ends: a tool that reads to the end never exits.
  EndlessInput input(2'000'000);
  const auto start = std::chrono::steady_clock::now();
  const CliResult put = RunCliWithStdio({backend, "--max_payload_size=1000000", "put", "doc", "-"},
                                        {.stdin_fd = input.read_end()}, std::chrono::seconds(10));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  input.CloseReadEnd();
  INFO("put: " << put.out << put.err);
  CHECK(!put.timed_out);
  CHECK(elapsed < std::chrono::seconds(10));
  CHECK(put.exit_code == 1);
  CHECK(IsOneErrorLine(put.err));
  CHECK(put.err.find("standard input holds more than --max_payload_size (1000000 bytes)") !=
        std::string::npos);
  CHECK(put.err.find("RESOURCE_EXHAUSTED") != std::string::npos);
  CHECK(server.Cli({"DBSIZE"}) == "0");
  // It stopped reading: the writer found the pipe closed before it had written everything.
  while (!input.done()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(input.written() < 2'000'000);

  // Exactly the limit is accepted, one byte more is not (a file: refused by its size).
  TempDir dir;
  const std::string json_at_limit = "\"" + std::string(1'000'000 - 2, 'a') + "\"";
  const std::filesystem::path at_limit = dir.path() / "at_limit.json";
  WriteFile(at_limit, json_at_limit);
  const std::filesystem::path over_limit = dir.path() / "over_limit.json";
  WriteFile(over_limit, json_at_limit + " ");
  for (const auto& [path, ok] : {std::pair{at_limit, true}, std::pair{over_limit, false}}) {
    for (const bool from_stdin : {false, true}) {
      const std::vector<std::string> args = {backend, "--max_payload_size=1000000", "put", "doc",
                                             from_stdin ? "-" : path.string()};
      const redis_fixture_internal::CapturedRun run =
          from_stdin ? redis_fixture_internal::RunAndCapture(
                           {"sh", "-c", "exec \"$0\" \"$@\" < '" + path.string() + "'",
                            CHUNKCACHE_CLI, args[0], args[1], args[2], args[3], args[4]},
                           std::chrono::seconds(30))
                     : redis_fixture_internal::RunAndCapture(
                           {CHUNKCACHE_CLI, args[0], args[1], args[2], args[3], args[4]},
                           std::chrono::seconds(30));
      INFO(path.filename() << (from_stdin ? " on stdin: " : ": ") << run.out << run.err);
      CHECK(run.succeeded() == ok);
      if (!ok) CHECK(run.err.find("RESOURCE_EXHAUSTED") != std::string::npos);
    }
  }
}

TEST_CASE("put - with standard input closed says that it is closed") {
  RedisServer server;
  // The Redis connection would take descriptor 0 and a read of it say "Resource temporarily
  // unavailable".
  const CliResult put =
      RunCliWithStdio({"--backend=" + server.url(), "put", "doc", "-"}, {.close_stdin = true});
  INFO("put: " << put.err);
  CHECK(put.exit_code == 1);
  CHECK(IsOneErrorLine(put.err));
  CHECK(put.err.find("cannot read standard input: it is closed") != std::string::npos);
  CHECK(put.err.find("temporarily unavailable") == std::string::npos);
  CHECK(server.Cli({"DBSIZE"}) == "0");
}

TEST_CASE("chunk and payload sizes outside the tool's bounds are refused as InvalidArgument") {
  RedisServer server;
  TempDir dir;
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, R"({"a":[1,2,3]})");
  const std::string backend = "--backend=" + server.url();

  // 2^64 - 1 overflowed the Redis reply bound and was stored with.
  for (const char* size : {"18446744073709551615", "536870913", "127", "0"}) {
    const CliResult put =
        RunCli({backend, std::string("--chunk_size=") + size, "put", "doc", input.string()});
    INFO("--chunk_size=" << size << ": " << put.out << put.err);
    CHECK(put.exit_code == 1);
    CHECK(IsOneErrorLine(put.err));
    CHECK(put.err.find(std::string("--chunk_size=") + size + " is outside 128..536870912") !=
          std::string::npos);
    CHECK(put.err.find("INVALID_ARGUMENT") != std::string::npos);
  }
  for (const char* size : {"0", "4294967297"}) {
    const CliResult get = RunCli({backend, std::string("--max_payload_size=") + size, "get", "a"});
    INFO("--max_payload_size=" << size << ": " << get.err);
    CHECK(get.exit_code == 1);
    CHECK(get.err.find("INVALID_ARGUMENT") != std::string::npos);
  }
  CHECK(server.Cli({"DBSIZE"}) == "0");

  for (const char* size : {"128", "536870912"}) {
    const CliResult put =
        RunCli({backend, std::string("--chunk_size=") + size, "put", "doc", input.string()});
    INFO("--chunk_size=" << size << ": " << put.out << put.err);
    CHECK(put.exit_code == 0);
  }
}

TEST_CASE("get -o into a missing directory is NotFound naming that directory") {
  RedisServer server;
  TempDir dir;
  const std::filesystem::path input = dir.path() / "doc.json";
  WriteFile(input, R"({"a":1})");
  const std::string backend = "--backend=" + server.url();
  REQUIRE(RunCli({backend, "put", "doc", input.string()}).exit_code == 0);

  const std::filesystem::path missing = dir.path() / "no-such-dir";
  const CliResult get = RunCli({backend, "get", "doc", "-o", (missing / "out.json").string()});
  INFO("get: " << get.err);
  CHECK(get.exit_code == 1);  // not 3: the key exists
  CHECK(IsOneErrorLine(get.err));
  CHECK(get.err.find("the directory " + missing.string() + " does not exist") != std::string::npos);
  CHECK(get.err.find("NOT_FOUND") != std::string::npos);
  CHECK(get.err.find("PERMISSION_DENIED") == std::string::npos);
  CHECK(!std::filesystem::exists(missing));
}

#endif  // CHUNKCACHE_CLI

// ---- The tool as a library: chunkcache::RunTool in this process -----------------------------

struct ToolRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs chunkcache::RunTool({"chunkcache", args...}) in this process, its descriptors 1 and 2
// pointed at files for the call.
ToolRun RunToolInProcess(std::vector<std::string> args) {
  TempDir dir;
  const std::filesystem::path out_path = dir.path() / "out";
  const std::filesystem::path err_path = dir.path() / "err";
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved_out = ::dup(STDOUT_FILENO);
  const int saved_err = ::dup(STDERR_FILENO);
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE((saved_out >= 0 && saved_err >= 0 && out_fd >= 0 && err_fd >= 0));
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(err_fd, STDERR_FILENO);
  args.insert(args.begin(), "chunkcache");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ToolRun run;
  run.exit_code = RunTool(static_cast<int>(args.size()), argv.data());
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(saved_out, STDOUT_FILENO);
  ::dup2(saved_err, STDERR_FILENO);
  for (const int fd : {saved_out, saved_err, out_fd, err_fd}) ::close(fd);
  run.out = ReadFile(out_path);
  run.err = ReadFile(err_path);
  return run;
}

TEST_CASE("RunTool reaches a registered scheme: put, verify, inspect, get and a miss") {
  // One memory backend for every URL of the scheme, so that entries outlive each command.
  static const std::shared_ptr<Backend> store = NewMemoryBackend();
  static std::vector<std::string>* const urls = new std::vector<std::string>();
  const absl::Status registered = RegisterBackendScheme(
      "cli-test-mem",
      [](std::string_view url,
         const BackendUrlOptions& options) -> absl::StatusOr<std::shared_ptr<Backend>> {
        urls->push_back(std::string(url));
        CHECK(options.timeout == absl::Seconds(5));  // the tool's --timeout default
        return store;
      });
  REQUIRE((registered.ok() || absl::IsAlreadyExists(registered)));
  TempDir dir;
  const std::string json = testing::GenerateCatalogue({.megabytes = 0.3});
  const std::filesystem::path input = dir.path() / "catalogue.json";
  WriteFile(input, json);
  const std::string backend = "--backend=cli-test-mem://user:hunter2@shared/x?y";

  const ToolRun put =
      RunToolInProcess({backend, "--chunk_size=65536", "put", "catalogue", input.string()});
  INFO("put: " << put.out << put.err);
  REQUIRE(put.exit_code == 0);
  CHECK(put.out.rfind("stored catalogue: " + std::to_string(json.size()) + " bytes -> ", 0) == 0);
  CHECK(put.err.empty());
  CHECK(urls->back() == "cli-test-mem://user:hunter2@shared/x?y");

  const ToolRun verify = RunToolInProcess({backend, "verify", "catalogue"});
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.rfind("ok: catalogue: " + std::to_string(json.size()) + " bytes of json", 0) ==
        0);
  const ToolRun inspect = RunToolInProcess({backend, "inspect", "catalogue"});
  INFO("inspect: " << inspect.out << inspect.err);
  CHECK(inspect.exit_code == 0);
  CHECK(inspect.out.find("manifest:       cc:{catalogue}") != std::string::npos);
  CHECK(inspect.out.find("chunk size:     65536 bytes") != std::string::npos);
  CHECK(inspect.out.find("checksum ok:    yes") != std::string::npos);
  const ToolRun get = RunToolInProcess({backend, "get", "catalogue"});
  CHECK(get.exit_code == 0);
  CHECK(get.out == json);

  // A miss names the key, the stored key and the backend's scheme and host: not the password.
  const ToolRun miss = RunToolInProcess({backend, "--prefix=app:", "get", "catalogue"});
  CHECK(miss.exit_code == 3);
  CHECK(miss.err ==
        "chunkcache: get: no such key \"catalogue\" (read app:{catalogue} on "
        "cli-test-mem://shared) [NOT_FOUND]\n");
  // Each call starts from the flags' defaults: --prefix=app: is gone.
  CHECK(RunToolInProcess({backend, "verify", "catalogue"}).exit_code == 0);
  const ToolRun missing = RunToolInProcess({backend, "verify", "absent"});
  CHECK(missing.exit_code == 3);
  CHECK(missing.out ==
        "missing: absent: no such key \"absent\" (read cc:{absent} on cli-test-mem://shared)\n");
  for (const ToolRun* run : {&put, &verify, &inspect, &miss, &missing}) {
    CHECK(run->out.find("hunter2") == std::string::npos);
    CHECK(run->err.find("hunter2") == std::string::npos);
  }

  // An unknown scheme's error names the registered ones; --help still works in process.
  const ToolRun unknown = RunToolInProcess({"--backend=nope://x", "get", "k"});
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err.find("unknown backend scheme \"nope\"") != std::string::npos);
  CHECK(unknown.err.find("cli-test-mem") != std::string::npos);
  const ToolRun help = RunToolInProcess({"--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("--backend (default: memory://)") != std::string::npos);
  CHECK(help.out.find("inspect KEY") != std::string::npos);
}

}  // namespace
}  // namespace chunkcache::testing
