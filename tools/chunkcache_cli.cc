// chunkcache: the operator's command-line tool for entries stored by chunkcache.
//
//   chunkcache --backend=redis://10.0.0.5:6379 put catalogue catalogue.json
//   chunkcache --backend=redis://10.0.0.5:6379 inspect catalogue
//   chunkcache --backend=redis://10.0.0.5:6379 verify catalogue   # exit 0 ok, 2 corrupt, 3 missing
//
// Every command opens the backend named by --backend, runs one ChunkedCache operation (or a few)
// and exits. Errors are one line on stderr, `chunkcache: COMMAND: message`. The usage text below
// lists the commands, flags and exit codes; `chunkcache --help` prints it with every flag.
//
// Descriptors 0-2 are made sure of before anything opens a file or socket (a closed stdout would
// otherwise become the Redis connection, and `get` would send the JSON there as commands); every
// write to stdout is checked, and a failed one is an error exit.

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../examples/common/flags_help.h"
#include "../examples/common/standard_fds.h"
#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/metrics.h"

ABSL_FLAG(std::string, backend, "memory://",
          "Where the entries are: memory:// (an empty in-process store that lives only as long as "
          "this command), redis://[[user]:password@]host[:port][/db], redis+cluster://host:port, "
          "rediss://... (TLS), unix:///path/to/redis.sock"
          "[?db=N], momento+https://ENDPOINT_HOST[:port]/CACHE_NAME (API key from "
          "MOMENTO_API_KEY), or momento+http://127.0.0.1:PORT/CACHE_NAME for a loopback emulator.");
ABSL_FLAG(std::string, ca_bundle, "",
          "A PEM file of CA certificates that verify the server of a rediss:// or momento+https:// "
          "backend; empty: the system's CA store.");
ABSL_FLAG(std::string, prefix, "cc:", "Key prefix of the cache (CacheOptions::key_prefix).");
ABSL_FLAG(std::uint64_t, chunk_size, std::uint64_t{1} << 20,
          "Largest stored item in bytes, for put (CacheOptions::chunk_size): 128 to 536870912 "
          "(512 MiB, the largest value Redis takes by default).");
ABSL_FLAG(std::uint64_t, max_payload_size, chunkcache::CacheOptions{}.max_payload_size,
          "Largest JSON in bytes that put reads and get returns (CacheOptions::max_payload_size, "
          "64 MiB); put reads at most this plus one byte of its input. 1 to 4294967296 (4 GiB).");
ABSL_FLAG(int, level, 3, "zstd compression level for put (1-19; negative for faster).");
ABSL_FLAG(absl::Duration, ttl, absl::Hours(1), "Time to live of an entry written by put.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5),
          "Time allowed for one backend call (Redis connect and command timeout, Momento "
          "deadline).");
ABSL_FLAG(bool, compressed, false,
          "get: write the stored zstd frames instead of the JSON (`zstd -d` decodes them).");
ABSL_FLAG(std::string, output, "", "get: write to this file instead of stdout (also -o FILE).");
ABSL_FLAG(int, count, 10, "bench-get: number of Gets (also -n N).");
ABSL_FLAG(std::string, format, "text", "stats: output format, text, prometheus or emf.");

namespace chunkcache::cli {
namespace {

constexpr char kUsage[] =
    R"(store, read and check chunkcache entries.

usage: chunkcache [flags] COMMAND ARGS...

commands:
  put KEY FILE|-        store the JSON of FILE (- for stdin) under KEY
  get KEY [-o FILE]     write the JSON of KEY to stdout or FILE (--output=FILE);
                        --compressed writes the stored zstd frames instead
  del KEY               remove KEY (absent keys are not an error)
  inspect KEY           describe what is stored under KEY: manifest, sizes, chunks, TTLs
  verify KEY            check every chunk and the checksum, then decode KEY
  stats [KEY...]        get each KEY once, then print the cache's counters
                        (--format=text|prometheus|emf)
  bench-get KEY -n N    get KEY N times (--count=N) and print latency and throughput

exit codes: 0 ok; 1 error (usage, backend); 2 corrupt entry (get, inspect, verify);
            3 no such key (get, inspect, verify)

The default backend, memory://, is empty and lives only for this process: use it to try the
commands, and a redis://, unix:// or momento+https:// backend to reach stored entries.)";

enum ExitCode : int { kExitOk = 0, kExitError = 1, kExitCorrupt = 2, kExitMissing = 3 };

// Largest --chunk_size: Redis refuses larger values by default (proto-max-bulk-len), and the
// backends' reply bounds are sums of item sizes, which must not overflow.
constexpr std::uint64_t kMaxChunkSize = std::uint64_t{512} << 20;
// Largest --max_payload_size: the tool holds a payload in memory, several copies at a time.
constexpr std::uint64_t kMaxPayloadSizeLimit = std::uint64_t{4} << 30;

// Payloads above this get a progress line on a terminal.
constexpr std::size_t kProgressThreshold = 1'000'000;

// Every option a command needs, read from the flags once.
struct Settings {
  std::string backend_url;
  CacheOptions cache_options;
  absl::Duration timeout;
  std::string ca_bundle;
  bool compressed = false;
  std::string output;
  int count = 0;
  std::string format;
};

// `what: strerror(error)`, with the code that errno stands for (ENOENT NotFound, EACCES
// PermissionDenied, ENOSPC ResourceExhausted, ...).
absl::Status ErrnoError(int error, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat(what, ": ", std::strerror(error)));
}

// The tool's standard output. Every write is checked; the first failure is kept and reported by
// Close, so that a command whose output was lost never exits 0. Requires external
// synchronization (the tool has one thread).
class Stdout {
 public:
  // OK if descriptor 1 can take writes. A closed stdout holds EnsureStandardFds' read-only
  // placeholder, so this tells before a command starts that its output would be lost.
  static absl::Status CheckWritable() {
    const int flags = ::fcntl(STDOUT_FILENO, F_GETFL);
    if (flags == -1 || (flags & O_ACCMODE) == O_RDONLY) {
      return absl::FailedPreconditionError("standard output is closed");
    }
    return absl::OkStatus();
  }

  template <typename... Args>
  void Print(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (absl::FPrintF(stdout, format, args...) < 0) Record(errno);
  }

  void Write(absl::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size()) Record(errno);
  }

  // Flushes and closes stdout (a full disk or a broken pipe may show only here); the first write
  // error, if any. Nothing may write to stdout afterwards.
  absl::Status Close() {
    if (std::fflush(stdout) != 0) Record(errno);
    if (std::ferror(stdout) != 0) Record(EIO);  // a failure stdio kept without an errno we saw
    if (std::fclose(stdout) != 0) Record(errno);
    if (error_ == 0) return absl::OkStatus();
    if (error_ == EBADF) return absl::FailedPreconditionError("standard output is closed");
    return ErrnoError(error_, "cannot write standard output");
  }

 private:
  void Record(int error) {
    if (error_ == 0) error_ = error == 0 ? EIO : error;
  }

  int error_ = 0;  // errno of the first failed write
};

// What every command works on: the backend (for its own calls, such as Redis TTLs), a cache and
// the checked stdout.
struct Context {
  std::shared_ptr<Backend> backend;
  ChunkedCache cache;
  Stdout& out;
};

// The message of `status` without the library's "chunkcache: " prefix (the line has it already).
std::string Describe(const absl::Status& status) {
  absl::string_view message = status.message();
  absl::ConsumePrefix(&message, "chunkcache: ");
  return absl::StrCat(message, " [", absl::StatusCodeToString(status.code()), "]");
}

int Fail(absl::string_view command, absl::string_view message, int code = kExitError) {
  absl::FPrintF(stderr, "chunkcache: %s: %s\n", command, message);
  return code;
}

int Fail(absl::string_view command, const absl::Status& status, int code = kExitError) {
  return Fail(command, Describe(status), code);
}

// "2.8 MB": decimal units, as throughput figures are.
std::string HumanBytes(double bytes) {
  if (bytes < 1e3) return absl::StrFormat("%.0f B", bytes);
  if (bytes < 1e6) return absl::StrFormat("%.1f kB", bytes / 1e3);
  if (bytes < 1e9) return absl::StrFormat("%.1f MB", bytes / 1e6);
  return absl::StrFormat("%.2f GB", bytes / 1e9);
}

// A latency with three significant figures or so: "812us", "7.91ms", "1.204s".
std::string HumanLatency(absl::Duration d) {
  const double us = absl::ToDoubleMicroseconds(d);
  if (us < 1e3) return absl::StrFormat("%.0fus", us);
  if (us < 1e6) return absl::StrFormat("%.2fms", us / 1e3);
  return absl::StrFormat("%.3fs", us / 1e6);
}

std::string MegabytesPerSecond(double bytes, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds <= 0) return "- MB/s";
  return absl::StrFormat("%.1f MB/s", bytes / 1e6 / seconds);
}

// A progress line on stderr for long transfers, only when stderr is a terminal.
class Progress {
 public:
  Progress() : enabled_(::isatty(STDERR_FILENO) == 1) {}

  // Shows `what...` until Done or Clear replaces it.
  void Show(absl::string_view what) {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K%s...", what);
  }
  // Replaces the line with `summary`, which stays.
  void Done(absl::string_view summary) {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K%s\n", summary);
  }
  void Clear() {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K");
  }

 private:
  const bool enabled_;
};

// ---- Backends ---------------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<Backend>> OpenBackend(const Settings& settings) {
  const absl::string_view url = settings.backend_url;
  // Reads must accept chunks written with a larger --chunk_size than this command's.
  // No writer cuts chunks above kMaxChunkSize (ValidateSettings).
  const std::size_t chunk_size = settings.cache_options.chunk_size;
  std::size_t max_item_size = std::min<std::size_t>(
      std::max(chunk_size, settings.cache_options.max_payload_size), kMaxChunkSize);
  if (absl::StartsWith(url, "memory:")) max_item_size = std::max(chunk_size, kMinChunkSize);
  // Momento limits key + value: its largest value leaves room for the longest stored key.
  if (absl::StartsWith(url, "momento+")) max_item_size = kMomentoMaxValueBytes;
  return NewBackendFromUrl(std::string_view(url.data(), url.size()),
                           {.timeout = settings.timeout,
                            .max_item_size = max_item_size,
                            .ca_bundle_path = settings.ca_bundle});
}

// ---- Commands ---------------------------------------------------------------------------------

absl::Status TooLarge(absl::string_view name, std::size_t limit) {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s holds more than --max_payload_size (%d bytes): nothing was stored", name, limit));
}

// The bytes of `path` ("-": stdin), at most `limit` of them: one byte more is ResourceExhausted,
// so an endless input (< /dev/zero) costs at most `limit` bytes of memory.
absl::StatusOr<std::string> ReadInput(const std::string& path, std::size_t limit) {
  const bool is_stdin = path == "-";
  const std::string name = is_stdin ? "standard input" : path;
  const int fd = is_stdin ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("cannot open ", path));
  absl::Cleanup close_file = [&] {
    if (!is_stdin) ::close(fd);
  };
  std::string data;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    if (static_cast<std::uint64_t>(st.st_size) > limit) return TooLarge(name, limit);
    data.reserve(static_cast<std::size_t>(st.st_size));
  }
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, std::min(sizeof(buffer), limit + 1 - data.size()));
    if (n > 0) {
      const std::size_t size = data.size() + static_cast<std::size_t>(n);
      if (size > limit) break;
      // Grow by doubling, but never past the limit (a string's own doubling would reach 2x).
      if (size > data.capacity())
        data.reserve(std::min(limit, std::max(size, 2 * data.capacity())));
      data.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      return data;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // A non-blocking descriptor inherited from the caller: wait for input as a blocking one
      // would.
      pollfd readable{fd, POLLIN, 0};
      ::poll(&readable, 1, -1);
    } else if (errno == EBADF && is_stdin) {
      // Closed when the tool started: EnsureStandardFds left a write-only placeholder.
      return absl::FailedPreconditionError("cannot read standard input: it is closed");
    } else if (errno != EINTR) {
      return ErrnoError(errno, absl::StrCat("cannot read ", name));
    }
  }
  return TooLarge(name, limit);
}

// NotFound naming the directory `path` would go into, if that directory does not exist (or
// FailedPrecondition if it is not a directory); OK otherwise, including when the check fails.
absl::Status CheckOutputDirectory(const std::string& path) {
  std::filesystem::path directory = std::filesystem::path(path).parent_path();
  if (directory.empty()) return absl::OkStatus();  // the working directory
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(directory, error);
  if (status.type() == std::filesystem::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("cannot write ", path, ": the directory ",
                                            directory.string(), " does not exist"));
  }
  if (!error && status.type() != std::filesystem::file_type::directory) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path, ": ", directory.string(), " is not a directory"));
  }
  return absl::OkStatus();
}

// Writes `bytes` to the file `path`, created or truncated.
absl::Status WriteFile(absl::string_view bytes, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      if (absl::Status missing = CheckOutputDirectory(path); !missing.ok()) return missing;
    }
    return ErrnoError(error, absl::StrCat("cannot open ", path, " for writing"));
  }
  int error = 0;
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n >= 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno != EINTR) {
      error = errno;
      break;
    }
  }
  // close reports what a network file system delayed.
  if (::close(fd) != 0 && error == 0 && errno != EINTR) error = errno;
  if (error != 0) return ErrnoError(error, absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

int Put(Context& context, const Settings& settings, const std::string& key,
        const std::string& path) {
  absl::StatusOr<std::string> json = ReadInput(path, settings.cache_options.max_payload_size);
  if (!json.ok()) return Fail("put", json.status());
  Progress progress;
  const bool large = json->size() > kProgressThreshold;
  if (large) progress.Show(absl::StrCat("put ", key, ": ", HumanBytes(json->size()), " json"));
  const absl::Time start = absl::Now();
  const absl::Status stored = context.cache.Put(key, *json);
  const absl::Duration elapsed = absl::Now() - start;
  if (!stored.ok()) {
    progress.Clear();
    return Fail("put", stored);
  }
  absl::StatusOr<EntryInfo> info = context.cache.Inspect(key);
  if (large) {
    progress.Done(absl::StrCat(
        "put ", key, ": ", HumanBytes(json->size()), " json",
        info.ok() ? absl::StrCat(" -> ", HumanBytes(info->stored_size)) : std::string(), " in ",
        HumanLatency(elapsed), " (", MegabytesPerSecond(json->size(), elapsed), " of json)"));
  }
  if (!info.ok()) {
    // Stored all the same; an eventually consistent backend may not show it yet.
    context.out.Print("stored %s: %d bytes\n", key, json->size());
    absl::FPrintF(stderr, "chunkcache: put: stored, but inspecting it failed: %s\n",
                  Describe(info.status()));
    return kExitOk;
  }
  if (info->is_inline) {
    context.out.Print("stored %s: %d bytes -> %d bytes inline in the manifest (generation %016x)\n",
                      key, info->raw_size, info->stored_size, info->generation);
  } else {
    context.out.Print("stored %s: %d bytes -> %d bytes in %d chunks (generation %016x)\n", key,
                      info->raw_size, info->stored_size, info->chunks.size(), info->generation);
  }
  return kExitOk;
}

// The exit code of a failed read: a NotFound after the cache found the entry corrupt is
// "corrupt", any other NotFound "missing".
int ReadFailureCode(const ChunkedCache& cache, const absl::Status& status) {
  if (!absl::IsNotFound(status)) return kExitError;
  return cache.Stats().corrupt_reads > 0 ? kExitCorrupt : kExitMissing;
}

int Get(Context& context, const Settings& settings, const std::string& key) {
  // A missing directory shows before the read, which may be long.
  if (!settings.output.empty()) {
    if (absl::Status s = CheckOutputDirectory(settings.output); !s.ok()) return Fail("get", s);
  }
  Progress progress;
  progress.Show(absl::StrCat("get ", key));
  const absl::Time start = absl::Now();
  absl::string_view bytes;
  std::string summary;
  Bytes json;
  CompressedPayload compressed;
  if (settings.compressed) {
    absl::StatusOr<CompressedPayload> got = context.cache.GetCompressed(key);
    if (!got.ok()) {
      progress.Clear();
      return Fail("get", got.status(), ReadFailureCode(context.cache, got.status()));
    }
    compressed = *std::move(got);
    bytes = *compressed.zstd;
    summary = absl::StrCat(HumanBytes(compressed.zstd->size()), " compressed, ",
                           HumanBytes(compressed.raw_size), " json");
  } else {
    absl::StatusOr<Bytes> got = context.cache.Get(key);
    if (!got.ok()) {
      progress.Clear();
      return Fail("get", got.status(), ReadFailureCode(context.cache, got.status()));
    }
    json = *std::move(got);
    bytes = *json;
    summary = absl::StrCat(HumanBytes(json->size()), " json");
  }
  const absl::Duration elapsed = absl::Now() - start;
  if (bytes.size() > kProgressThreshold) {
    progress.Done(absl::StrCat("get ", key, ": ", summary, " in ", HumanLatency(elapsed), " (",
                               MegabytesPerSecond(bytes.size(), elapsed), ")"));
  } else {
    progress.Clear();
  }
  if (settings.output.empty()) {
    context.out.Write(bytes);  // a failure is reported when main closes stdout
  } else if (absl::Status written = WriteFile(bytes, settings.output); !written.ok()) {
    return Fail("get", written);
  }
  return kExitOk;
}

int Delete(Context& context, const std::string& key) {
  if (absl::Status s = context.cache.Invalidate(key); !s.ok()) return Fail("del", s);
  context.out.Print("deleted %s\n", key);
  return kExitOk;
}

// Whole seconds: "1h2m3s", "0s".
std::string WholeSeconds(absl::Duration d) {
  d = absl::Trunc(d, absl::Seconds(1));
  return d == absl::ZeroDuration() ? "0s" : absl::FormatDuration(d);
}

// "59m59s", "no expiry" or "absent", from one TimeToLive answer.
std::string DescribeTtl(const std::optional<absl::Duration>& ttl) {
  if (!ttl.has_value()) return "absent";
  if (*ttl == absl::InfiniteDuration()) return "no expiry";
  return WholeSeconds(*ttl);
}

int Inspect(Context& context, const std::string& key) {
  absl::StatusOr<EntryInfo> info = context.cache.Inspect(key);
  if (!info.ok()) {
    const absl::StatusCode code = info.status().code();
    return Fail("inspect", info.status(),
                code == absl::StatusCode::kNotFound   ? kExitMissing
                : code == absl::StatusCode::kDataLoss ? kExitCorrupt
                                                      : kExitError);
  }
  // Remaining TTLs: the manifest's first, then each chunk's, when the backend can tell.
  std::optional<std::vector<std::optional<absl::Duration>>> ttls;
  std::string ttl_note = "not reported by this backend";
  if (auto* redis = dynamic_cast<RedisBackend*>(context.backend.get()); redis != nullptr) {
    std::vector<std::string_view> keys = {info->manifest_key};
    for (const ChunkInfo& chunk : info->chunks) keys.push_back(chunk.key);
    absl::StatusOr<std::vector<std::optional<absl::Duration>>> got = redis->TimeToLive(keys);
    if (got.ok() && got->size() == keys.size()) {
      ttls = *std::move(got);
    } else {
      ttl_note = absl::StrCat("unavailable: ", got.ok() ? "short reply" : Describe(got.status()));
    }
  }

  const absl::Time now = absl::Now();
  context.out.Print("%-16s%s\n", "key:", key);
  context.out.Print("%-16s%s (%d bytes)\n", "manifest:", info->manifest_key, info->manifest_size);
  context.out.Print("%-16s%d\n", "format version:", info->format_version);
  context.out.Print("%-16s%016x\n", "generation:", info->generation);
  context.out.Print("%-16s%d bytes (%s)\n", "raw size:", info->raw_size,
                    HumanBytes(info->raw_size));
  context.out.Print("%-16s%d bytes (%s)\n", "stored size:", info->stored_size,
                    HumanBytes(info->stored_size));
  context.out.Print(
      "%-16s%.2fx\n", "ratio:",
      info->stored_size == 0 ? 0.0 : static_cast<double>(info->raw_size) / info->stored_size);
  context.out.Print("%-16s%d bytes\n", "chunk size:", info->chunk_size);
  context.out.Print("%-16s%d of %d bytes (independent zstd frames)\n", "frames:", info->frame_count,
                    info->frame_size);
  context.out.Print("%-16s%016x (xxh3-64 of the %s)\n", "checksum:", info->checksum,
                    info->format_version >= 3 ? "frame table" : "stored bytes");
  context.out.Print("%-16s%s (age %s)\n", "created:",
                    absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", info->created, absl::UTCTimeZone()),
                    WholeSeconds(now - info->created));
  if (info->is_inline) {
    context.out.Print("%-16s%s\n", "layout:", "inline (the payload is in the manifest, no chunks)");
  } else {
    context.out.Print("%-16s%s\n",
                      "layout:", absl::StrFormat("chunked, %d chunks", info->chunks.size()));
    std::size_t key_width = 0;
    for (const ChunkInfo& chunk : info->chunks) key_width = std::max(key_width, chunk.key.size());
    for (std::size_t i = 0; i < info->chunks.size(); ++i) {
      const ChunkInfo& chunk = info->chunks[i];
      const std::string actual =
          chunk.actual_size.has_value() ? absl::StrCat(*chunk.actual_size) : "MISSING";
      const char* verdict = !chunk.actual_size.has_value()              ? "MISSING"
                            : *chunk.actual_size != chunk.expected_size ? "WRONG SIZE"
                                                                        : "ok";
      std::string line = absl::StrFormat("  chunk %-4d %-*s  expected %8d  actual %8s  %-10s", i,
                                         static_cast<int>(key_width), chunk.key,
                                         chunk.expected_size, actual, verdict);
      if (ttls.has_value()) absl::StrAppend(&line, "  ttl ", DescribeTtl((*ttls)[i + 1]));
      context.out.Print("%s\n", absl::StripTrailingAsciiWhitespace(line));
    }
  }
  context.out.Print("%-16s%s\n", "complete:", info->complete ? "yes" : "NO");
  context.out.Print("%-16s%s\n", "checksum ok:", info->checksum_ok ? "yes" : "NO");
  if (ttls.has_value()) {
    context.out.Print("%-16smanifest %s%s\n", "ttl:", DescribeTtl((*ttls)[0]),
                      info->chunks.empty() ? "" : ", chunks as listed above");
  } else {
    context.out.Print("%-16s%s\n", "ttl:", ttl_note);
  }
  return info->checksum_ok ? kExitOk : kExitCorrupt;
}

// What is wrong with an inspected entry, or nothing.
std::optional<std::string> FindDamage(const EntryInfo& info) {
  for (std::size_t i = 0; i < info.chunks.size(); ++i) {
    const ChunkInfo& chunk = info.chunks[i];
    if (!chunk.actual_size.has_value()) {
      return absl::StrFormat("chunk %d (%s) is missing", i, chunk.key);
    }
    if (*chunk.actual_size != chunk.expected_size) {
      return absl::StrFormat("chunk %d (%s) is %d bytes, the manifest says %d", i, chunk.key,
                             *chunk.actual_size, chunk.expected_size);
    }
  }
  if (!info.checksum_ok) return std::string("checksum mismatch: the stored bytes are damaged");
  return std::nullopt;
}

int Verify(Context& context, const std::string& key) {
  absl::StatusOr<EntryInfo> info = context.cache.Inspect(key);
  if (absl::IsNotFound(info.status())) {
    context.out.Print("missing: %s: no such key\n", key);
    return kExitMissing;
  }
  if (absl::IsDataLoss(info.status())) {
    context.out.Print("corrupt: %s: the manifest cannot be decoded: %s\n", key,
                      Describe(info.status()));
    return kExitCorrupt;
  }
  if (!info.ok()) return Fail("verify", info.status());
  if (std::optional<std::string> damage = FindDamage(*info)) {
    context.out.Print("corrupt: %s: %s\n", key, *damage);
    return kExitCorrupt;
  }
  absl::StatusOr<Bytes> json = context.cache.Get(key);
  if (!json.ok()) {
    const int code = ReadFailureCode(context.cache, json.status());
    if (code == kExitError) return Fail("verify", json.status());
    context.out.Print("%s: %s: %s\n", code == kExitCorrupt ? "corrupt" : "missing", key,
                      Describe(json.status()));
    return code;
  }
  context.out.Print(
      "ok: %s: %d bytes of json from %d stored bytes in %d chunks, checksum ok, decoded\n", key,
      (*json)->size(), info->stored_size, info->chunks.size());
  return kExitOk;
}

// The value at `fraction` (0..1) of `sorted`, by nearest rank.
absl::Duration Percentile(const std::vector<absl::Duration>& sorted, double fraction) {
  if (sorted.empty()) return absl::ZeroDuration();
  std::size_t rank = static_cast<std::size_t>(fraction * sorted.size() + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

int BenchGet(Context& context, const Settings& settings, const std::string& key) {
  if (settings.count <= 0) return Fail("bench-get", "--count (-n) must be at least 1");
  std::vector<absl::Duration> latencies;
  latencies.reserve(settings.count);
  std::uint64_t errors = 0;
  std::uint64_t json_bytes = 0;
  absl::Status first_error;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < settings.count; ++i) {
    const auto before = std::chrono::steady_clock::now();
    absl::StatusOr<Bytes> json = context.cache.Get(key);
    latencies.push_back(absl::FromChrono(std::chrono::steady_clock::now() - before));
    if (json.ok()) {
      json_bytes += (*json)->size();
    } else {
      ++errors;
      if (first_error.ok()) first_error = json.status();
    }
  }
  const absl::Duration total = absl::FromChrono(std::chrono::steady_clock::now() - start);
  absl::Duration sum;
  for (absl::Duration d : latencies) sum += d;
  std::sort(latencies.begin(), latencies.end());
  context.out.Print("bench-get %s: %d gets, %d errors, %d bytes of json in %s\n", key,
                    latencies.size(), errors, json_bytes, HumanLatency(total));
  context.out.Print("latency: mean %s  p50 %s  p90 %s  p99 %s  max %s\n",
                    HumanLatency(sum / static_cast<int64_t>(latencies.size())),
                    HumanLatency(Percentile(latencies, 0.50)),
                    HumanLatency(Percentile(latencies, 0.90)),
                    HumanLatency(Percentile(latencies, 0.99)), HumanLatency(latencies.back()));
  context.out.Print("throughput: %s of json\n", MegabytesPerSecond(json_bytes, total));
  if (errors > 0) {
    return Fail("bench-get", absl::StrCat(errors, " of ", latencies.size(),
                                          " gets failed, the first with: ", Describe(first_error)));
  }
  return kExitOk;
}

std::string LatencyLine(const LatencyStats& l) {
  return absl::StrFormat("count %d  mean %s  p50 %s  p90 %s  p99 %s  max %s", l.count,
                         HumanLatency(l.mean), HumanLatency(l.p50), HumanLatency(l.p90),
                         HumanLatency(l.p99), HumanLatency(l.max));
}

std::string StatsText(const CacheStats& s) {
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"gets", s.gets},
      {"hits", s.hits},
      {"misses", s.misses},
      {"puts", s.puts},
      {"put_errors", s.put_errors},
      {"invalidates", s.invalidates},
      {"loads", s.loads},
      {"load_errors", s.load_errors},
      {"coalesced", s.coalesced},
      {"wait_timeouts", s.wait_timeouts},
      {"fallbacks", s.fallbacks},
      {"l1_hits", s.l1_hits},
      {"l1_revalidations", s.l1_revalidations},
      {"l1_evictions", s.l1_evictions},
      {"l1_bytes", s.l1_bytes},
      {"stale_served", s.stale_served},
      {"refreshes", s.refreshes},
      {"refresh_errors", s.refresh_errors},
      {"refreshes_dropped", s.refreshes_dropped},
      {"leases_won", s.leases_won},
      {"leases_waited", s.leases_waited},
      {"lease_wait_hits", s.lease_wait_hits},
      {"lease_wait_loads", s.lease_wait_loads},
      {"breaker_open", s.breaker_open ? 1u : 0u},
      {"breaker_opens", s.breaker_opens},
      {"breaker_rejections", s.breaker_rejections},
      {"compressed_gets", s.compressed_gets},
      {"corrupt_reads", s.corrupt_reads},
      {"torn_retries", s.torn_retries},
      {"backend_calls", s.backend_calls},
      {"backend_errors", s.backend_errors},
      {"chunks_read", s.chunks_read},
      {"chunks_written", s.chunks_written},
      {"bytes_put_raw", s.bytes_put_raw},
      {"bytes_written", s.bytes_written},
      {"bytes_read", s.bytes_read},
      {"bytes_returned", s.bytes_returned},
  };
  std::string text;
  for (const auto& [name, value] : counters) {
    absl::StrAppendFormat(&text, "%-20s = %d\n", name, value);
  }
  absl::StrAppendFormat(&text, "%-20s = %s\n", "get_latency", LatencyLine(s.get_latency));
  absl::StrAppendFormat(&text, "%-20s = %s\n", "put_latency", LatencyLine(s.put_latency));
  absl::StrAppendFormat(&text, "%-20s = %s\n", "load_latency", LatencyLine(s.load_latency));
  return text;
}

// The stats in `format`: text, prometheus or emf.
absl::StatusOr<std::string> FormatStats(const CacheStats& stats, absl::string_view format) {
  if (format == "text") return StatsText(stats);
  if (format == "prometheus") return ToPrometheusText(stats);
  if (format == "emf") {
    absl::StatusOr<std::string> line = ToCloudWatchEmf(stats);
    if (line.ok()) line->push_back('\n');
    return line;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --format '", format, "': use text, prometheus or emf"));
}

// A miss is not an error here: the counters show it.
int Stats(Context& context, const Settings& settings, const std::vector<std::string>& keys) {
  if (settings.format != "text" && settings.format != "prometheus" && settings.format != "emf") {
    return Fail("stats", absl::StrCat("unknown --format '", settings.format,
                                      "': use text, prometheus or emf"));
  }
  int code = kExitOk;
  for (const std::string& key : keys) {
    absl::StatusOr<Bytes> json = context.cache.Get(key);
    if (!json.ok() && !absl::IsNotFound(json.status())) {
      code = Fail("stats", absl::StrCat(key, ": ", Describe(json.status())));
    }
  }
  absl::StatusOr<std::string> text = FormatStats(context.cache.Stats(), settings.format);
  if (!text.ok()) return Fail("stats", text.status());
  context.out.Print("%s", *text);
  return code;
}

// ---- Command line -----------------------------------------------------------------------------

// Rewrites the short options absl flags cannot take, `-o FILE` and `-n N`, into --output=FILE and
// --count=N, and -h into --help. Stops at "--", after which everything is an argument.
std::vector<char*> ExpandShortOptions(int argc, char** argv, std::vector<std::string>& storage) {
  storage.reserve(argc);
  std::vector<char*> expanded;
  for (int i = 0; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--") {
      for (; i < argc; ++i) expanded.push_back(argv[i]);
      break;
    }
    if (i > 0 && (arg == "-o" || arg == "-n") && has_value) {
      storage.push_back(absl::StrCat(arg == "-o" ? "--output=" : "--count=", argv[++i]));
      expanded.push_back(storage.back().data());
    } else if (i > 0 && arg == "-h") {
      storage.push_back("--help");
      expanded.push_back(storage.back().data());
    } else {
      expanded.push_back(argv[i]);
    }
  }
  return expanded;
}

Settings ReadSettings() {
  Settings settings;
  settings.backend_url = absl::GetFlag(FLAGS_backend);
  settings.cache_options.key_prefix = absl::GetFlag(FLAGS_prefix);
  settings.cache_options.chunk_size = absl::GetFlag(FLAGS_chunk_size);
  settings.cache_options.max_payload_size = absl::GetFlag(FLAGS_max_payload_size);
  settings.cache_options.compression_level = absl::GetFlag(FLAGS_level);
  settings.cache_options.ttl = absl::GetFlag(FLAGS_ttl);
  settings.timeout = absl::GetFlag(FLAGS_timeout);
  settings.ca_bundle = absl::GetFlag(FLAGS_ca_bundle);
  settings.compressed = absl::GetFlag(FLAGS_compressed);
  settings.output = absl::GetFlag(FLAGS_output);
  settings.count = absl::GetFlag(FLAGS_count);
  settings.format = absl::GetFlag(FLAGS_format);
  return settings;
}

// InvalidArgument for sizes the tool refuses: a chunk size outside kMinChunkSize..kMaxChunkSize
// (18446744073709551615 would overflow the backends' reply bounds) or a payload bound outside
// 1..kMaxPayloadSizeLimit.
absl::Status ValidateSettings(const Settings& settings) {
  const std::uint64_t chunk_size = settings.cache_options.chunk_size;
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize) {
    return absl::InvalidArgumentError(absl::StrFormat("--chunk_size=%d is outside %d..%d bytes",
                                                      chunk_size, kMinChunkSize, kMaxChunkSize));
  }
  const std::uint64_t max_payload_size = settings.cache_options.max_payload_size;
  if (max_payload_size < 1 || max_payload_size > kMaxPayloadSizeLimit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--max_payload_size=%d is outside 1..%d bytes", max_payload_size, kMaxPayloadSizeLimit));
  }
  return absl::OkStatus();
}

// The usage line of each command, for argument count errors.
absl::string_view CommandUsage(absl::string_view command) {
  if (command == "put") return "put KEY FILE|-";
  if (command == "get") return "get KEY [-o FILE] [--compressed]";
  if (command == "bench-get") return "bench-get KEY [-n N]";
  if (command == "stats") return "stats [KEY...] [--format=text|prometheus|emf]";
  return "";
}

int Run(const std::vector<std::string>& args, Stdout& out) {
  if (args.empty()) {
    absl::FPrintF(stderr, "chunkcache: no command given (see chunkcache --help)\n");
    return kExitError;
  }
  const std::string& command = args[0];
  const std::size_t arity = args.size() - 1;
  const bool known = command == "put" || command == "get" || command == "del" ||
                     command == "inspect" || command == "verify" || command == "stats" ||
                     command == "bench-get";
  if (!known) {
    absl::FPrintF(stderr, "chunkcache: unknown command '%s' (see chunkcache --help)\n", command);
    return kExitError;
  }
  const bool arity_ok = command == "put" ? arity == 2 : command == "stats" ? true : arity == 1;
  if (!arity_ok) {
    absl::string_view usage = CommandUsage(command);
    return Fail(command,
                absl::StrCat("usage: chunkcache ",
                             usage.empty() ? absl::StrCat(command, " KEY") : std::string(usage)));
  }

  const Settings settings = ReadSettings();
  if (absl::Status valid = ValidateSettings(settings); !valid.ok()) return Fail(command, valid);
  // Every command but `get -o FILE` reports on stdout: without it, do nothing rather than
  // something whose outcome is lost.
  if (command != "get" || settings.output.empty()) {
    if (absl::Status writable = Stdout::CheckWritable(); !writable.ok()) {
      return Fail(command, absl::FailedPreconditionError(
                               absl::StrCat(writable.message(), ": nothing was done")));
    }
  }
  absl::StatusOr<std::shared_ptr<Backend>> backend = OpenBackend(settings);
  if (!backend.ok()) return Fail(command, backend.status());
  Context context{*backend, ChunkedCache(*backend, settings.cache_options), out};

  if (command == "put") return Put(context, settings, args[1], args[2]);
  if (command == "get") return Get(context, settings, args[1]);
  if (command == "del") return Delete(context, args[1]);
  if (command == "inspect") return Inspect(context, args[1]);
  if (command == "verify") return Verify(context, args[1]);
  if (command == "bench-get") return BenchGet(context, settings, args[1]);
  return Stats(context, settings, {args.begin() + 1, args.end()});
}

}  // namespace
}  // namespace chunkcache::cli

int main(int argc, char** argv) {
  // Before anything opens a file or socket, which would otherwise take a closed 0, 1 or 2.
  if (!chunkcache::examples::EnsureStandardFds()) {
    absl::FPrintF(stderr, "chunkcache: cannot open /dev/null for a closed standard descriptor\n");
    return chunkcache::cli::kExitError;
  }
  absl::SetProgramUsageMessage(chunkcache::cli::kUsage);
  // --help lists the flags of this file (absl's default wants the file named after the binary).
  chunkcache::examples::ConfigureFlagsUsage("chunkcache", "chunkcache_cli");

  std::vector<std::string> storage;
  std::vector<char*> expanded = chunkcache::cli::ExpandShortOptions(argc, argv, storage);
  chunkcache::cli::Stdout out;
  std::string command = "--help";
  int code = chunkcache::cli::kExitOk;
  if (chunkcache::examples::WantsHelp(expanded)) {
    out.Print("%s", chunkcache::examples::FlagsHelp("chunkcache", "chunkcache_cli"));
  } else {
    const std::vector<char*> positional =
        absl::ParseCommandLine(static_cast<int>(expanded.size()), expanded.data());
    const std::vector<std::string> args(positional.begin() + 1, positional.end());
    command = args.empty() ? "" : args[0];
    code = chunkcache::cli::Run(args, out);
  }
  if (const absl::Status closed = out.Close(); !closed.ok()) {
    if (command.empty()) {
      absl::FPrintF(stderr, "chunkcache: %s\n", chunkcache::cli::Describe(closed));
    } else {
      chunkcache::cli::Fail(command, closed);
    }
    if (code == chunkcache::cli::kExitOk) code = chunkcache::cli::kExitError;
  }
  return code;
}
