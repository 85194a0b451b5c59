// The chunkcache tool (chunkcache/tool.h: RunTool): the operator's command-line tool for entries
// stored by chunkcache. tools/chunkcache_cli.cc is its main; a user's main may register backend
// schemes first.
//
//   chunkcache --backend=redis://10.0.0.5:6379 put catalogue catalogue.json
//   chunkcache --backend=redis://10.0.0.5:6379 inspect catalogue
//   chunkcache --backend=redis://10.0.0.5:6379 verify catalogue   # exit 0 ok, 2 corrupt, 3 missing
//
// Every command opens the backend named by --backend, runs one ChunkedCache operation (or a few)
// and exits. Errors are one line on stderr, `chunkcache: COMMAND: message`. The usage text below
// lists the commands, flags and exit codes; `chunkcache --help` prints it with every flag.
//
// The backend is NewBackendFromUrl(--backend): a built-in scheme or one registered with
// RegisterBackendScheme. A miss names the logical key, the stored key read and the backend
// (scheme and host: never its user or password).
//
// Descriptors 0-2 are made sure of before anything opens a file or socket (a closed stdout would
// otherwise become the Redis connection, and `get` would send the JSON there as commands); every
// write to stdout is checked, and a failed one is an error exit.
//
// Its parts: this file (flags, commands, RunTool), tool/io.h (stdout, progress, files) and
// tool/text.h (figures, backend names, stats).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/metrics.h"
#include "chunkcache/tool.h"
#include "examples/common/flags_help.h"
#include "examples/common/standard_fds.h"
#include "format/keys.h"
#include "tool/io.h"
#include "tool/text.h"

ABSL_FLAG(std::string, backend, "memory://",
          "Where the entries are: memory:// (an empty in-process store that lives only as long as "
          "this command), redis://[[user]:password@]host[:port][/db], redis+cluster://host:port, "
          "rediss://... (TLS), unix:///path/to/redis.sock"
          "[?db=N], momento+https://ENDPOINT_HOST[:port]/CACHE_NAME (API key from "
          "MOMENTO_API_KEY), or momento+http://127.0.0.1:PORT/CACHE_NAME for a loopback emulator; "
          "also a scheme the program registered (RegisterBackendScheme).");
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

// The source file of the flags above, for --help (FlagsHelp lists the flags of this file).
constexpr char kFlagsFile[] = "chunkcache_tool.cc";
// The flags above, set back to their defaults before each RunTool.
constexpr const char* kFlagNames[] = {"backend",          "ca_bundle", "prefix", "chunk_size",
                                      "max_payload_size", "level",     "ttl",    "timeout",
                                      "compressed",       "output",    "count",  "format"};

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

// What every command works on: the backend (for its own calls, such as Redis TTLs), a cache and
// the checked stdout; for messages, the backend's scheme and host (DescribeBackend) and the key
// prefix.
struct Context {
  std::shared_ptr<Backend> backend;
  ChunkedCache cache;
  Stdout& out;
  std::string backend_name;
  std::string key_prefix;
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

// The message of a miss (a NotFound `status`) for `key`, with the stored key read (the manifest's,
// src/format/keys.h) and the backend: `no such key "catalogue" (read cc:{catalogue} on
// redis://127.0.0.1:6379) [NOT_FOUND]`. A miss for another reason (an entry replaced while it
// was read) keeps its own message before the parenthesis.
std::string DescribeMiss(const Context& context, absl::string_view key,
                         const absl::Status& status) {
  absl::string_view message = status.message();
  absl::ConsumePrefix(&message, "chunkcache: ");
  const std::string quoted = absl::StrCat("\"", absl::CHexEscape(key), "\"");
  const std::string what = message == "no such key" ? absl::StrCat("no such key ", quoted)
                                                    : absl::StrCat(message, ": key ", quoted);
  const internal::StoredKeys stored(
      std::string_view(context.key_prefix.data(), context.key_prefix.size()),
      std::string_view(key.data(), key.size()));
  return absl::StrCat(what, " (read ", stored.manifest(), " on ", context.backend_name, ") [",
                      absl::StatusCodeToString(status.code()), "]");
}

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

// Reports a failed get of `key`; a miss names what was read where (DescribeMiss).
int FailRead(const Context& context, const std::string& key, const absl::Status& status) {
  const int code = ReadFailureCode(context.cache, status);
  if (code == kExitMissing) return Fail("get", DescribeMiss(context, key, status), code);
  return Fail("get", status, code);
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
      return FailRead(context, key, got.status());
    }
    compressed = *std::move(got);
    bytes = *compressed.zstd;
    summary = absl::StrCat(HumanBytes(compressed.zstd->size()), " compressed, ",
                           HumanBytes(compressed.raw_size), " json");
  } else {
    absl::StatusOr<Bytes> got = context.cache.Get(key);
    if (!got.ok()) {
      progress.Clear();
      return FailRead(context, key, got.status());
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

int Inspect(Context& context, const std::string& key) {
  absl::StatusOr<EntryInfo> info = context.cache.Inspect(key);
  if (!info.ok()) {
    const absl::StatusCode code = info.status().code();
    if (code == absl::StatusCode::kNotFound) {
      return Fail("inspect", DescribeMiss(context, key, info.status()), kExitMissing);
    }
    return Fail("inspect", info.status(),
                code == absl::StatusCode::kDataLoss ? kExitCorrupt : kExitError);
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

// `message` without its trailing " [CODE]": verify's lines say "missing" instead.
std::string StripCode(std::string message) {
  if (const std::size_t at = message.rfind(" ["); at != std::string::npos) message.resize(at);
  return message;
}

int Verify(Context& context, const std::string& key) {
  absl::StatusOr<EntryInfo> info = context.cache.Inspect(key);
  if (absl::IsNotFound(info.status())) {
    context.out.Print("missing: %s: %s\n", key,
                      StripCode(DescribeMiss(context, key, info.status())));
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
                      code == kExitCorrupt ? Describe(json.status())
                                           : StripCode(DescribeMiss(context, key, json.status())));
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
  Context context{*backend, ChunkedCache(*backend, settings.cache_options), out,
                  DescribeBackend(settings.backend_url), settings.cache_options.key_prefix};

  if (command == "put") return Put(context, settings, args[1], args[2]);
  if (command == "get") return Get(context, settings, args[1]);
  if (command == "del") return Delete(context, args[1]);
  if (command == "inspect") return Inspect(context, args[1]);
  if (command == "verify") return Verify(context, args[1]);
  if (command == "bench-get") return BenchGet(context, settings, args[1]);
  return Stats(context, settings, {args.begin() + 1, args.end()});
}

// Sets the tool's flags back to their defaults, so that each RunTool starts as a new process
// would (absl's flags are process-wide).
void ResetFlags() {
  for (const char* name : kFlagNames) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag != nullptr) flag->ParseFrom(flag->DefaultValue(), &error);
  }
}

// absl's usage message is set once per process (a second SetProgramUsageMessage is fatal); a
// program that set its own keeps it.
void SetUsageMessage() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (absl::StartsWith(absl::ProgramUsageMessage(), "Warning: SetProgramUsageMessage() never")) {
      absl::SetProgramUsageMessage(kUsage);
    }
  });
}

// The tool's main (RunTool).
int Main(int argc, char** argv) {
  // Before anything opens a file or socket, which would otherwise take a closed 0, 1 or 2.
  if (!examples::EnsureStandardFds()) {
    absl::FPrintF(stderr, "chunkcache: cannot open /dev/null for a closed standard descriptor\n");
    return kExitError;
  }
  SetUsageMessage();
  // --help lists the flags of this file (absl's default wants the file named after the binary).
  examples::ConfigureFlagsUsage("chunkcache", kFlagsFile);
  ResetFlags();
  std::clearerr(stdout);  // an earlier failure in this process is not this command's

  std::vector<std::string> storage;
  std::vector<char*> expanded = ExpandShortOptions(argc, argv, storage);
  Stdout out;
  std::string command = "--help";
  int code = kExitOk;
  if (examples::WantsHelp(expanded)) {
    out.Print("%s", examples::FlagsHelp("chunkcache", kFlagsFile));
  } else {
    const std::vector<char*> positional =
        absl::ParseCommandLine(static_cast<int>(expanded.size()), expanded.data());
    const std::vector<std::string> args(positional.begin() + 1, positional.end());
    command = args.empty() ? "" : args[0];
    code = Run(args, out);
  }
  if (const absl::Status finished = out.Finish(); !finished.ok()) {
    if (command.empty()) {
      absl::FPrintF(stderr, "chunkcache: %s\n", Describe(finished));
    } else {
      Fail(command, finished);
    }
    if (code == kExitOk) code = kExitError;
  }
  return code;
}

}  // namespace
}  // namespace chunkcache::cli

namespace chunkcache {

int RunTool(int argc, char** argv) { return cli::Main(argc, argv); }

}  // namespace chunkcache
