// chunkcache_loadgen: the launch night, reproduced.
//
// An open-loop load generator: requests from U users arrive by the clock (constant interval or
// Poisson) at a target rate, wait in a bounded queue for a pool of workers, and ask for a large
// JSON document through ChunkedCache::GetOrLoad (or GetCompressed, for a service that ships zstd
// bytes; or GetStream, for one that writes each piece out as it comes) over any backend. Each
// request's latency, and its time to the first byte, run from its scheduled time, not from when a
// worker picked it up, so a stall shows as latency (no coordinated omission); a full queue drops
// requests and counts them. --mode=both runs the same load against what one would write without
// the library — the uncompressed JSON as one value per key, no single-flight — and prints the two
// side by side. --rate_sweep finds the highest rate whose p99 stays under a bound.
//
// Run with --help for the flags. Output: a table on stdout, --json=FILE with everything, and
// --plot=FILE.png, drawn from that JSON by bench/plot_loadgen.py (matplotlib): latency percentiles
// and throughput per second, and with a sweep, latency against offered rate.

#include <hiredis/hiredis.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backends/redis/url.h"
#include "bench_flags.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/momento_emulator.h"
#include "fixtures/process.h"
#include "fixtures/redis_server.h"
#include "internal/json.h"
#include "metrics/latency_histogram.h"

namespace {

// How requests arrive: independent users (exponential gaps) or a constant interval.
enum class Arrival { kUniform, kPoisson };

bool AbslParseFlag(absl::string_view text, Arrival* arrival, std::string* error) {
  if (text != "uniform" && text != "poisson") {
    *error = "not poisson or uniform";
    return false;
  }
  *arrival = text == "uniform" ? Arrival::kUniform : Arrival::kPoisson;
  return true;
}

std::string AbslUnparseFlag(Arrival arrival) {
  return arrival == Arrival::kUniform ? "uniform" : "poisson";
}

// How a request reads the catalogue: the whole of it (GetOrLoad), or piece by piece (GetStream).
enum class ReadMode { kGet, kStream };

bool AbslParseFlag(absl::string_view text, ReadMode* read, std::string* error) {
  if (text != "get" && text != "stream") {
    *error = "not get or stream";
    return false;
  }
  *read = text == "get" ? ReadMode::kGet : ReadMode::kStream;
  return true;
}

std::string AbslUnparseFlag(ReadMode read) { return read == ReadMode::kGet ? "get" : "stream"; }

// --rate_sweep=FROM:TO:STEP, in requests per second; empty (step 0) when not given.
struct RateSweep {
  double from = 0, to = 0, step = 0;
};

bool AbslParseFlag(absl::string_view text, RateSweep* sweep, std::string* error) {
  if (text.empty()) {
    *sweep = {};
    return true;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  RateSweep s;
  if (parts.size() != 3 || !absl::SimpleAtod(parts[0], &s.from) ||
      !absl::SimpleAtod(parts[1], &s.to) || !absl::SimpleAtod(parts[2], &s.step) || !(s.from > 0) ||
      !(s.to >= s.from) || !(s.step > 0)) {
    *error = "not FROM:TO:STEP with 0 < FROM <= TO and STEP > 0";
    return false;
  }
  *sweep = s;
  return true;
}

std::string AbslUnparseFlag(const RateSweep& sweep) {
  if (sweep.step == 0) return "";
  return absl::StrCat(sweep.from, ":", sweep.to, ":", sweep.step);
}

}  // namespace

// Load
ABSL_FLAG(double, rate, 5000, "Offered requests per second.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(20), "Measured duration.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2),
          "Load at the same rate before the measurement, excluded from the stats.");
ABSL_FLAG(int, users, 25000, "Users; each request comes from a uniformly random one.");
ABSL_FLAG(int, keys, 1,
          "Distinct keys: user u asks for \"catalogue\" (1) or \"catalogue-<u mod N>\".");
ABSL_FLAG(bool, per_user_keys, false,
          "One key per user (--keys=<users>; each key holds a whole catalogue).");
ABSL_FLAG(Arrival, arrival, Arrival::kPoisson,
          "poisson (independent users) or uniform (a constant interval).");
ABSL_FLAG(int, workers, 0, "Request threads; 0: max(8, 4 x cores).");
ABSL_FLAG(std::uint64_t, max_queue, 0,
          "Requests waiting for a worker, at most; more are counted as \"dropped\". 0: 2 s of "
          "--rate, at least 1000.");
ABSL_FLAG(absl::Duration, request_timeout, absl::Seconds(10),
          "A request still queued this long is not served (\"timeout\").");
ABSL_FLAG(absl::Duration, drain, absl::Seconds(5),
          "Time after the schedule ends to finish queued requests; the rest are counted as "
          "\"abandoned\".");
ABSL_FLAG(std::uint64_t, seed, 1, "Seed of the arrival times and users.");
// Scenario
ABSL_FLAG(bool, cold, true,
          "The entry is absent when the measurement starts (invalidated at t=0), so the first "
          "requests stampede; --nocold: stored beforehand.");
ABSL_FLAG(absl::Duration, invalidate_at, absl::InfiniteDuration(),
          "Also invalidate the entry this long into the measurement; inf: never.");
ABSL_FLAG(absl::Duration, origin_delay, absl::Milliseconds(300),
          "How long one origin load takes (then it copies the JSON).");
// Target
ABSL_FLAG(std::string, backend, "memory://",
          "A chunkcache::NewBackendFromUrl URL (memory://, redis://HOST:PORT, "
          "momento+https://HOST/CACHE, ...), or \"redis\" (a private redis-server on a loopback "
          "port) or \"momento-emulator\" (the loopback Momento HTTP emulator, Python).");
ABSL_FLAG(absl::Duration, backend_timeout, absl::ZeroDuration(),
          "One backend call's timeout; 0 keeps the backend's default.");
ABSL_FLAG(std::string, mode, "chunkcache",
          "chunkcache, baseline (the uncompressed JSON as one value per key: a raw hiredis GET/SET "
          "on Redis, a mutex-protected map in memory; no single-flight; not possible on Momento), "
          "or both (side by side).");
ABSL_FLAG(bool, l1, false, "Near cache (L1): 256 MiB, l1_fresh_for 1 s.");
ABSL_FLAG(bool, passthrough, false, "GetCompressed (serve the zstd bytes); GetOrLoad on a miss.");
ABSL_FLAG(ReadMode, read, ReadMode::kGet,
          "get: GetOrLoad (the whole JSON at once); stream: GetStream, each piece (a frame of "
          "JSON) consumed as it arrives, as a service writing it to a socket would, with "
          "GetOrLoad on a miss (its bytes then count as one piece). Not with --passthrough.");
ABSL_FLAG(int, decode_workers, 0,
          "CacheOptions::decode_workers (threads that help one Get decode).");
ABSL_FLAG(int, compression_workers, 0,
          "CacheOptions::compression_workers (frames of one Put compressed in parallel).");
ABSL_FLAG(absl::Duration, lease_ttl, absl::Seconds(10),
          "CacheOptions::lease_ttl (the cross-process lease); 0 turns it off.");
// Rate sweep
ABSL_FLAG(RateSweep, rate_sweep, RateSweep(),
          "FROM:TO:STEP: instead of one run, steps of --step_duration at increasing offered "
          "rates, warm (no cold start, no invalidation; only the first step has a warm-up).");
ABSL_FLAG(absl::Duration, step_duration, absl::Seconds(5), "Duration of one sweep step.");
ABSL_FLAG(absl::Duration, p99_bound, absl::Milliseconds(50),
          "A sweep step holds if p99 <= this bound, failures <= 0.1% of the requests and the "
          "served rate >= 95% of the scheduled one.");
ABSL_FLAG(int, sweep_stop_after, 2,
          "Stop a sweep after this many saturated steps in a row (failures > 1% or served rate < "
          "90% of the scheduled one); 0: run every step.");
// Output
ABSL_FLAG(std::string, json, "",
          "Write the configuration, results, histograms, per-second series and sweep here.");
ABSL_FLAG(std::string, plot, "",
          "Draw the JSON into this PNG with bench/plot_loadgen.py (matplotlib): latency "
          "p50/p99/max per second (log scale), requests served per second against the offered "
          "rate, and with a sweep, p50/p99 against offered rate.");
ABSL_FLAG(bool, quiet, false, "No per-second progress on stderr.");

namespace {

using Clock = std::chrono::steady_clock;
using chunkcache::internal::JsonString;
using LatencyHistogram = chunkcache::internal::PreciseLatencyHistogram;

constexpr char kUsage[] = R"(the launch night, reproduced.

Open-loop load: requests from --users users arrive by the clock at --rate per second, wait in a
bounded queue for --workers threads, and get the catalogue through ChunkedCache::GetOrLoad (or
GetCompressed with --passthrough, GetStream with --read=stream). Latency and the time to the first
byte (TTFB) run from each request's scheduled time, so a stall shows as latency. --mode=both also
runs the same load against plain storage of the uncompressed JSON as one value (no single-flight)
and prints both side by side. --rate_sweep finds the highest rate whose p99 stays under
--p99_bound.

Output: a table on stdout, --json and --plot. Latency percentiles are of the served requests;
failures are counted by kind: dropped, timeout, abandoned, or the status code.

usage: chunkcache_loadgen [--flag=value ...]   (durations: 300ms, 2s, 1m; booleans: --l1, --nol1))";

// ---- Flags --------------------------------------------------------------------------------------

// The flags, checked, in the units the run uses.
struct Flags {
  double rate = 5000;
  double seconds = 20;
  double warmup_seconds = 2;
  int users = 25000;
  int keys = 1;
  bool per_user_keys = false;
  Arrival arrival = Arrival::kPoisson;
  int workers = 0;
  std::size_t max_queue = 0;  // 0: QueueBound's default
  double request_timeout_ms = 10000;
  double drain_seconds = 5;
  std::uint64_t seed = 1;
  bool cold = true;
  std::optional<double> invalidate_at;
  double catalogue_mb = 10;
  double origin_delay_ms = 300;
  std::string backend = "memory://";
  double backend_timeout_ms = 0;
  std::string mode = "chunkcache";
  bool l1 = false;
  bool passthrough = false;
  ReadMode read = ReadMode::kGet;
  int decode_workers = 0;
  int compression_workers = 0;
  double lease_seconds = 10;
  std::optional<RateSweep> sweep;
  double step_seconds = 5;
  double p99_bound_ms = 50;
  int sweep_stop_after = 2;
  std::string json_path;
  std::string plot_path;
  bool quiet = false;
};

absl::StatusOr<Flags> ReadFlags() {
  const auto seconds = [](const absl::Flag<absl::Duration>& flag) {
    return absl::ToDoubleSeconds(absl::GetFlag(flag));
  };
  const auto milliseconds = [](const absl::Flag<absl::Duration>& flag) {
    return absl::ToDoubleMilliseconds(absl::GetFlag(flag));
  };
  Flags f;
  f.rate = absl::GetFlag(FLAGS_rate);
  f.seconds = seconds(FLAGS_duration);
  f.warmup_seconds = seconds(FLAGS_warmup);
  f.users = absl::GetFlag(FLAGS_users);
  f.keys = absl::GetFlag(FLAGS_keys);
  f.per_user_keys = absl::GetFlag(FLAGS_per_user_keys);
  f.arrival = absl::GetFlag(FLAGS_arrival);
  f.workers = absl::GetFlag(FLAGS_workers);
  f.max_queue = absl::GetFlag(FLAGS_max_queue);
  f.request_timeout_ms = milliseconds(FLAGS_request_timeout);
  f.drain_seconds = seconds(FLAGS_drain);
  f.seed = absl::GetFlag(FLAGS_seed);
  f.cold = absl::GetFlag(FLAGS_cold);
  if (const double at = seconds(FLAGS_invalidate_at); std::isfinite(at)) f.invalidate_at = at;
  f.catalogue_mb = absl::GetFlag(FLAGS_catalogue_mb);
  f.origin_delay_ms = milliseconds(FLAGS_origin_delay);
  f.backend = absl::GetFlag(FLAGS_backend);
  f.backend_timeout_ms = milliseconds(FLAGS_backend_timeout);
  f.mode = absl::GetFlag(FLAGS_mode);
  f.l1 = absl::GetFlag(FLAGS_l1);
  f.passthrough = absl::GetFlag(FLAGS_passthrough);
  f.read = absl::GetFlag(FLAGS_read);
  f.decode_workers = absl::GetFlag(FLAGS_decode_workers);
  f.compression_workers = absl::GetFlag(FLAGS_compression_workers);
  f.lease_seconds = seconds(FLAGS_lease_ttl);
  if (const RateSweep sweep = absl::GetFlag(FLAGS_rate_sweep); sweep.step > 0) f.sweep = sweep;
  f.step_seconds = seconds(FLAGS_step_duration);
  f.p99_bound_ms = milliseconds(FLAGS_p99_bound);
  f.sweep_stop_after = absl::GetFlag(FLAGS_sweep_stop_after);
  f.json_path = absl::GetFlag(FLAGS_json);
  f.plot_path = absl::GetFlag(FLAGS_plot);
  f.quiet = absl::GetFlag(FLAGS_quiet);

  if (f.mode != "chunkcache" && f.mode != "baseline" && f.mode != "both") {
    return absl::InvalidArgumentError("--mode is chunkcache, baseline or both");
  }
  const std::initializer_list<double> numbers = {
      f.rate,          f.seconds,      f.warmup_seconds,  f.request_timeout_ms,
      f.drain_seconds, f.catalogue_mb, f.origin_delay_ms, f.backend_timeout_ms,
      f.lease_seconds, f.step_seconds, f.p99_bound_ms};
  if (!std::all_of(numbers.begin(), numbers.end(), [](double v) { return std::isfinite(v); }) ||
      !(f.rate > 0) || !(f.seconds > 0) || f.warmup_seconds < 0 || f.users < 1 || f.keys < 1 ||
      f.drain_seconds < 0 || !(f.request_timeout_ms > 0) || !(f.catalogue_mb > 0) ||
      f.origin_delay_ms < 0 || f.lease_seconds < 0 || f.backend_timeout_ms < 0 ||
      !(f.step_seconds > 0) || !(f.p99_bound_ms > 0) || f.workers < 0 || f.backend.empty()) {
    return absl::InvalidArgumentError("a flag is out of range (see --help)");
  }
  for (const auto& [name, workers] : {std::pair{"--decode_workers", f.decode_workers},
                                      std::pair{"--compression_workers", f.compression_workers}}) {
    if (workers < 0 || workers > chunkcache::kMaxWorkers) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be 0 to ", chunkcache::kMaxWorkers));
    }
  }
  if (f.passthrough && f.read == ReadMode::kStream) {
    return absl::InvalidArgumentError(
        "--passthrough serves zstd bytes and --read=stream JSON pieces: choose one");
  }
  if (f.invalidate_at && !(*f.invalidate_at >= 0 && *f.invalidate_at < f.seconds)) {
    return absl::InvalidArgumentError(
        "--invalidate_at must be at least 0 and less than --duration");
  }
  if (f.per_user_keys) f.keys = f.users;
  if (f.workers == 0) {
    f.workers = std::max(8, 4 * static_cast<int>(std::thread::hardware_concurrency()));
  }
  return f;
}

std::size_t QueueBound(const Flags& flags, double rate) {
  if (flags.max_queue > 0) return flags.max_queue;
  return std::max<std::size_t>(1000, static_cast<std::size_t>(2 * rate));
}

// ---- Machine load -------------------------------------------------------------------------------

// CPU time of this process, and of the machine (from /proc/stat), in seconds.
struct CpuSample {
  Clock::time_point at;
  double self = 0;
  double machine_busy = 0;
  double machine_total = 0;
  double server = 0;  // the backend server child we started, if any
};

double ProcessCpuSeconds(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ', absl::SkipEmpty());
  double utime = 0, stime = 0;  // fields 14 and 15 of the whole line; 12 and 13 after ')'
  if (fields.size() < 13 || !absl::SimpleAtod(fields[11], &utime) ||
      !absl::SimpleAtod(fields[12], &stime)) {
    return 0;
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

CpuSample SampleCpu(pid_t server_pid) {
  CpuSample s;
  s.at = Clock::now();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  s.self = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  s.machine_busy = (user + nice + system + irq + softirq + steal) / tick;
  s.machine_total = s.machine_busy + (idle + iowait) / tick;
  s.server = ProcessCpuSeconds(server_pid);
  return s;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen);
}

// ---- Origin -------------------------------------------------------------------------------------

// The slow source of truth: each load sleeps, then copies the catalogue. Thread-safe.
class Origin {
 public:
  Origin(std::string json, absl::Duration delay) : json_(std::move(json)), delay_(delay) {}

  absl::StatusOr<std::string> Load() {
    const int now = in_flight_.fetch_add(1) + 1;
    int seen = max_in_flight_.load();
    while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
    }
    absl::SleepFor(delay_);
    std::string copy = json_;
    loads_.fetch_add(1);
    in_flight_.fetch_sub(1);
    return copy;
  }

  const std::string& json() const { return json_; }
  std::uint64_t loads() const { return loads_.load(); }
  // The most loads in flight at once since the previous call.
  int TakeMaxInFlight() { return max_in_flight_.exchange(in_flight_.load()); }

 private:
  const std::string json_;
  const absl::Duration delay_;
  std::atomic<std::uint64_t> loads_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
};

// ---- Targets: what a request runs ---------------------------------------------------------------

// Counters of a target; the run reports their difference over the measurement.
struct TargetCounters {
  std::uint64_t round_trips = 0;  // backend calls
  std::uint64_t bytes_read = 0;   // bytes fetched from the backend
  std::uint64_t l1_hits = 0;
  std::uint64_t l1_revalidations = 0;
  std::uint64_t coalesced = 0;  // callers that shared another caller's load
  std::uint64_t loads = 0;      // loader calls
  std::uint64_t fallbacks = 0;  // backend failures answered through the loader
  std::uint64_t backend_errors = 0;
  std::uint64_t corrupt_reads = 0;
  std::uint64_t served_compressed = 0;  // passthrough: requests answered with zstd bytes
  std::uint64_t store_errors = 0;
  std::uint64_t warnings = 0;  // messages of the library's log callback

  TargetCounters operator-(const TargetCounters& b) const {
    return {round_trips - b.round_trips,
            bytes_read - b.bytes_read,
            l1_hits - b.l1_hits,
            l1_revalidations - b.l1_revalidations,
            coalesced - b.coalesced,
            loads - b.loads,
            fallbacks - b.fallbacks,
            backend_errors - b.backend_errors,
            corrupt_reads - b.corrupt_reads,
            served_compressed - b.served_compressed,
            store_errors - b.store_errors,
            warnings - b.warnings};
  }
};

// What a target served for one request.
struct Served {
  std::size_t bytes = 0;
  // When the first byte was ready to go out; unset (the epoch) when nothing went out before the
  // whole answer, which is then its time.
  Clock::time_point first_byte{};
};

class Target {
 public:
  virtual ~Target() = default;
  // Answers one request for `key` from worker `worker` (0 .. workers-1).
  virtual absl::StatusOr<Served> Serve(int worker, const std::string& key) = 0;
  // Stores the origin's document under `key` (not an origin load).
  virtual absl::Status Store(const std::string& key) = 0;
  virtual absl::Status Invalidate(const std::string& key) = 0;
  virtual TargetCounters Counters() const = 0;
  // What is stored under `key`, for the report.
  virtual std::string Describe(const std::string& key) = 0;
};

// Reads every 64th byte of `piece` (one per cache line), as copying it out to a socket would, into
// a sum the compiler cannot drop.
std::uint64_t Touch(std::string_view piece) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < piece.size(); i += 64) sum += static_cast<unsigned char>(piece[i]);
  return sum;
}

// The library: GetOrLoad (single-flight); GetCompressed, or GetStream, with GetOrLoad on a miss.
class ChunkcacheTarget final : public Target {
 public:
  ChunkcacheTarget(std::shared_ptr<chunkcache::Backend> backend, chunkcache::CacheOptions options,
                   const std::shared_ptr<Origin>& origin, bool passthrough, ReadMode read)
      : log_(std::make_shared<Log>()),
        cache_(std::move(backend), WithLog(std::move(options), log_)),
        origin_(origin),
        loader_([origin] { return origin->Load(); }),
        passthrough_(passthrough),
        read_(read) {}

  absl::StatusOr<Served> Serve(int, const std::string& key) override {
    if (passthrough_) {
      absl::StatusOr<chunkcache::CompressedPayload> zstd = cache_.GetCompressed(key);
      if (zstd.ok()) {
        served_compressed_.fetch_add(1, std::memory_order_relaxed);
        return Served{.bytes = zstd->zstd->size()};
      }
    }
    if (read_ == ReadMode::kStream) {
      Served served;
      std::uint64_t touched = 0;
      const absl::Status streamed = cache_.GetStream(key, [&](std::string_view piece) {
        if (served.first_byte == Clock::time_point{}) served.first_byte = Clock::now();
        served.bytes += piece.size();
        touched += Touch(piece);
        return absl::OkStatus();
      });
      touched_.fetch_add(touched, std::memory_order_relaxed);
      // A miss (nothing went out): load it, and serve the loaded bytes as one piece.
      if (!absl::IsNotFound(streamed) || served.first_byte != Clock::time_point{}) {
        if (!streamed.ok()) return streamed;
        return served;
      }
    }
    absl::StatusOr<chunkcache::Bytes> json = cache_.GetOrLoad(key, loader_);
    if (!json.ok()) return json.status();
    if (read_ == ReadMode::kStream) touched_.fetch_add(Touch(**json), std::memory_order_relaxed);
    return Served{.bytes = (*json)->size()};
  }

  absl::Status Store(const std::string& key) override { return cache_.Put(key, origin_->json()); }
  absl::Status Invalidate(const std::string& key) override { return cache_.Invalidate(key); }

  TargetCounters Counters() const override {
    const chunkcache::CacheStats s = cache_.Stats();
    return {.round_trips = s.backend_calls,
            .bytes_read = s.bytes_read,
            .l1_hits = s.l1_hits,
            .l1_revalidations = s.l1_revalidations,
            .coalesced = s.coalesced,
            .loads = s.loads,
            .fallbacks = s.fallbacks,
            .backend_errors = s.backend_errors,
            .corrupt_reads = s.corrupt_reads,
            .served_compressed = served_compressed_.load(),
            .store_errors = s.put_errors,
            .warnings = log_->count.load()};
  }

  std::string Describe(const std::string& key) override {
    absl::StatusOr<chunkcache::EntryInfo> info = cache_.Inspect(key);
    if (!info.ok()) return absl::StrCat("(inspect: ", info.status().ToString(), ")");
    const std::string where =
        info->is_inline ? "inline in the manifest (one item)"
                        : absl::StrFormat("in %d chunk(s) of at most %.2f MiB", info->chunks.size(),
                                          static_cast<double>(info->chunk_size) / (1 << 20));
    return absl::StrFormat("zstd %.2f MiB (%.2fx smaller) %s",
                           static_cast<double>(info->stored_size) / (1 << 20),
                           static_cast<double>(info->raw_size) /
                               static_cast<double>(std::max<std::uint64_t>(1, info->stored_size)),
                           where);
  }

  std::string last_warning() const {
    absl::MutexLock lock(&log_->mu);
    return log_->last;
  }

 private:
  struct Log {
    std::atomic<std::uint64_t> count{0};
    absl::Mutex mu;
    std::string last ABSL_GUARDED_BY(mu);
  };

  static chunkcache::CacheOptions WithLog(chunkcache::CacheOptions options,
                                          const std::shared_ptr<Log>& log) {
    options.log = [log](chunkcache::LogLevel, std::string_view message) {
      log->count.fetch_add(1);
      absl::MutexLock lock(&log->mu);
      log->last = std::string(message);
    };
    return options;
  }

  std::shared_ptr<Log> log_;
  chunkcache::ChunkedCache cache_;
  std::shared_ptr<Origin> origin_;
  chunkcache::Loader loader_;
  const bool passthrough_;
  const ReadMode read_;
  std::atomic<std::uint64_t> served_compressed_{0};
  std::atomic<std::uint64_t> touched_{0};  // what Touch read, kept so that it is not optimized away
};

// The `worker` argument of BaselineStore calls made outside the workers (storing beforehand).
constexpr int kControlThread = -1;

// Storage for the baseline: the uncompressed JSON as one value per key. `worker` is the calling
// worker's index, or kControlThread.
class BaselineStore {
 public:
  virtual ~BaselineStore() = default;
  // The value under `key`; nullptr when it is absent.
  virtual absl::StatusOr<std::shared_ptr<const std::string>> Get(int worker,
                                                                 const std::string& key) = 0;
  virtual absl::Status Set(int worker, const std::string& key,
                           std::shared_ptr<const std::string> value) = 0;
  // From the control threads, not the workers.
  virtual absl::Status Delete(const std::string& key) = 0;

  std::uint64_t round_trips() const { return round_trips_.load(); }
  std::uint64_t bytes_read() const { return bytes_read_.load(); }

 protected:
  std::atomic<std::uint64_t> round_trips_{0};
  std::atomic<std::uint64_t> bytes_read_{0};
};

// What one writes in a single process without the library: a map under a mutex.
class MemoryStore final : public BaselineStore {
 public:
  absl::StatusOr<std::shared_ptr<const std::string>> Get(int, const std::string& key) override {
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    const auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    bytes_read_.fetch_add(it->second->size(), std::memory_order_relaxed);
    return it->second;
  }
  absl::Status Set(int, const std::string& key, std::shared_ptr<const std::string> value) override {
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    map_[key] = std::move(value);
    return absl::OkStatus();
  }
  absl::Status Delete(const std::string& key) override {
    absl::MutexLock lock(&mu_);
    map_.erase(key);
    return absl::OkStatus();
  }

 private:
  absl::Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const std::string>> map_ ABSL_GUARDED_BY(mu_);
};

// What one writes with hiredis and no library: GET and SET of the whole JSON under one key, one
// connection per worker (and one for the control thread).
class RedisStore final : public BaselineStore {
 public:
  RedisStore(chunkcache::redis::ServerUrl address, int workers)
      : address_(std::move(address)), connections_(static_cast<std::size_t>(workers) + 1) {}

  absl::StatusOr<std::shared_ptr<const std::string>> Get(int worker,
                                                         const std::string& key) override {
    absl::StatusOr<Reply> reply = Command(connections_[worker], {"GET", Key(key)});
    if (!reply.ok()) return reply.status();
    if ((*reply)->type == REDIS_REPLY_NIL) return nullptr;
    if ((*reply)->type != REDIS_REPLY_STRING) return absl::InternalError("GET: unexpected reply");
    bytes_read_.fetch_add((*reply)->len, std::memory_order_relaxed);
    return std::make_shared<const std::string>((*reply)->str, (*reply)->len);
  }

  absl::Status Set(int worker, const std::string& key,
                   std::shared_ptr<const std::string> value) override {
    if (worker == kControlThread) {
      absl::MutexLock lock(&control_mu_);
      return Command(connections_.back(), {"SET", Key(key), *value, "PX", "3600000"}).status();
    }
    return Command(connections_[worker], {"SET", Key(key), *value, "PX", "3600000"}).status();
  }

  absl::Status Delete(const std::string& key) override {
    absl::MutexLock lock(&control_mu_);
    return Command(connections_.back(), {"DEL", Key(key)}).status();
  }

 private:
  struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
  };
  using Context = std::unique_ptr<redisContext, ContextFree>;
  using Reply = std::unique_ptr<redisReply, ReplyFree>;

  static std::string Key(const std::string& key) { return "raw:" + key; }

  absl::StatusOr<Reply> Command(Context& c, std::initializer_list<absl::string_view> args) {
    if (c == nullptr) {
      absl::Status connected = Connect(c);
      if (!connected.ok()) return connected;
    }
    return Send(c, args);
  }

  absl::Status Connect(Context& c) {
    const timeval timeout{10, 0};
    c.reset(redisConnectWithTimeout(address_.seed.host.c_str(), address_.seed.port, timeout));
    if (c == nullptr || c->err) {
      const std::string error = c == nullptr ? "out of memory" : c->errstr;
      c.reset();
      return absl::UnavailableError(absl::StrCat("connect: ", error));
    }
    redisSetTimeout(c.get(), timeout);
    if (!address_.password.empty()) {
      absl::StatusOr<Reply> auth = address_.user.empty()
                                       ? Send(c, {"AUTH", address_.password})
                                       : Send(c, {"AUTH", address_.user, address_.password});
      if (!auth.ok()) return auth.status();
    }
    if (address_.db != 0) {
      absl::StatusOr<Reply> select = Send(c, {"SELECT", std::to_string(address_.db)});
      if (!select.ok()) return select.status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Reply> Send(Context& c, std::initializer_list<absl::string_view> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (absl::string_view a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    Reply reply(static_cast<redisReply*>(
        redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
    if (reply == nullptr) {
      absl::Status error = absl::UnavailableError(absl::StrCat("redis: ", c->errstr));
      c.reset();  // reconnect next time
      return error;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      return absl::InternalError(
          absl::StrCat("redis: ", absl::string_view(reply->str, reply->len)));
    }
    return reply;
  }

  const chunkcache::redis::ServerUrl address_;
  std::vector<Context> connections_;  // [worker], and the last for Delete
  absl::Mutex control_mu_;
};

// No single-flight: every request that misses loads from the origin and stores the result.
class BaselineTarget final : public Target {
 public:
  BaselineTarget(std::unique_ptr<BaselineStore> store, std::shared_ptr<Origin> origin)
      : store_(std::move(store)), origin_(std::move(origin)) {}

  // A raw GET delivers nothing before the whole value: the first byte comes with the last.
  absl::StatusOr<Served> Serve(int worker, const std::string& key) override {
    absl::StatusOr<std::shared_ptr<const std::string>> got = store_->Get(worker, key);
    if (!got.ok()) return got.status();
    if (*got != nullptr) return Served{.bytes = (*got)->size()};
    loads_.fetch_add(1, std::memory_order_relaxed);
    absl::StatusOr<std::string> loaded = origin_->Load();
    if (!loaded.ok()) return loaded.status();
    auto value = std::make_shared<const std::string>(std::move(*loaded));
    if (!store_->Set(worker, key, value).ok()) store_errors_.fetch_add(1);  // still served
    return Served{.bytes = value->size()};
  }

  absl::Status Store(const std::string& key) override {
    return store_->Set(kControlThread, key, std::make_shared<const std::string>(origin_->json()));
  }
  absl::Status Invalidate(const std::string& key) override { return store_->Delete(key); }

  TargetCounters Counters() const override {
    return {.round_trips = store_->round_trips(),
            .bytes_read = store_->bytes_read(),
            .loads = loads_.load(),
            .store_errors = store_errors_.load()};
  }

  std::string Describe(const std::string&) override {
    return absl::StrFormat("uncompressed %.2f MiB as one value",
                           static_cast<double>(origin_->json().size()) / (1 << 20));
  }

 private:
  std::unique_ptr<BaselineStore> store_;
  std::shared_ptr<Origin> origin_;
  std::atomic<std::uint64_t> loads_{0};
  std::atomic<std::uint64_t> store_errors_{0};
};

// ---- The open-loop run --------------------------------------------------------------------------

struct Request {
  Clock::time_point scheduled;
  int key;
};

// A bounded FIFO between the dispatcher and the workers.
class RequestQueue {
 public:
  explicit RequestQueue(std::size_t capacity) : capacity_(capacity) {}

  // Returns the depth after the push, or 0 if the queue was full (the request is not queued).
  std::size_t Push(const Request& request) {
    absl::MutexLock lock(&mu_);
    if (queue_.size() >= capacity_) return 0;
    queue_.push_back(request);
    cv_.Signal();
    return queue_.size();
  }

  // Blocks for a request; nullopt once the queue is closed and empty.
  std::optional<Request> Pop() {
    absl::MutexLock lock(&mu_);
    while (queue_.empty() && !closed_) cv_.Wait(&mu_);
    if (queue_.empty()) return std::nullopt;
    Request r = queue_.front();
    queue_.pop_front();
    return r;
  }

  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    cv_.SignalAll();
  }

  std::size_t size() {
    absl::MutexLock lock(&mu_);
    return queue_.size();
  }

 private:
  const std::size_t capacity_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Request> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

struct RunSpec {
  std::string mode;  // "chunkcache" or "baseline"
  double rate = 0;
  double seconds = 0;
  double warmup_seconds = 0;
  Arrival arrival = Arrival::kPoisson;
  bool cold = false;
  std::optional<double> invalidate_at;
  int workers = 8;
  std::size_t max_queue = 1000;
  double request_timeout_ms = 10000;
  double drain_seconds = 5;
  int users = 1;
  std::uint64_t seed = 1;
  bool progress = true;
  pid_t server_pid = -1;
};

struct SeriesPoint {
  int second = 0;
  std::uint64_t scheduled = 0;              // requests scheduled in this second
  std::uint64_t ok = 0;                     // of those, served
  std::uint64_t errors = 0;                 // of those, failed (dropped, timed out, errors)
  std::uint64_t completed = 0;              // requests served in this second, whenever scheduled
  std::int64_t p50 = 0, p99 = 0, max = 0;   // of the served requests scheduled in this second
  std::int64_t ttfb_p50 = 0, ttfb_p99 = 0;  // their time to the first byte
};

struct RunResult {
  RunSpec spec;
  bool available = true;
  std::string unavailable_reason;
  std::uint64_t scheduled = 0, ok = 0, failed = 0;
  // Requests a worker ran during the measurement (served or failed; not dropped or expired),
  // warm-up requests still queued at its start included.
  std::uint64_t executed = 0;
  std::map<std::string, std::uint64_t> errors;  // by kind
  std::map<std::string, std::string> error_samples;
  std::uint64_t warmup_requests = 0, warmup_errors = 0;
  std::uint64_t users_seen = 0;
  std::size_t max_queue_depth = 0;
  double window_seconds = 0;  // from the measurement's start to its last answer (>= seconds)
  double achieved_rate = 0;
  std::int64_t p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double mean_ns = 0;
  // Time to the first byte, from the scheduled time as latency: when the first piece of a stream
  // was ready, or the whole answer for a read that delivers nothing before it (then = latency).
  std::int64_t ttfb_p50 = 0, ttfb_p90 = 0, ttfb_p99 = 0, ttfb_p999 = 0, ttfb_max = 0;
  double ttfb_mean_ns = 0;
  // Parts of the latency: how late the generator queued requests (its own stalls: CPU starvation
  // of the load generator shows here), and how long the target took once a worker ran it.
  std::int64_t dispatch_lag_p99 = 0, dispatch_lag_max = 0;
  std::int64_t service_p50 = 0, service_p99 = 0, service_max = 0;
  std::int64_t service_ttfb_p50 = 0, service_ttfb_p99 = 0;  // from the start of the service
  bool generator_niced = false;  // the dispatcher thread runs at nice -10
  std::vector<std::pair<std::int64_t, std::uint64_t>> buckets;
  std::vector<SeriesPoint> series;
  std::uint64_t origin_loads = 0;
  int origin_max_concurrent = 0;
  TargetCounters counters;
  std::uint64_t bytes_served = 0;
  std::vector<double> invalidations;  // seconds into the measurement
  double cpu_self_percent = 0;        // of all cores
  double cpu_machine_percent = 0;
  double cpu_server_percent = 0;
  std::string loadavg_before, loadavg_after;
  std::string last_warning;
};

double Share(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0 : static_cast<double>(part) / static_cast<double>(whole);
}

// Requests scheduled per second of the measurement (Poisson arrivals stray from --rate).
double ScheduledRate(const RunResult& r) {
  return static_cast<double>(r.scheduled) / r.spec.seconds;
}

// True if the run served its load within the bound.
bool Holds(const RunResult& r, double p99_bound_ms) {
  return r.available && r.ok > 0 && static_cast<double>(r.p99) <= p99_bound_ms * 1e6 &&
         Share(r.failed, r.scheduled) <= 0.001 && r.achieved_rate >= 0.95 * ScheduledRate(r);
}

// True if the run could not keep up with its load at all: a higher rate will not do better.
bool Saturated(const RunResult& r) {
  return !r.available || Share(r.failed, r.scheduled) > 0.01 ||
         r.achieved_rate < 0.9 * ScheduledRate(r);
}

// The run measures latencies from 1 us to 60 s; one outside counts as the nearest bound.
void RecordNanos(LatencyHistogram& histogram, std::int64_t nanos) {
  histogram.Record(absl::Nanoseconds(std::clamp<std::int64_t>(nanos, 1'000, 60'000'000'000)));
}

std::int64_t Percentile(const LatencyHistogram& histogram, double quantile) {
  return absl::ToInt64Nanoseconds(histogram.Percentile(quantile));
}

std::int64_t MaxNanos(const LatencyHistogram& histogram) {
  return absl::ToInt64Nanoseconds(histogram.Max());
}

RunResult RunLoad(Target& target, Origin& origin, const std::vector<std::string>& keys,
                  const RunSpec& spec) {
  using std::chrono::duration;
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  RunResult result;
  result.spec = spec;

  const int slots = static_cast<int>(std::ceil(spec.seconds + spec.drain_seconds +
                                               spec.request_timeout_ms / 1000)) +
                    2;
  struct SecondBin {
    std::atomic<std::uint64_t> scheduled{0}, ok{0}, errors{0}, completed{0};
    LatencyHistogram latency;
    LatencyHistogram ttfb;
  };
  std::vector<std::unique_ptr<SecondBin>> bins;
  for (int i = 0; i < slots; ++i) bins.push_back(std::make_unique<SecondBin>());
  auto total = std::make_unique<LatencyHistogram>();
  auto ttfb = std::make_unique<LatencyHistogram>();
  auto dispatch_lag = std::make_unique<LatencyHistogram>();
  auto service = std::make_unique<LatencyHistogram>();
  auto service_ttfb = std::make_unique<LatencyHistogram>();
  std::atomic<std::uint64_t> ok{0}, failed{0}, executed{0}, warmup_errors{0}, bytes_served{0};
  std::atomic<double> sum_ns{0}, ttfb_sum_ns{0};
  std::atomic<std::int64_t> last_done_ns{0};
  absl::Mutex errors_mu;
  std::map<std::string, std::uint64_t> errors;
  std::map<std::string, std::string> samples;
  RequestQueue queue(spec.max_queue);

  const Clock::time_point start = Clock::now() + std::chrono::milliseconds(50);
  const Clock::time_point measured_start =
      start + duration_cast<nanoseconds>(duration<double>(spec.warmup_seconds));
  const Clock::time_point end =
      measured_start + duration_cast<nanoseconds>(duration<double>(spec.seconds));
  // Requests still queued then are not served (counted as abandoned).
  const Clock::time_point drain_deadline =
      end + duration_cast<nanoseconds>(duration<double>(spec.drain_seconds));
  const auto second_of = [&](Clock::time_point t) {
    const auto s = static_cast<int>(duration<double>(t - measured_start).count());
    return std::clamp(s, 0, slots - 1);
  };
  const auto record_error = [&](Clock::time_point scheduled, const std::string& kind,
                                absl::string_view sample) {
    if (scheduled < measured_start) {
      warmup_errors.fetch_add(1);
      return;
    }
    failed.fetch_add(1);
    bins[second_of(scheduled)]->errors.fetch_add(1);
    absl::MutexLock lock(&errors_mu);
    ++errors[kind];
    if (!sample.empty() && !samples.contains(kind)) {
      samples[kind] = std::string(sample.substr(0, 300));
    }
  };

  // Counters at the start of the measurement, then the cold start.
  TargetCounters counters_before;
  std::uint64_t loads_before = 0;
  CpuSample cpu_before;
  const auto begin_measurement = [&] {
    counters_before = target.Counters();
    loads_before = origin.loads();
    origin.TakeMaxInFlight();
    cpu_before = SampleCpu(spec.server_pid);
    result.loadavg_before = LoadAverage();
    if (spec.cold) {
      for (const std::string& key : keys) (void)target.Invalidate(key);
      result.invalidations.push_back(0);
    }
  };
  std::vector<std::pair<Clock::time_point, std::function<void()>>> events;
  if (spec.warmup_seconds > 0) {
    events.emplace_back(measured_start, begin_measurement);
  } else {
    begin_measurement();
  }
  if (spec.invalidate_at) {
    events.emplace_back(
        measured_start + duration_cast<nanoseconds>(duration<double>(*spec.invalidate_at)), [&] {
          result.invalidations.push_back(duration<double>(Clock::now() - measured_start).count());
          for (const std::string& key : keys) (void)target.Invalidate(key);
        });
  }
  std::thread event_thread([&] {
    for (auto& [at, action] : events) {
      std::this_thread::sleep_until(at);
      action();
    }
  });

  const auto timeout =
      duration_cast<nanoseconds>(duration<double, std::milli>(spec.request_timeout_ms));
  std::vector<std::thread> workers;
  for (int w = 0; w < spec.workers; ++w) {
    workers.emplace_back([&, w] {
      while (std::optional<Request> r = queue.Pop()) {
        if (Clock::now() >= drain_deadline) {
          record_error(r->scheduled, "abandoned: still queued when the run ended", "");
          continue;
        }
        if (Clock::now() - r->scheduled > timeout) {
          record_error(r->scheduled, "timeout: queued past --request_timeout", "");
          continue;
        }
        const Clock::time_point begun = Clock::now();
        const absl::StatusOr<Served> served = target.Serve(w, keys[r->key]);
        const Clock::time_point done = Clock::now();
        // The denominator of the per-request counters, which cover the same window (a backlog
        // of warm-up requests run during the measurement included).
        if (begun >= measured_start) executed.fetch_add(1, std::memory_order_relaxed);
        if (r->scheduled < measured_start) {
          if (!served.ok()) warmup_errors.fetch_add(1);
          continue;
        }
        bins[second_of(done)]->completed.fetch_add(1, std::memory_order_relaxed);
        if (!served.ok()) {
          record_error(r->scheduled, absl::StatusCodeToString(served.status().code()),
                       std::string(served.status().message()));
          continue;
        }
        const std::int64_t ns = duration_cast<nanoseconds>(done - r->scheduled).count();
        const Clock::time_point first_byte =
            served->first_byte == Clock::time_point{} ? done : served->first_byte;
        const std::int64_t ttfb_ns = duration_cast<nanoseconds>(first_byte - r->scheduled).count();
        RecordNanos(*total, ns);
        RecordNanos(*ttfb, ttfb_ns);
        RecordNanos(*service, duration_cast<nanoseconds>(done - begun).count());
        RecordNanos(*service_ttfb, duration_cast<nanoseconds>(first_byte - begun).count());
        SecondBin& bin = *bins[second_of(r->scheduled)];
        RecordNanos(bin.latency, ns);
        RecordNanos(bin.ttfb, ttfb_ns);
        bin.ok.fetch_add(1, std::memory_order_relaxed);
        ok.fetch_add(1, std::memory_order_relaxed);
        bytes_served.fetch_add(served->bytes, std::memory_order_relaxed);
        sum_ns.fetch_add(static_cast<double>(ns), std::memory_order_relaxed);
        ttfb_sum_ns.fetch_add(static_cast<double>(ttfb_ns), std::memory_order_relaxed);
        const std::int64_t since = duration_cast<nanoseconds>(done - measured_start).count();
        std::int64_t seen = last_done_ns.load();
        while (since > seen && !last_done_ns.compare_exchange_weak(seen, since)) {
        }
      }
    });
  }

  // The dispatcher: requests go out by the clock, whatever the workers are doing. It runs at a
  // higher priority if allowed (root), so that a busy machine delays it less: its lateness counts
  // as latency, and the generator should not be what is measured.
  result.generator_niced = setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), -10) == 0;
  std::mt19937_64 rng(spec.seed);
  std::exponential_distribution<double> gap(spec.rate);
  std::uniform_int_distribution<int> user_of(0, spec.users - 1);
  std::vector<bool> seen_users(static_cast<std::size_t>(spec.users));
  std::uint64_t scheduled = 0, warmup_requests = 0;
  double offset = 0;  // seconds from start
  int progress_second = 0;
  for (;;) {
    const Clock::time_point at = start + duration_cast<nanoseconds>(duration<double>(offset));
    if (at >= end) break;
    const Clock::time_point now = Clock::now();
    if (at > now) {
      std::this_thread::sleep_until(at);
      continue;
    }
    const int user = user_of(rng);
    const bool measured = at >= measured_start;
    if (measured) {
      RecordNanos(*dispatch_lag, duration_cast<nanoseconds>(now - at).count());
      ++scheduled;
      bins[second_of(at)]->scheduled.fetch_add(1, std::memory_order_relaxed);
      seen_users[user] = true;
    } else {
      ++warmup_requests;
    }
    const std::size_t depth = queue.Push({at, user % static_cast<int>(keys.size())});
    if (depth == 0) record_error(at, "dropped: queue full", "");
    result.max_queue_depth = std::max(result.max_queue_depth, depth);
    offset += spec.arrival == Arrival::kUniform ? 1 / spec.rate : gap(rng);

    if (spec.progress && now >= measured_start + std::chrono::seconds(progress_second + 1)) {
      const SecondBin& bin = *bins[progress_second];
      absl::FPrintF(stderr,
                    "  [%s %.0f/s] t=%2ds  scheduled %llu  served %llu  failed %llu  p99 %.1f ms  "
                    "queue %zu\n",
                    spec.mode, spec.rate, progress_second + 1,
                    static_cast<unsigned long long>(bin.scheduled.load()),
                    static_cast<unsigned long long>(bin.completed.load()),
                    static_cast<unsigned long long>(bin.errors.load()),
                    static_cast<double>(Percentile(bin.latency, 0.99)) / 1e6, queue.size());
      ++progress_second;
    }
  }
  queue.Close();
  if (result.generator_niced) setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 0);

  // Workers finish what is queued; what they pick up after drain_deadline is abandoned.
  for (std::thread& t : workers) t.join();
  event_thread.join();

  const TargetCounters counters_after = target.Counters();
  const CpuSample cpu_after = SampleCpu(spec.server_pid);
  result.loadavg_after = LoadAverage();
  result.counters = counters_after - counters_before;
  result.origin_loads = origin.loads() - loads_before;
  result.origin_max_concurrent = origin.TakeMaxInFlight();
  const double wall = duration<double>(cpu_after.at - cpu_before.at).count();
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  const double machine = cpu_after.machine_total - cpu_before.machine_total;
  result.cpu_self_percent = 100 * (cpu_after.self - cpu_before.self) / (wall * cores);
  result.cpu_machine_percent =
      machine > 0 ? 100 * (cpu_after.machine_busy - cpu_before.machine_busy) / machine : 0;
  result.cpu_server_percent = 100 * (cpu_after.server - cpu_before.server) / (wall * cores);

  result.scheduled = scheduled;
  result.warmup_requests = warmup_requests;
  result.warmup_errors = warmup_errors.load();
  result.users_seen =
      static_cast<std::uint64_t>(std::count(seen_users.begin(), seen_users.end(), true));
  result.ok = ok.load();
  result.executed = executed.load();
  result.failed = failed.load();
  result.errors = errors;
  result.error_samples = samples;
  result.window_seconds = std::max(spec.seconds, static_cast<double>(last_done_ns.load()) / 1e9);
  result.achieved_rate = static_cast<double>(result.ok) / result.window_seconds;
  result.p50 = Percentile(*total, 0.5);
  result.p90 = Percentile(*total, 0.9);
  result.p99 = Percentile(*total, 0.99);
  result.p999 = Percentile(*total, 0.999);
  result.max = MaxNanos(*total);
  result.mean_ns = result.ok > 0 ? sum_ns.load() / static_cast<double>(result.ok) : 0;
  result.ttfb_p50 = Percentile(*ttfb, 0.5);
  result.ttfb_p90 = Percentile(*ttfb, 0.9);
  result.ttfb_p99 = Percentile(*ttfb, 0.99);
  result.ttfb_p999 = Percentile(*ttfb, 0.999);
  result.ttfb_max = MaxNanos(*ttfb);
  result.ttfb_mean_ns = result.ok > 0 ? ttfb_sum_ns.load() / static_cast<double>(result.ok) : 0;
  result.dispatch_lag_p99 = Percentile(*dispatch_lag, 0.99);
  result.dispatch_lag_max = MaxNanos(*dispatch_lag);
  result.service_p50 = Percentile(*service, 0.5);
  result.service_p99 = Percentile(*service, 0.99);
  result.service_max = MaxNanos(*service);
  result.service_ttfb_p50 = Percentile(*service_ttfb, 0.5);
  result.service_ttfb_p99 = Percentile(*service_ttfb, 0.99);
  for (const LatencyHistogram::Bucket& bucket : total->NonEmptyBuckets()) {
    result.buckets.emplace_back(absl::ToInt64Nanoseconds(bucket.upper_bound), bucket.count);
  }
  result.bytes_served = bytes_served.load();
  const int series_seconds = static_cast<int>(std::ceil(spec.seconds));
  for (int s = 0; s < slots; ++s) {
    const SecondBin& bin = *bins[s];
    if (s >= series_seconds && bin.completed.load() == 0) break;
    result.series.push_back({.second = s,
                             .scheduled = bin.scheduled.load(),
                             .ok = bin.ok.load(),
                             .errors = bin.errors.load(),
                             .completed = bin.completed.load(),
                             .p50 = Percentile(bin.latency, 0.5),
                             .p99 = Percentile(bin.latency, 0.99),
                             .max = MaxNanos(bin.latency),
                             .ttfb_p50 = Percentile(bin.ttfb, 0.5),
                             .ttfb_p99 = Percentile(bin.ttfb, 0.99)});
  }
  return result;
}

// ---- Reports ------------------------------------------------------------------------------------

std::string Ms(std::int64_t ns) { return absl::StrFormat("%.3f", static_cast<double>(ns) / 1e6); }

std::string MiB(double bytes) { return absl::StrFormat("%.2f MiB", bytes / (1 << 20)); }

struct Context {
  const Flags* flags;
  std::string backend_url;
  std::string backend_label;
  std::size_t json_bytes = 0;
  std::map<std::string, std::string> stored;  // mode -> what is stored
  int cores = 1;
};

// One row of the side-by-side table: a value per run (NaN for n/a).
struct Row {
  std::string name;
  std::vector<double> values;
  const char* format = "%.0f";
  bool ratio = false;  // print baseline / chunkcache
};

void PrintTable(const std::vector<RunResult>& runs, const std::vector<Row>& rows) {
  std::string header = absl::StrFormat("%-34s", "");
  for (const RunResult& r : runs) header += absl::StrFormat("%16s", r.spec.mode);
  const bool with_ratio = runs.size() == 2;
  if (with_ratio) header += absl::StrFormat("%22s", "baseline/chunkcache");
  absl::PrintF("%s\n", header);
  for (const Row& row : rows) {
    std::string line = absl::StrFormat("%-34s", row.name);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const double v = row.values[i];
      line += absl::StrFormat("%16s", !runs[i].available ? std::string("n/a")
                                      : std::isnan(v)    ? std::string("-")
                                                         : absl::StrFormat(row.format, v));
    }
    if (with_ratio && row.ratio && runs[0].available && runs[1].available && row.values[0] > 0 &&
        std::isfinite(row.values[1])) {
      line += absl::StrFormat("%21sx", absl::StrFormat("%.3g", row.values[1] / row.values[0]));
    }
    absl::PrintF("%s\n", line);
  }
}

std::vector<Row> SummaryRows(const std::vector<RunResult>& runs) {
  std::vector<Row> rows;
  const auto add = [&](std::string name, const char* format, bool ratio,
                       const std::function<double(const RunResult&)>& value) {
    Row row{std::move(name), {}, format, ratio};
    for (const RunResult& r : runs) row.values.push_back(r.available ? value(r) : NAN);
    rows.push_back(std::move(row));
  };
  const auto per_request = [](std::uint64_t n, const RunResult& r) {
    return r.executed == 0 ? NAN : static_cast<double>(n) / static_cast<double>(r.executed);
  };
  add("requests scheduled", "%.0f", false, [](auto& r) { return r.scheduled; });
  add("  served", "%.0f", false, [](auto& r) { return r.ok; });
  add("  failed (all kinds)", "%.0f", true, [](auto& r) { return r.failed; });
  add("run by a worker in the window", "%.0f", false, [](auto& r) { return r.executed; });
  add("achieved rate (req/s)", "%.1f", false, [](auto& r) { return r.achieved_rate; });
  add("latency p50 (ms)", "%.3f", true, [](auto& r) { return r.p50 / 1e6; });
  add("latency p90 (ms)", "%.3f", true, [](auto& r) { return r.p90 / 1e6; });
  add("latency p99 (ms)", "%.3f", true, [](auto& r) { return r.p99 / 1e6; });
  add("latency p99.9 (ms)", "%.3f", true, [](auto& r) { return r.p999 / 1e6; });
  add("latency max (ms)", "%.3f", true, [](auto& r) { return r.max / 1e6; });
  add("latency mean (ms)", "%.3f", true, [](auto& r) { return r.mean_ns / 1e6; });
  add("time to first byte p50 (ms)", "%.3f", true, [](auto& r) { return r.ttfb_p50 / 1e6; });
  add("time to first byte p90 (ms)", "%.3f", true, [](auto& r) { return r.ttfb_p90 / 1e6; });
  add("time to first byte p99 (ms)", "%.3f", true, [](auto& r) { return r.ttfb_p99 / 1e6; });
  add("time to first byte p99.9 (ms)", "%.3f", true, [](auto& r) { return r.ttfb_p999 / 1e6; });
  add("time to first byte max (ms)", "%.3f", true, [](auto& r) { return r.ttfb_max / 1e6; });
  add("time to first byte mean (ms)", "%.3f", true, [](auto& r) { return r.ttfb_mean_ns / 1e6; });
  add("  service time p50 (ms)", "%.3f", true, [](auto& r) { return r.service_p50 / 1e6; });
  add("  service time p99 (ms)", "%.3f", true, [](auto& r) { return r.service_p99 / 1e6; });
  add("  service time max (ms)", "%.3f", true, [](auto& r) { return r.service_max / 1e6; });
  add("  service to first byte p50 (ms)", "%.3f", true,
      [](auto& r) { return r.service_ttfb_p50 / 1e6; });
  add("  service to first byte p99 (ms)", "%.3f", true,
      [](auto& r) { return r.service_ttfb_p99 / 1e6; });
  add("  generator lag p99 (ms)", "%.3f", false, [](auto& r) { return r.dispatch_lag_p99 / 1e6; });
  add("  generator lag max (ms)", "%.3f", false, [](auto& r) { return r.dispatch_lag_max / 1e6; });
  add("origin loads", "%.0f", true, [](auto& r) { return r.origin_loads; });
  add("  most at once", "%.0f", true, [](auto& r) { return r.origin_max_concurrent; });
  add("backend round trips / request run", "%.3f", true,
      [&](auto& r) { return per_request(r.counters.round_trips, r); });
  add("backend KiB read / request run", "%.1f", true,
      [&](auto& r) { return per_request(r.counters.bytes_read, r) / 1024; });
  add("KiB served / request", "%.1f", true,
      [](auto& r) { return r.ok == 0 ? NAN : static_cast<double>(r.bytes_served) / r.ok / 1024; });
  add("L1 hit share", "%.4f", false, [](auto& r) { return Share(r.counters.l1_hits, r.executed); });
  add("coalesced on a load", "%.0f", false, [](auto& r) { return r.counters.coalesced; });
  add("served compressed (passthrough)", "%.0f", false,
      [](auto& r) { return r.counters.served_compressed; });
  add("max queue depth", "%.0f", true, [](auto& r) { return r.max_queue_depth; });
  add("CPU: this process (% of machine)", "%.1f", true, [](auto& r) { return r.cpu_self_percent; });
  add("CPU: backend server (% of mach.)", "%.1f", true,
      [](auto& r) { return r.cpu_server_percent; });
  add("CPU: machine busy (%)", "%.1f", false, [](auto& r) { return r.cpu_machine_percent; });
  return rows;
}

void PrintErrors(const RunResult& r) {
  if (!r.available) {
    absl::PrintF("  %s: %s\n", r.spec.mode, r.unavailable_reason);
    return;
  }
  if (r.errors.empty() && r.warmup_errors == 0 && r.counters.warnings == 0) return;
  absl::PrintF("  %s errors by kind:%s\n", r.spec.mode, r.errors.empty() ? " none" : "");
  for (const auto& [kind, n] : r.errors) {
    const auto sample = r.error_samples.find(kind);
    absl::PrintF("    %-46s %8llu%s\n", kind, static_cast<unsigned long long>(n),
                 sample == r.error_samples.end() ? "" : absl::StrCat("  (", sample->second, ")"));
  }
  if (r.warmup_errors > 0) {
    absl::PrintF("    (warm-up errors, not counted: %llu)\n",
                 static_cast<unsigned long long>(r.warmup_errors));
  }
  if (r.counters.warnings > 0) {
    absl::PrintF("    library warnings: %llu, last: %s\n",
                 static_cast<unsigned long long>(r.counters.warnings), r.last_warning);
  }
}

void PrintSeries(const std::vector<RunResult>& runs) {
  std::string header = "   t";
  for (const RunResult& r : runs) {
    if (!r.available) continue;
    header += absl::StrFormat(" | %-10s %7s %7s %9s %9s %9s", r.spec.mode, "sched", "served/s",
                              "p50 ms", "p99 ms", "max ms");
  }
  absl::PrintF(
      "\nper second (latency of the requests scheduled in that second; served/s: "
      "answers completed in it)\n%s\n",
      header);
  std::size_t longest = 0;
  for (const RunResult& r : runs) longest = std::max(longest, r.series.size());
  for (std::size_t s = 0; s < longest; ++s) {
    std::string line = absl::StrFormat("%4d", static_cast<int>(s));
    for (const RunResult& r : runs) {
      if (!r.available) continue;
      if (s >= r.series.size()) {
        line += absl::StrFormat(" | %-10s %7s %7s %9s %9s %9s", "", "", "", "", "", "");
        continue;
      }
      const SeriesPoint& p = r.series[s];
      line += absl::StrFormat(" | %-10s %7llu %8llu %9s %9s %9s", "",
                              static_cast<unsigned long long>(p.scheduled),
                              static_cast<unsigned long long>(p.completed), p.ok ? Ms(p.p50) : "-",
                              p.ok ? Ms(p.p99) : "-", p.ok ? Ms(p.max) : "-");
    }
    absl::PrintF("%s\n", line);
  }
}

void PrintHeader(const Context& c) {
  const Flags& f = *c.flags;
  absl::PrintF("chunkcache_loadgen: %s, %d users, %d key(s), catalogue %s JSON, origin %.0f ms\n",
               c.backend_label, f.users, f.keys, MiB(static_cast<double>(c.json_bytes)),
               f.origin_delay_ms);
  for (const auto& [mode, what] : c.stored) absl::PrintF("  %s stores: %s\n", mode, what);
  absl::PrintF(
      "  %s arrivals, %d workers, L1 %s, passthrough %s, lease %s; %d cores, load average %s\n",
      AbslUnparseFlag(f.arrival), f.workers, f.l1 ? "on" : "off", f.passthrough ? "on" : "off",
      f.lease_seconds > 0 ? absl::StrFormat("%.0f s", f.lease_seconds) : std::string("off"),
      c.cores, LoadAverage());
  absl::PrintF("  chunkcache reads by %s; decode workers %d, compression workers %d%s\n",
               f.read == ReadMode::kGet ? "GetOrLoad (the whole JSON)"
                                        : "GetStream (piece by piece; GetOrLoad on a miss)",
               f.decode_workers, f.compression_workers,
               f.mode == "chunkcache" ? "" : "; the baseline's first byte comes with its last");
}

void PrintRun(const Context& c, const std::vector<RunResult>& runs) {
  const Flags& f = *c.flags;
  absl::PrintF("\noffered %.0f req/s for %.0f s after %.0f s of warm-up; %s%s; queue bound %zu\n\n",
               f.rate, f.seconds, f.warmup_seconds, f.cold ? "cold start" : "warm start",
               f.invalidate_at ? absl::StrFormat(", invalidated at %.1f s", *f.invalidate_at) : "",
               runs.front().spec.max_queue);
  PrintTable(runs, SummaryRows(runs));
  absl::PrintF("\n");
  for (const RunResult& r : runs) PrintErrors(r);
  for (const RunResult& r : runs) {
    if (r.available) {
      absl::PrintF("  %s: %llu of %d users made requests; load average %s -> %s\n", r.spec.mode,
                   static_cast<unsigned long long>(r.users_seen), f.users, r.loadavg_before,
                   r.loadavg_after);
    }
  }
  PrintSeries(runs);
}

struct SweepResult {
  std::string mode;
  bool available = true;
  std::string unavailable_reason;
  std::vector<RunResult> steps;
  double best_rate = 0;  // highest offered rate that held; 0 if none
};

void PrintSweep(const Context& c, const std::vector<SweepResult>& sweeps) {
  const Flags& f = *c.flags;
  absl::PrintF("\nrate sweep %.0f..%.0f step %.0f req/s, %.0f s per step, p99 bound %.0f ms\n",
               f.sweep->from, f.sweep->to, f.sweep->step, f.step_seconds, f.p99_bound_ms);
  std::string header = absl::StrFormat("%10s", "offered");
  for (const SweepResult& s : sweeps) {
    header += absl::StrFormat(" | %-10s %9s %9s %9s %9s %9s %7s %5s", s.mode, "served/s", "p50 ms",
                              "p99 ms", "ttfb p99", "svc p99", "failed", "holds");
  }
  absl::PrintF("%s\n", header);
  std::size_t longest = 0;
  for (const SweepResult& s : sweeps) longest = std::max(longest, s.steps.size());
  for (std::size_t i = 0; i < longest; ++i) {
    double rate = 0;
    for (const SweepResult& s : sweeps) {
      if (i < s.steps.size()) rate = s.steps[i].spec.rate;
    }
    std::string line = absl::StrFormat("%10.0f", rate);
    for (const SweepResult& s : sweeps) {
      if (i >= s.steps.size()) {
        line += absl::StrFormat(" | %-10s %9s %9s %9s %9s %9s %7s %5s", "",
                                s.available ? "(stopped)" : "n/a", "", "", "", "", "", "");
        continue;
      }
      const RunResult& r = s.steps[i];
      line += absl::StrFormat(" | %-10s %9.1f %9s %9s %9s %9s %7llu %5s", "", r.achieved_rate,
                              Ms(r.p50), Ms(r.p99), Ms(r.ttfb_p99), Ms(r.service_p99),
                              static_cast<unsigned long long>(r.failed),
                              Holds(r, f.p99_bound_ms) ? "yes" : "no");
    }
    absl::PrintF("%s\n", line);
  }
  for (const SweepResult& s : sweeps) {
    if (!s.available) {
      absl::PrintF("%s: %s\n", s.mode, s.unavailable_reason);
    } else if (s.best_rate > 0) {
      absl::PrintF("%s: highest rate with p99 <= %.0f ms: %.0f req/s\n", s.mode, f.p99_bound_ms,
                   s.best_rate);
    } else {
      absl::PrintF("%s: no rate held p99 <= %.0f ms\n", s.mode, f.p99_bound_ms);
    }
  }
}

// ---- JSON ---------------------------------------------------------------------------------------

std::string JsonNumber(double v) {
  return std::isfinite(v) ? absl::StrFormat("%.6g", v) : std::string("null");
}

// Builds one JSON object, field by field.
class JsonObject {
 public:
  JsonObject& Raw(std::string_view key, absl::string_view json) {
    fields_.push_back(absl::StrCat(JsonString(key), ":", json));
    return *this;
  }
  JsonObject& Str(std::string_view key, std::string_view v) { return Raw(key, JsonString(v)); }
  JsonObject& Num(std::string_view key, double v) { return Raw(key, JsonNumber(v)); }
  JsonObject& Int(std::string_view key, std::uint64_t v) { return Raw(key, absl::StrCat(v)); }
  JsonObject& Bool(std::string_view key, bool v) { return Raw(key, v ? "true" : "false"); }
  std::string Build(absl::string_view separator = ",") const {
    return absl::StrCat("{", absl::StrJoin(fields_, separator), "}");
  }

 private:
  std::vector<std::string> fields_;
};

std::string JsonArray(const std::vector<std::string>& items, bool one_per_line = false) {
  return absl::StrCat("[", absl::StrJoin(items, one_per_line ? ",\n" : ","), "]");
}

// `holds`: for a sweep step, whether it held the bound.
std::string RunJson(const RunResult& r, bool with_histogram,
                    std::optional<bool> holds = std::nullopt) {
  JsonObject o;
  o.Str("mode", r.spec.mode).Bool("available", r.available);
  if (holds) o.Bool("holds", *holds).Bool("saturated", Saturated(r));
  if (!r.available) return o.Str("reason", r.unavailable_reason).Build();
  const TargetCounters& c = r.counters;
  std::vector<std::string> errors;
  for (const auto& [kind, n] : r.errors) {
    JsonObject e;
    e.Str("kind", kind).Int("count", n);
    if (const auto it = r.error_samples.find(kind); it != r.error_samples.end()) {
      e.Str("sample", it->second);
    }
    errors.push_back(e.Build());
  }
  std::vector<std::string> series;
  for (const SeriesPoint& p : r.series) {
    series.push_back(JsonObject()
                         .Int("t", p.second)
                         .Int("scheduled", p.scheduled)
                         .Int("ok", p.ok)
                         .Int("errors", p.errors)
                         .Int("completed", p.completed)
                         .Num("p50_ms", p.p50 / 1e6)
                         .Num("p99_ms", p.p99 / 1e6)
                         .Num("max_ms", p.max / 1e6)
                         .Num("ttfb_p50_ms", p.ttfb_p50 / 1e6)
                         .Num("ttfb_p99_ms", p.ttfb_p99 / 1e6)
                         .Build());
  }
  std::vector<std::string> invalidations;
  for (const double t : r.invalidations) invalidations.push_back(JsonNumber(t));
  o.Num("offered_rate", r.spec.rate)
      .Num("seconds", r.spec.seconds)
      .Num("warmup_seconds", r.spec.warmup_seconds)
      .Bool("cold", r.spec.cold)
      .Int("max_queue", r.spec.max_queue)
      .Int("scheduled", r.scheduled)
      .Int("ok", r.ok)
      .Int("failed", r.failed)
      .Raw("errors", JsonArray(errors))
      .Int("warmup_requests", r.warmup_requests)
      .Int("warmup_errors", r.warmup_errors)
      .Int("users_seen", r.users_seen)
      .Num("window_seconds", r.window_seconds)
      .Num("achieved_rate", r.achieved_rate)
      .Raw("latency_ms", JsonObject()
                             .Num("p50", r.p50 / 1e6)
                             .Num("p90", r.p90 / 1e6)
                             .Num("p99", r.p99 / 1e6)
                             .Num("p99_9", r.p999 / 1e6)
                             .Num("max", r.max / 1e6)
                             .Num("mean", r.mean_ns / 1e6)
                             .Build())
      .Raw("ttfb_ms", JsonObject()
                          .Num("p50", r.ttfb_p50 / 1e6)
                          .Num("p90", r.ttfb_p90 / 1e6)
                          .Num("p99", r.ttfb_p99 / 1e6)
                          .Num("p99_9", r.ttfb_p999 / 1e6)
                          .Num("max", r.ttfb_max / 1e6)
                          .Num("mean", r.ttfb_mean_ns / 1e6)
                          .Build())
      .Raw("service_time_ms", JsonObject()
                                  .Num("p50", r.service_p50 / 1e6)
                                  .Num("p99", r.service_p99 / 1e6)
                                  .Num("max", r.service_max / 1e6)
                                  .Num("first_byte_p50", r.service_ttfb_p50 / 1e6)
                                  .Num("first_byte_p99", r.service_ttfb_p99 / 1e6)
                                  .Build())
      .Raw("generator_lag_ms", JsonObject()
                                   .Num("p99", r.dispatch_lag_p99 / 1e6)
                                   .Num("max", r.dispatch_lag_max / 1e6)
                                   .Bool("niced", r.generator_niced)
                                   .Build())
      .Int("origin_loads", r.origin_loads)
      .Int("origin_max_concurrent", r.origin_max_concurrent)
      .Raw("counters", JsonObject()
                           .Int("backend_round_trips", c.round_trips)
                           .Int("backend_bytes_read", c.bytes_read)
                           .Int("l1_hits", c.l1_hits)
                           .Int("l1_revalidations", c.l1_revalidations)
                           .Int("coalesced", c.coalesced)
                           .Int("loader_calls", c.loads)
                           .Int("fallbacks", c.fallbacks)
                           .Int("backend_errors", c.backend_errors)
                           .Int("corrupt_reads", c.corrupt_reads)
                           .Int("served_compressed", c.served_compressed)
                           .Int("store_errors", c.store_errors)
                           .Int("library_warnings", c.warnings)
                           .Build())
      .Int("executed", r.executed)
      .Num("round_trips_per_request",
           r.executed ? static_cast<double>(c.round_trips) / r.executed : NAN)
      .Num("bytes_read_per_request",
           r.executed ? static_cast<double>(c.bytes_read) / r.executed : NAN)
      .Num("bytes_served_per_request", r.ok ? static_cast<double>(r.bytes_served) / r.ok : NAN)
      .Num("l1_hit_share", Share(c.l1_hits, r.executed))
      .Int("max_queue_depth", r.max_queue_depth)
      .Raw("invalidations_s", JsonArray(invalidations))
      .Raw("cpu_percent", JsonObject()
                              .Num("self", r.cpu_self_percent)
                              .Num("backend_server", r.cpu_server_percent)
                              .Num("machine_busy", r.cpu_machine_percent)
                              .Build())
      .Str("loadavg_before", r.loadavg_before)
      .Str("loadavg_after", r.loadavg_after);
  if (with_histogram) {
    std::vector<std::string> buckets;
    for (const auto& [bound, n] : r.buckets) {
      buckets.push_back(absl::StrFormat("[%.4f,%llu]", static_cast<double>(bound) / 1e6,
                                        static_cast<unsigned long long>(n)));
    }
    o.Raw("histogram_ms_le_count", JsonArray(buckets));
  }
  o.Raw("series", JsonArray(series, true));
  return o.Build(",\n");
}

std::string ConfigJson(const Context& c) {
  const Flags& f = *c.flags;
  JsonObject o;
  o.Str("backend", c.backend_label)
      .Str("mode", f.mode)
      .Num("rate", f.rate)
      .Num("seconds", f.seconds)
      .Num("warmup_seconds", f.warmup_seconds)
      .Int("users", f.users)
      .Int("keys", f.keys)
      .Str("arrival", AbslUnparseFlag(f.arrival))
      .Int("workers", f.workers)
      .Num("request_timeout_ms", f.request_timeout_ms)
      .Num("drain_seconds", f.drain_seconds)
      .Int("seed", f.seed)
      .Bool("cold", f.cold)
      .Num("invalidate_at", f.invalidate_at ? *f.invalidate_at : NAN)
      .Num("catalogue_mb", f.catalogue_mb)
      .Int("catalogue_bytes", c.json_bytes)
      .Num("origin_delay_ms", f.origin_delay_ms)
      .Bool("l1", f.l1)
      .Bool("passthrough", f.passthrough)
      .Str("read", AbslUnparseFlag(f.read))
      .Int("decode_workers", f.decode_workers)
      .Int("compression_workers", f.compression_workers)
      .Num("lease_seconds", f.lease_seconds)
      .Int("cores", c.cores);
  for (const auto& [mode, what] : c.stored) o.Str(mode + "_stores", what);
  if (f.sweep) {
    o.Raw("rate_sweep", JsonObject()
                            .Num("from", f.sweep->from)
                            .Num("to", f.sweep->to)
                            .Num("step", f.sweep->step)
                            .Num("step_seconds", f.step_seconds)
                            .Num("p99_bound_ms", f.p99_bound_ms)
                            .Int("stop_after", f.sweep_stop_after)
                            .Build());
  }
  return o.Build();
}

// The whole report: the configuration, then the runs or the sweeps.
std::string DocumentJson(const Context& context, const std::vector<RunResult>& runs,
                         const std::vector<SweepResult>& sweeps) {
  const Flags& f = *context.flags;
  JsonObject doc;
  doc.Str("tool", "chunkcache_loadgen").Raw("config", ConfigJson(context));
  if (f.sweep) {
    std::vector<std::string> items;
    for (const SweepResult& s : sweeps) {
      std::vector<std::string> steps;
      for (const RunResult& r : s.steps) {
        steps.push_back(RunJson(r, false, Holds(r, f.p99_bound_ms)));
      }
      JsonObject o;
      o.Str("mode", s.mode).Bool("available", s.available);
      if (!s.available) o.Str("reason", s.unavailable_reason);
      o.Num("best_rate", s.best_rate).Raw("steps", JsonArray(steps, true));
      items.push_back(o.Build(",\n"));
    }
    doc.Raw("sweeps", JsonArray(items, true));
  } else {
    std::vector<std::string> items;
    for (const RunResult& r : runs) items.push_back(RunJson(r, true));
    doc.Raw("runs", JsonArray(items, true));
  }
  return doc.Build(",\n") + "\n";
}

// ---- Output files -------------------------------------------------------------------------------

absl::Status WriteFile(const std::string& path, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Draws the loadgen JSON at `json_path` into `png_path` with bench/plot_loadgen.py (matplotlib),
// which reports its own errors on stderr.
absl::Status Plot(const std::string& json_path, const std::string& png_path) {
  namespace fixture = chunkcache::testing::fixture_internal;
  std::fflush(stdout);  // what we printed comes before what the script prints
  try {
    fixture::ChildProcess script(
        {CHUNKCACHE_PLOT_PYTHON, CHUNKCACHE_PLOT_SCRIPT, "-o", png_path, json_path}, STDOUT_FILENO,
        STDERR_FILENO);
    const int status = script.Wait();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(CHUNKCACHE_PLOT_PYTHON " " CHUNKCACHE_PLOT_SCRIPT " ",
                                            fixture::DescribeWaitStatus(status)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot run " CHUNKCACHE_PLOT_SCRIPT ": ", e.what()));
  }
}

// ---- Main ---------------------------------------------------------------------------------------

std::vector<std::string> KeyNames(int keys) {
  if (keys == 1) return {"catalogue"};
  std::vector<std::string> names;
  for (int i = 0; i < keys; ++i) names.push_back(absl::StrCat("catalogue-", i));
  return names;
}

// The target of `mode` on `url`, or why there is none.
absl::StatusOr<std::unique_ptr<Target>> MakeTarget(const std::string& mode, const std::string& url,
                                                   const Flags& f,
                                                   const std::shared_ptr<Origin>& origin) {
  if (mode == "chunkcache") {
    chunkcache::BackendUrlOptions backend_options;
    backend_options.timeout = absl::Milliseconds(f.backend_timeout_ms);
    absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
        chunkcache::NewBackendFromUrl(url, backend_options);
    if (!backend.ok()) return backend.status();
    chunkcache::CacheOptions options;
    options.ttl = absl::Hours(1);
    options.lease_ttl = absl::Seconds(f.lease_seconds);
    options.decode_workers = f.decode_workers;
    options.compression_workers = f.compression_workers;
    if (f.l1) {
      options.l1_capacity_bytes = std::size_t{256} << 20;
      options.l1_fresh_for = absl::Seconds(1);
    }
    return std::make_unique<ChunkcacheTarget>(*backend, options, origin, f.passthrough, f.read);
  }
  std::unique_ptr<BaselineStore> store;
  if (absl::StartsWith(url, "memory://")) {
    store = std::make_unique<MemoryStore>();
  } else if (absl::StartsWith(url, "redis://")) {
    absl::StatusOr<chunkcache::redis::ServerUrl> address = chunkcache::redis::ParseServerUrl(url);
    if (!address.ok()) return address.status();
    store = std::make_unique<RedisStore>(*address, f.workers);
  } else if (absl::StartsWith(url, "momento")) {
    return absl::UnimplementedError("n/a: Momento items are at most 5 MB");
  } else {
    return absl::UnimplementedError("n/a: the baseline speaks memory:// and redis:// only");
  }
  return std::make_unique<BaselineTarget>(std::move(store), origin);
}

RunSpec BaseSpec(const Flags& f, const std::string& mode, pid_t server_pid) {
  RunSpec s;
  s.mode = mode;
  s.rate = f.rate;
  s.seconds = f.seconds;
  s.warmup_seconds = f.warmup_seconds;
  s.arrival = f.arrival;
  s.cold = f.cold;
  s.invalidate_at = f.invalidate_at;
  s.workers = f.workers;
  s.max_queue = QueueBound(f, f.rate);
  s.request_timeout_ms = f.request_timeout_ms;
  s.drain_seconds = f.drain_seconds;
  s.users = f.users;
  s.seed = f.seed;
  s.progress = !f.quiet;
  s.server_pid = server_pid;
  return s;
}

int Main(int argc, char** argv) {
  const std::vector<char*> args = chunkcache::bench::ParseFlags(argc, argv, kUsage);
  absl::StatusOr<Flags> parsed = ReadFlags();
  if (args.size() > 1) parsed = absl::InvalidArgumentError(absl::StrCat("not a flag: ", args[1]));
  if (!parsed.ok()) {
    absl::FPrintF(stderr, "chunkcache_loadgen: %s\n(--help for the flags)\n",
                  parsed.status().message());
    return 2;
  }
  const Flags& f = *parsed;

  // The backend, and the server behind it if we start one.
  std::optional<chunkcache::testing::RedisServer> redis;
  std::optional<chunkcache::testing::MomentoEmulator> momento;
  Context context{.flags = &f,
                  .cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  pid_t server_pid = -1;
  try {
    if (f.backend == "redis") {
      redis.emplace();
      context.backend_url = redis->url();
      context.backend_label = absl::StrCat("redis-server (own, ", context.backend_url, ")");
      server_pid = redis->pid();
    } else if (f.backend == "momento-emulator") {
      momento.emplace();
      context.backend_url = absl::StrCat("momento+", momento->endpoint(), "/test-cache");
      context.backend_label = absl::StrCat("Momento emulator (", context.backend_url, ")");
      server_pid = momento->pid();
      setenv("MOMENTO_API_KEY", momento->api_key().c_str(), 1);
    } else {
      context.backend_url = f.backend;
      const std::size_t at = f.backend.find('@');  // never print a password
      context.backend_label =
          at == std::string::npos
              ? f.backend
              : f.backend.substr(0, f.backend.find("://") + 3) + "***" + f.backend.substr(at);
    }
  } catch (const std::exception& e) {
    absl::FPrintF(stderr, "chunkcache_loadgen: cannot start the backend server: %s\n", e.what());
    return 1;
  }

  std::string json = chunkcache::testing::GenerateCatalogue({.megabytes = f.catalogue_mb});
  context.json_bytes = json.size();
  auto origin = std::make_shared<Origin>(std::move(json), absl::Milliseconds(f.origin_delay_ms));
  const std::vector<std::string> keys = KeyNames(f.keys);
  std::vector<std::string> modes;
  if (f.mode != "baseline") modes.push_back("chunkcache");
  if (f.mode != "chunkcache") modes.push_back("baseline");

  std::vector<RunResult> runs;
  std::vector<SweepResult> sweeps;
  for (const std::string& mode : modes) {
    absl::StatusOr<std::unique_ptr<Target>> target =
        MakeTarget(mode, context.backend_url, f, origin);
    if (!target.ok()) {
      const bool not_possible = absl::IsUnimplemented(target.status());
      if (!not_possible) {
        absl::FPrintF(stderr, "chunkcache_loadgen: %s: %s\n", mode, target.status().ToString());
        return 1;
      }
      RunResult r;
      r.spec = BaseSpec(f, mode, server_pid);
      r.available = false;
      r.unavailable_reason = std::string(target.status().message());
      runs.push_back(r);
      sweeps.push_back(
          {.mode = mode, .available = false, .unavailable_reason = r.unavailable_reason});
      continue;
    }
    // Stored beforehand, so the warm-up is warm; --cold removes it when the measurement starts.
    for (const std::string& key : keys) {
      if (absl::Status s = (*target)->Store(key); !s.ok()) {
        absl::FPrintF(stderr, "chunkcache_loadgen: %s: storing %s: %s\n", mode, key, s.ToString());
        return 1;
      }
    }
    context.stored[mode] = (*target)->Describe(keys.front());
    if (!f.quiet) absl::FPrintF(stderr, "%s: %s\n", mode, context.stored[mode]);

    RunSpec spec = BaseSpec(f, mode, server_pid);
    if (!f.sweep) {
      runs.push_back(RunLoad(**target, *origin, keys, spec));
      if (auto* cc = dynamic_cast<ChunkcacheTarget*>(target->get())) {
        runs.back().last_warning = cc->last_warning();
      }
      continue;
    }
    SweepResult sweep{.mode = mode};
    int saturated_in_a_row = 0;
    for (double rate = f.sweep->from; rate <= f.sweep->to * (1 + 1e-9); rate += f.sweep->step) {
      RunSpec step = spec;
      step.rate = rate;
      step.seconds = f.step_seconds;
      step.warmup_seconds = sweep.steps.empty() ? f.warmup_seconds : 0;
      step.cold = false;
      step.invalidate_at.reset();
      step.max_queue = QueueBound(f, rate);
      step.seed = f.seed + sweep.steps.size();
      sweep.steps.push_back(RunLoad(**target, *origin, keys, step));
      const RunResult& r = sweep.steps.back();
      const bool holds = Holds(r, f.p99_bound_ms);
      if (!f.quiet) {
        absl::FPrintF(stderr, "%s %.0f req/s: achieved %.1f, p99 %s ms, failed %llu -> %s\n", mode,
                      rate, r.achieved_rate, Ms(r.p99), static_cast<unsigned long long>(r.failed),
                      holds ? "holds" : "fails");
      }
      if (holds) sweep.best_rate = rate;
      saturated_in_a_row = Saturated(r) ? saturated_in_a_row + 1 : 0;
      if (f.sweep_stop_after > 0 && saturated_in_a_row >= f.sweep_stop_after) break;
    }
    sweeps.push_back(std::move(sweep));
  }

  PrintHeader(context);
  if (f.sweep) {
    PrintSweep(context, sweeps);
  } else {
    PrintRun(context, runs);
  }

  if (f.json_path.empty() && f.plot_path.empty()) return 0;
  // --plot draws from the JSON: the --json file, or a temporary one.
  namespace fixture = chunkcache::testing::fixture_internal;
  std::optional<fixture::TempDir> temp;
  std::string json_path = f.json_path;
  if (json_path.empty()) {
    try {
      json_path = temp.emplace("chunkcache_loadgen_").path() + "/run.json";
    } catch (const std::exception& e) {
      absl::FPrintF(stderr, "chunkcache_loadgen: %s\n", e.what());
      return 1;
    }
  }
  if (absl::Status s = WriteFile(json_path, DocumentJson(context, runs, sweeps)); !s.ok()) {
    absl::FPrintF(stderr, "chunkcache_loadgen: %s\n", s.message());
    return 1;
  }
  if (!f.json_path.empty()) absl::PrintF("\nwrote %s\n", f.json_path);
  if (!f.plot_path.empty()) {
    if (absl::Status s = Plot(json_path, f.plot_path); !s.ok()) {
      absl::FPrintF(stderr, "chunkcache_loadgen: %s\n", s.message());
      return 1;
    }
    absl::PrintF("wrote %s\n", f.plot_path);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
