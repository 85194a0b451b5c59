// lease_worker — one process of the cross-process lease tests (tests/lease_test.cc).
//
// Opens a ChunkedCache on Redis with the given lease_ttl, calls GetOrLoad once on one key with a
// loader that records the call in a shared file, and reports what happened on one stdout line:
//
//   ok <payload size> won=N waited=N wait_hits=N wait_loads=N loads=N   (exit 0)
//   error <status>                                                       (exit 1)
//
// Exit 2 (with "error ..." on stdout) if the payload returned is not the expected JSON, 64 for
// bad flags. Flags, all --name=value: --redis_url (required), --key (catalogue), --lease_ttl_ms
// (5000), --load_ms (300), --count_file (each loader call appends "load <pid>\n" to it before
// sleeping), --hold (the loader appends its line, then blocks forever: a lease holder that dies),
// --start_at_unix_ms (wait until this wall-clock time before GetOrLoad, so that several workers
// start together), --json_mb (1).

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/testing/catalogue.h"

namespace {

constexpr int kExitError = 1;
constexpr int kExitWrongPayload = 2;
constexpr int kExitUsage = 64;

struct Flags {
  std::string redis_url;
  std::string key = "catalogue";
  std::int64_t lease_ttl_ms = 5000;
  std::int64_t load_ms = 300;
  std::string count_file;
  bool hold = false;
  std::int64_t start_at_unix_ms = 0;  // 0: start at once
  double json_mb = 1;
};

// Parses argv into `flags`; an error message on failure.
absl::Status ParseFlags(int argc, char** argv, Flags& flags) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "--"))
      return absl::InvalidArgumentError(absl::StrCat("not a flag: ", arg));
    const std::size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(2, eq == absl::string_view::npos ? eq : eq - 2);
    const bool has_value = eq != absl::string_view::npos;
    const absl::string_view value = has_value ? arg.substr(eq + 1) : absl::string_view();
    bool ok = has_value;
    if (name == "hold") {
      ok = true;
      if (!has_value || value == "true" || value == "1") {
        flags.hold = true;
      } else if (value == "false" || value == "0") {
        flags.hold = false;
      } else {
        ok = false;
      }
    } else if (name == "redis_url") {
      flags.redis_url = std::string(value);
    } else if (name == "key") {
      flags.key = std::string(value);
    } else if (name == "count_file") {
      flags.count_file = std::string(value);
    } else if (name == "lease_ttl_ms") {
      ok = ok && absl::SimpleAtoi(value, &flags.lease_ttl_ms) && flags.lease_ttl_ms >= 0;
    } else if (name == "load_ms") {
      ok = ok && absl::SimpleAtoi(value, &flags.load_ms) && flags.load_ms >= 0;
    } else if (name == "start_at_unix_ms") {
      ok = ok && absl::SimpleAtoi(value, &flags.start_at_unix_ms);
    } else if (name == "json_mb") {
      ok = ok && absl::SimpleAtod(value, &flags.json_mb) && flags.json_mb > 0;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag: ", arg));
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value: ", arg));
  }
  if (flags.redis_url.empty()) return absl::InvalidArgumentError("--redis_url is required");
  return absl::OkStatus();
}

// Appends "load <pid>\n" to `path` in one write (O_APPEND keeps lines of concurrent writers whole).
void RecordLoad(const std::string& path) {
  if (path.empty()) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(("open " + path).c_str());
    return;
  }
  const std::string line = absl::StrCat("load ", ::getpid(), "\n");
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    std::perror(("write " + path).c_str());
  }
  ::close(fd);
}

// Sleeps until the wall clock reads `unix_ms`: coarse sleeps, then a short spin for precision.
void WaitUntil(std::int64_t unix_ms) {
  if (unix_ms <= 0) return;
  const absl::Time start = absl::FromUnixMillis(unix_ms);
  const absl::Duration late = absl::Now() - start;
  if (late > absl::ZeroDuration()) {
    // Not an error (the worker just starts at once), but it weakens the test: say so.
    absl::FPrintF(stderr, "lease_worker %d: started %s after the start time\n", ::getpid(),
                  absl::FormatDuration(late));
    return;
  }
  while (start - absl::Now() > absl::Milliseconds(2)) {
    absl::SleepFor((start - absl::Now()) - absl::Milliseconds(1));
  }
  while (absl::Now() < start) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (absl::Status s = ParseFlags(argc, argv, flags); !s.ok()) {
    absl::FPrintF(stderr, "lease_worker: %s\n", s.message());
    return kExitUsage;
  }

  // Everything that is not part of the race happens before the start time.
  const std::string json =
      chunkcache::testing::GenerateCatalogue({.megabytes = flags.json_mb, .seed = 1});
  absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend =
      chunkcache::NewRedisBackend({.url = flags.redis_url});
  if (!backend.ok()) {
    absl::PrintF("error %s\n", backend.status().ToString());
    return kExitError;
  }
  chunkcache::ChunkedCache cache(*backend, {.lease_ttl = absl::Milliseconds(flags.lease_ttl_ms)});

  WaitUntil(flags.start_at_unix_ms);
  absl::StatusOr<chunkcache::Bytes> got =
      cache.GetOrLoad(flags.key, [&]() -> absl::StatusOr<std::string> {
        RecordLoad(flags.count_file);
        if (flags.hold) {
          while (true) ::pause();  // until killed
        }
        absl::SleepFor(absl::Milliseconds(flags.load_ms));
        return json;
      });
  if (!got.ok()) {
    absl::PrintF("error %s\n", got.status().ToString());
    return kExitError;
  }
  if (**got != json) {
    absl::PrintF("error the payload (%d bytes) is not the expected JSON (%d bytes)\n",
                 (*got)->size(), json.size());
    return kExitWrongPayload;
  }
  const chunkcache::CacheStats stats = cache.Stats();
  absl::PrintF("ok %d won=%d waited=%d wait_hits=%d wait_loads=%d loads=%d\n", (*got)->size(),
               stats.leases_won, stats.leases_waited, stats.lease_wait_hits, stats.lease_wait_loads,
               stats.loads);
  return 0;
}
