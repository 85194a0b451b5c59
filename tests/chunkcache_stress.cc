// chunkcache_stress — a consistency stress test of ChunkedCache over a misbehaving backend.
//
// Several ChunkedCache instances (standing for processes) share one backend wrapped in a
// FaultInjectionBackend (failed calls, dropped writes, lost items, flipped bytes, delays). Writers
// Put JSON documents that carry their own identity and checksum,
//
//   {"key":"k3","writer":2,"version":17,"checksum":"<hex FNV-1a 64>","body":["...",...]}
//
// (the checksum covers key, writer, version and every body string; bodies are 1 to 64 KB, so with
// 4 KiB chunks most entries have several chunks). Readers call Get and GetOrLoad, whose loader
// makes a fresh version (a loader is a writer too); invalidators call Invalidate. Every version is
// recorded before it is offered to a cache, so each payload a reader gets is checked: it parses,
// names the key asked for, matches its checksum, and is byte for byte a version offered for that
// key. Anything else is a violation, and a single one fails the run. With --backend=redis the
// program starts its own redis-server (tests/fixtures/redis_server.h) and, with --kill_every_ms,
// SIGKILLs and restarts it on that period.
//
// Order: per reader, key and writer, a version older than one that reader saw before is a
// regression. Regressions are legitimate with faults (a store that failed after its loaded value
// was served, a dropped manifest write), with the near cache (a copy may lag by l1_fresh_for, and a
// slow read may put an older copy back) and for GetOrLoad even without either (a caller that joins
// another caller's flight gets what that flight read, possibly before the caller's own previous
// read). They are reported; --check_order, which needs faults, near cache and kills off, fails the
// run on a regression seen by Get, where none is legitimate.
//
// Flags, all --name=value (booleans also bare):
//   --backend=memory|redis   --redis_url (an external server; no kills)
//   --seconds (10)           --ops (stop after this many operations instead of after --seconds)
//   --threads=W/R/I (2/4/1)  writers, readers, invalidators
//   --caches (2)  --keys (8)  --seed (1)  --chunk_kb (4)  --min_body_kb (1)  --max_body_kb (64)
//   --ttl_ms (10000)  --invalidate_pause_us (1000)  --retry_attempts (0: no RetryingBackend)
//   --l1 (off; near cache with l1_fresh_for --l1_fresh_ms, 5)
//   --kill_every_ms (0 = never; redis only)  --down_ms (100: how long a killed server stays down)
//   --read_error_rate --write_error_rate --drop_write_rate --lose_item_rate --flip_byte_rate
//   --delay_rate --delay_ms   (memory: 0.02 each, delays 0.01 of 1 ms; redis: 0.005 each)
//   --no_faults  --check_order  --max_rss_mb (1024)  --watchdog_s (30)  --help
//
// Output: one line per group of figures, then one JSON line. Exit 0 if there was no violation (nor,
// with --check_order, a regression by Get) and the max RSS stayed within --max_rss_mb; 1 otherwise;
// 2 if the setup failed; 64 for bad flags. A watchdog aborts the process if no operation completes
// for --watchdog_s seconds (a hang).

#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/backend.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/memory_backend.h"
#include "chunkcache/redis_backend.h"
#include "chunkcache/retrying_backend.h"
#include "fixtures/redis_server.h"
#include "simdjson.h"

namespace {

using chunkcache::Bytes;
using chunkcache::ChunkedCache;
using chunkcache::FaultInjectionBackend;
using chunkcache::FaultInjectionOptions;

constexpr int kExitFailed = 1;
constexpr int kExitSetup = 2;
constexpr int kExitUsage = 64;
constexpr int kStatusCodes = 17;
// A version id packs the writer (high bits) and its counter.
constexpr int kCounterBits = 40;
// Violations described on stderr, at most.
constexpr int kMaxViolationReports = 10;

// Debian's Abseil keeps absl::string_view a type of its own; StrCat does not take std::string_view.
absl::string_view ToAbsl(std::string_view text) { return {text.data(), text.size()}; }

// ---- Flags --------------------------------------------------------------------------------------

// A fault rate flag: its name, the field it sets and its defaults per backend.
struct RateFlag {
  absl::string_view name;
  double FaultInjectionOptions::*field;
  double memory_default;
  double redis_default;
};
constexpr std::array<RateFlag, 6> kRateFlags = {{
    {"read_error_rate", &FaultInjectionOptions::read_error_rate, 0.02, 0.005},
    {"write_error_rate", &FaultInjectionOptions::write_error_rate, 0.02, 0.005},
    {"drop_write_rate", &FaultInjectionOptions::drop_write_rate, 0.02, 0.005},
    {"lose_item_rate", &FaultInjectionOptions::lose_item_rate, 0.02, 0.005},
    {"flip_byte_rate", &FaultInjectionOptions::flip_byte_rate, 0.02, 0.005},
    {"delay_rate", &FaultInjectionOptions::delay_rate, 0.01, 0.005},
}};

struct Flags {
  std::string backend = "memory";
  std::string redis_url;  // empty: start a redis-server of our own
  double seconds = 10;
  std::int64_t ops = 0;  // > 0: stop after this many operations instead
  int writers = 2;
  int readers = 4;
  int invalidators = 1;
  int caches = 2;
  int keys = 8;
  std::uint64_t seed = 1;
  std::int64_t chunk_kb = 4;
  std::int64_t min_body_kb = 1;
  std::int64_t max_body_kb = 64;
  std::int64_t ttl_ms = 10000;
  std::int64_t invalidate_pause_us = 1000;
  int retry_attempts = 0;
  bool l1 = false;
  std::int64_t l1_fresh_ms = 5;
  std::int64_t kill_every_ms = 0;
  std::int64_t down_ms = 100;
  std::array<std::optional<double>, kRateFlags.size()> rates;
  std::optional<double> delay_ms;
  bool no_faults = false;
  bool check_order = false;
  std::int64_t max_rss_mb = 1024;
  std::int64_t watchdog_s = 30;

  FaultInjectionOptions faults;  // resolved from the above by ResolveFlags
};

constexpr std::string_view kUsage =
    "usage: chunkcache_stress [--backend=memory|redis] [--redis_url=URL] [--seconds=S | --ops=N]\n"
    "  [--threads=W/R/I] [--caches=N] [--keys=N] [--seed=N] [--chunk_kb=N] [--min_body_kb=N]\n"
    "  [--max_body_kb=N] [--ttl_ms=N] [--invalidate_pause_us=N] [--retry_attempts=N] [--l1]\n"
    "  [--l1_fresh_ms=N] [--kill_every_ms=N] [--down_ms=N] [--<fault>_rate=P] [--delay_ms=N]\n"
    "  [--no_faults] [--check_order] [--max_rss_mb=N] [--watchdog_s=N]\n"
    "faults: read_error_rate write_error_rate drop_write_rate lose_item_rate flip_byte_rate "
    "delay_rate\n";

bool ParseBool(bool has_value, absl::string_view value, bool* out) {
  if (!has_value || value == "true" || value == "1") {
    *out = true;
  } else if (value == "false" || value == "0") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

template <typename Int>
bool ParseInt(absl::string_view value, std::int64_t min, Int* out) {
  std::int64_t parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < min) return false;
  *out = static_cast<Int>(parsed);
  return true;
}

bool ParseThreads(absl::string_view value, Flags& flags) {
  const std::vector<absl::string_view> parts = absl::StrSplit(value, '/');
  return parts.size() == 3 && ParseInt(parts[0], 0, &flags.writers) &&
         ParseInt(parts[1], 0, &flags.readers) && ParseInt(parts[2], 0, &flags.invalidators);
}

absl::Status ParseFlags(int argc, char** argv, Flags& flags) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("not a flag: ", arg));
    }
    const std::size_t eq = arg.find('=');
    const bool has_value = eq != absl::string_view::npos;
    const absl::string_view name = arg.substr(2, has_value ? eq - 2 : absl::string_view::npos);
    const absl::string_view value = has_value ? arg.substr(eq + 1) : absl::string_view();
    bool ok = has_value;  // value parsers also fail on the empty value of a bare --name
    if (name == "help") {
      absl::PrintF("%s", kUsage);
      std::exit(0);
    } else if (name == "l1") {
      ok = ParseBool(has_value, value, &flags.l1);
    } else if (name == "no_faults") {
      ok = ParseBool(has_value, value, &flags.no_faults);
    } else if (name == "check_order") {
      ok = ParseBool(has_value, value, &flags.check_order);
    } else if (name == "backend") {
      flags.backend = std::string(value);
      ok = value == "memory" || value == "redis";
    } else if (name == "redis_url") {
      flags.redis_url = std::string(value);
    } else if (name == "seconds") {
      ok = absl::SimpleAtod(value, &flags.seconds) && flags.seconds > 0;
    } else if (name == "ops") {
      ok = ParseInt(value, 1, &flags.ops);
    } else if (name == "threads") {
      ok = ParseThreads(value, flags);
    } else if (name == "caches") {
      ok = ParseInt(value, 1, &flags.caches);
    } else if (name == "keys") {
      ok = ParseInt(value, 1, &flags.keys);
    } else if (name == "seed") {
      ok = absl::SimpleAtoi(value, &flags.seed);
    } else if (name == "chunk_kb") {
      ok = ParseInt(value, 1, &flags.chunk_kb);
    } else if (name == "min_body_kb") {
      ok = ParseInt(value, 0, &flags.min_body_kb);
    } else if (name == "max_body_kb") {
      ok = ParseInt(value, 1, &flags.max_body_kb);
    } else if (name == "ttl_ms") {
      ok = ParseInt(value, 1, &flags.ttl_ms);
    } else if (name == "invalidate_pause_us") {
      ok = ParseInt(value, 0, &flags.invalidate_pause_us);
    } else if (name == "retry_attempts") {
      ok = ParseInt(value, 0, &flags.retry_attempts);
    } else if (name == "l1_fresh_ms") {
      ok = ParseInt(value, 0, &flags.l1_fresh_ms);
    } else if (name == "kill_every_ms") {
      ok = ParseInt(value, 0, &flags.kill_every_ms);
    } else if (name == "down_ms") {
      ok = ParseInt(value, 0, &flags.down_ms);
    } else if (name == "delay_ms") {
      double ms = 0;
      ok = absl::SimpleAtod(value, &ms) && ms >= 0;
      flags.delay_ms = ms;
    } else if (name == "max_rss_mb") {
      ok = ParseInt(value, 1, &flags.max_rss_mb);
    } else if (name == "watchdog_s") {
      ok = ParseInt(value, 1, &flags.watchdog_s);
    } else {
      bool known = false;
      for (std::size_t r = 0; r < kRateFlags.size(); ++r) {
        if (name != kRateFlags[r].name) continue;
        known = true;
        double rate = 0;
        ok = absl::SimpleAtod(value, &rate) && rate >= 0 && rate <= 1;
        flags.rates[r] = rate;
      }
      if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown flag: ", arg));
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value: ", arg));
  }
  return absl::OkStatus();
}

// Fills flags.faults and checks the combinations.
absl::Status ResolveFlags(Flags& flags) {
  const bool redis = flags.backend == "redis";
  bool any_fault = false;
  for (std::size_t r = 0; r < kRateFlags.size(); ++r) {
    const double fallback = redis ? kRateFlags[r].redis_default : kRateFlags[r].memory_default;
    const double rate = flags.no_faults ? 0 : flags.rates[r].value_or(fallback);
    flags.faults.*kRateFlags[r].field = rate;
    any_fault = any_fault || rate > 0;
  }
  flags.faults.delay = absl::Milliseconds(flags.delay_ms.value_or(1));
  flags.faults.seed = flags.seed;
  if (flags.writers + flags.readers + flags.invalidators == 0) {
    return absl::InvalidArgumentError("--threads: no thread at all");
  }
  if (flags.min_body_kb > flags.max_body_kb) {
    return absl::InvalidArgumentError("--min_body_kb is above --max_body_kb");
  }
  if (flags.kill_every_ms > 0 && (!redis || !flags.redis_url.empty())) {
    return absl::InvalidArgumentError(
        "--kill_every_ms needs --backend=redis with a server of our own (no --redis_url)");
  }
  if (flags.l1 && absl::Milliseconds(flags.l1_fresh_ms) >= absl::Milliseconds(flags.ttl_ms)) {
    return absl::InvalidArgumentError("--l1_fresh_ms must be below --ttl_ms");
  }
  if (flags.check_order && (any_fault || flags.l1 || flags.kill_every_ms > 0)) {
    return absl::InvalidArgumentError(
        "--check_order needs every fault rate at 0 (--no_faults), no --l1 and no "
        "--kill_every_ms: those make regressions legitimate");
  }
  return absl::OkStatus();
}

// ---- Documents ----------------------------------------------------------------------------------

// FNV-1a, 64 bits: simple, stable, and enough to tell versions apart.
class Fnv {
 public:
  void Add(std::string_view bytes) {
    for (const char c : bytes) {
      hash_ ^= static_cast<unsigned char>(c);
      hash_ *= 0x100000001b3ULL;
    }
  }
  void AddField(std::string_view bytes) {
    Add(bytes);
    Add(std::string_view("\0", 1));
  }
  std::uint64_t value() const { return hash_; }

 private:
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

std::uint64_t HashBytes(std::string_view bytes) {
  Fnv fnv;
  fnv.Add(bytes);
  return fnv.value();
}

std::uint64_t VersionId(int writer, std::uint64_t version) {
  return (static_cast<std::uint64_t>(writer) << kCounterBits) | version;
}

// The start of the checksum of a document: its identity.
Fnv IdentityHash(std::string_view key, std::int64_t writer, std::uint64_t version) {
  Fnv fnv;
  fnv.AddField(key);
  fnv.AddField(absl::StrCat(writer));
  fnv.AddField(absl::StrCat(version));
  return fnv;
}

void AppendJsonEscaped(std::string_view text, std::string* out) {
  for (const char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
}

// One body string: runs of random characters (incompressible-ish), words (compressible), and
// characters that JSON escapes or encodes in several UTF-8 bytes.
std::string RandomText(std::mt19937_64& rng) {
  static constexpr std::string_view kAlphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
  static constexpr std::array<std::string_view, 12> kWords = {
      "catalogue ", "episode ",  "programme ", "launch ",     "night ",      "cache ",
      "chunk ",     "manifest ", "番組 ",      "エピソード ", "generation ", "origin "};
  static constexpr std::array<std::string_view, 8> kOdd = {"\"", "\\",   "\n", "\t",
                                                           "/",  "\x01", "é",  "🎬"};
  const std::size_t length = std::uniform_int_distribution<std::size_t>(1, 300)(rng);
  std::string text;
  while (text.size() < length) {
    const std::uint64_t draw = rng();
    const int kind = static_cast<int>(draw % 100);
    if (kind < 60) {
      const int run = 1 + static_cast<int>((draw >> 8) % 9);
      std::uint64_t bits = rng();
      for (int i = 0; i < run; ++i, bits >>= 6) text.push_back(kAlphabet[bits & 63]);
    } else if (kind < 95) {
      text.append(kWords[(draw >> 8) % kWords.size()]);
    } else {
      text.append(kOdd[(draw >> 8) % kOdd.size()]);
    }
  }
  return text;
}

// A document for `key` by `writer`, version `version`, with about `body_bytes` of body.
std::string MakeDocument(std::string_view key, int writer, std::uint64_t version,
                         std::size_t body_bytes, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ (VersionId(writer, version) * 0x9e3779b97f4a7c15ULL));
  Fnv checksum = IdentityHash(key, writer, version);
  std::string body = "[";
  while (body.size() < body_bytes) {
    const std::string text = RandomText(rng);
    checksum.AddField(text);
    if (body.size() > 1) body.push_back(',');
    body.push_back('"');
    AppendJsonEscaped(text, &body);
    body.push_back('"');
  }
  body.push_back(']');
  return absl::StrFormat(R"({"key":"%s","writer":%d,"version":%d,"checksum":"%016x","body":%s})",
                         key, writer, version, checksum.value(), body);
}

// ---- What was offered ---------------------------------------------------------------------------

// Every version offered for each key, with the hash of its bytes. Recorded before the Put (or the
// loader's return), so a reader may legitimately see any version found here.
class VersionLog {
 public:
  explicit VersionLog(int keys) : slots_(static_cast<std::size_t>(keys)) {}

  void Record(int key, std::uint64_t id, std::uint64_t hash) {
    Slot& slot = slots_[static_cast<std::size_t>(key)];
    std::lock_guard<std::mutex> lock(slot.mu);
    slot.versions.emplace(id, hash);
  }

  std::optional<std::uint64_t> Find(int key, std::uint64_t id) const {
    const Slot& slot = slots_[static_cast<std::size_t>(key)];
    std::lock_guard<std::mutex> lock(slot.mu);
    const auto it = slot.versions.find(id);
    if (it == slot.versions.end()) return std::nullopt;
    return it->second;
  }

  std::size_t size() const {
    std::size_t total = 0;
    for (const Slot& slot : slots_) {
      std::lock_guard<std::mutex> lock(slot.mu);
      total += slot.versions.size();
    }
    return total;
  }

 private:
  struct Slot {
    mutable std::mutex mu;
    std::unordered_map<std::uint64_t, std::uint64_t> versions;  // version id -> hash of bytes
  };
  std::vector<Slot> slots_;
};

// ---- Checking what readers get ------------------------------------------------------------------

enum Violation { kUnparseable, kMalformed, kWrongKey, kBadChecksum, kUnknownVersion, kBytesDiffer };
constexpr std::array<absl::string_view, 6> kViolationNames = {
    "unparseable", "malformed", "wrong_key", "bad_checksum", "unknown_version", "bytes_differ"};

struct Checked {
  std::optional<Violation> violation;
  std::string detail;
  std::int64_t writer = -1;
  std::uint64_t version = 0;
};

Checked CheckPayload(simdjson::dom::parser& parser, const VersionLog& log, int key_index,
                     std::string_view key, const std::string& payload) {
  Checked checked;
  auto fail = [&](Violation violation, std::string detail) {
    checked.violation = violation;
    checked.detail = std::move(detail);
    return checked;
  };
  simdjson::dom::element doc;
  if (const simdjson::error_code error = parser.parse(payload).get(doc); error) {
    return fail(kUnparseable, simdjson::error_message(error));
  }
  std::string_view got_key, want_checksum;
  simdjson::dom::array body;
  if (doc["key"].get(got_key) || doc["writer"].get(checked.writer) ||
      doc["version"].get(checked.version) || doc["checksum"].get(want_checksum) ||
      doc["body"].get(body)) {
    return fail(kMalformed, "a field is missing or of the wrong type");
  }
  if (got_key != key) return fail(kWrongKey, absl::StrCat("names key ", ToAbsl(got_key)));
  Fnv checksum = IdentityHash(got_key, checked.writer, checked.version);
  for (const simdjson::dom::element element : body) {
    std::string_view text;
    if (element.get(text)) return fail(kMalformed, "a body element is not a string");
    checksum.AddField(text);
  }
  if (absl::StrFormat("%016x", checksum.value()) != want_checksum) {
    return fail(kBadChecksum, absl::StrCat("checksum ", ToAbsl(want_checksum), " does not match"));
  }
  const std::optional<std::uint64_t> offered =
      log.Find(key_index, VersionId(static_cast<int>(checked.writer), checked.version));
  if (!offered.has_value()) {
    return fail(kUnknownVersion, absl::StrCat("writer ", checked.writer, " version ",
                                              checked.version, " was never offered"));
  }
  if (*offered != HashBytes(payload)) {
    return fail(kBytesDiffer, absl::StrCat("writer ", checked.writer, " version ", checked.version,
                                           " has other bytes than were offered"));
  }
  return checked;
}

// Checks that CheckPayload catches what it is meant to on documents spoiled on purpose, so that
// "0 violations" cannot come from a checker that accepts everything.
absl::Status SelfTest(std::uint64_t seed) {
  VersionLog log(2);
  simdjson::dom::parser parser;
  const std::string doc = MakeDocument("k0", 0, 1, 4096, seed);
  log.Record(0, VersionId(0, 1), HashBytes(doc));
  const std::string unrecorded = MakeDocument("k0", 0, 2, 4096, seed);
  // A plain letter or digit of the body, outside any escape sequence.
  std::size_t at = doc.find("\"body\":[\"") + 9;
  while (at < doc.size() && !(absl::ascii_isalnum(static_cast<unsigned char>(doc[at])) &&
                              doc.substr(at - 5, 5).find('\\') == std::string::npos)) {
    ++at;
  }
  std::string flipped = doc;
  flipped[at] = flipped[at] == 'x' ? 'y' : 'x';
  std::string spaced = doc;
  spaced.insert(1, " ");
  const std::string truncated = doc.substr(0, doc.size() / 2);
  struct Case {
    const char* what;
    std::string_view key;
    const std::string* payload;
    std::optional<Violation> expected;
  };
  const Case cases[] = {{"the document itself", "k0", &doc, std::nullopt},
                        {"a changed body character", "k0", &flipped, kBadChecksum},
                        {"another key's document", "k1", &doc, kWrongKey},
                        {"a version never offered", "k0", &unrecorded, kUnknownVersion},
                        {"a truncated document", "k0", &truncated, kUnparseable},
                        {"the same version with other bytes", "k0", &spaced, kBytesDiffer}};
  for (const Case& c : cases) {
    const Checked checked = CheckPayload(parser, log, c.key == "k0" ? 0 : 1, c.key, *c.payload);
    if (checked.violation != c.expected) {
      return absl::InternalError(absl::StrCat(
          "self-test: ", c.what, " was judged ",
          checked.violation.has_value() ? kViolationNames[*checked.violation] : "fine"));
    }
  }
  return absl::OkStatus();
}

// ---- Counters -----------------------------------------------------------------------------------

enum OpKind { kPut, kGet, kGetOrLoad, kInvalidate };
constexpr std::array<absl::string_view, 4> kOpNames = {"put", "get", "get_or_load", "invalidate"};

void Bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

std::uint64_t Load(const std::atomic<std::uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

std::int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Tally {
  std::array<std::atomic<std::uint64_t>, kOpNames.size()> ops{};
  std::array<std::array<std::atomic<std::uint64_t>, kStatusCodes>, kOpNames.size()> errors{};
  std::atomic<std::uint64_t> hits{0}, misses{0}, loader_calls{0};
  std::array<std::atomic<std::uint64_t>, kViolationNames.size()> violations{};
  std::atomic<std::uint64_t> regressions_get{0}, regressions_get_or_load{0};
  std::atomic<std::int64_t> last_progress_ns{SteadyNowNs()};

  void Error(OpKind kind, const absl::Status& status) {
    const auto code = static_cast<std::size_t>(status.code());
    Bump(errors[kind]
               [code < kStatusCodes ? code : static_cast<std::size_t>(absl::StatusCode::kUnknown)]);
  }

  std::uint64_t TotalOps() const {
    std::uint64_t total = 0;
    for (const auto& n : ops) total += Load(n);
    return total;
  }

  std::uint64_t TotalViolations() const {
    std::uint64_t total = 0;
    for (const auto& n : violations) total += Load(n);
    return total;
  }
};

// ---- The run ------------------------------------------------------------------------------------

// What every worker thread shares. Outlives the workers and the caches' loaders.
struct Run {
  Run(const Flags& f, std::vector<std::unique_ptr<ChunkedCache>>* c)
      : flags(f),
        caches(c),
        log(f.keys),
        next_version(static_cast<std::size_t>(f.writers + f.readers)) {
    for (int k = 0; k < f.keys; ++k) key_names.push_back(absl::StrCat("k", k));
  }

  // True once the run is over: time is up, or the --ops budget is handed out.
  bool Over() const {
    return stop.load(std::memory_order_relaxed) ||
           (flags.ops > 0 && issued.load(std::memory_order_relaxed) >= flags.ops);
  }

  // Claims one operation: false once the run is over.
  bool NextOp() {
    if (stop.load(std::memory_order_relaxed)) return false;
    return flags.ops == 0 || issued.fetch_add(1, std::memory_order_relaxed) < flags.ops;
  }

  void Progress() { tally.last_progress_ns.store(SteadyNowNs(), std::memory_order_relaxed); }

  // A new version of key `key` by `writer`, recorded as offered before it is returned.
  std::string Offer(int writer, int key, std::mt19937_64& rng) {
    const std::uint64_t version =
        next_version[static_cast<std::size_t>(writer)].fetch_add(1, std::memory_order_relaxed) + 1;
    const std::size_t body_bytes = std::uniform_int_distribution<std::size_t>(
        static_cast<std::size_t>(flags.min_body_kb) << 10,
        static_cast<std::size_t>(flags.max_body_kb) << 10)(rng);
    std::string doc = MakeDocument(key_names[static_cast<std::size_t>(key)], writer, version,
                                   body_bytes, flags.seed);
    log.Record(key, VersionId(writer, version), HashBytes(doc));
    return doc;
  }

  void ReportViolation(absl::string_view op, int key, const Checked& checked,
                       const std::string& payload) {
    Bump(tally.violations[*checked.violation]);
    std::lock_guard<std::mutex> lock(report_mu);
    if (++reported > kMaxViolationReports) return;
    absl::FPrintF(stderr, "VIOLATION %s on %s %s: %s; payload (%d bytes) begins %s\n",
                  kViolationNames[*checked.violation], op, key_names[static_cast<std::size_t>(key)],
                  checked.detail, payload.size(), absl::CEscape(payload.substr(0, 160)));
  }

  const Flags& flags;
  std::vector<std::unique_ptr<ChunkedCache>>* caches;
  std::vector<std::string> key_names;
  VersionLog log;
  std::vector<std::atomic<std::uint64_t>> next_version;  // per writer id: its last version
  Tally tally;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> issued{0};
  std::mutex report_mu;
  int reported = 0;
};

std::mt19937_64 ThreadRng(const Flags& flags, int thread) {
  std::seed_seq seq{static_cast<std::uint32_t>(flags.seed),
                    static_cast<std::uint32_t>(flags.seed >> 32),
                    static_cast<std::uint32_t>(thread)};
  return std::mt19937_64(seq);
}

void WriterLoop(Run& run, ChunkedCache& cache, int writer, int thread) {
  std::mt19937_64 rng = ThreadRng(run.flags, thread);
  std::uniform_int_distribution<int> pick_key(0, run.flags.keys - 1);
  while (run.NextOp()) {
    const int key = pick_key(rng);
    const std::string doc = run.Offer(writer, key, rng);
    const absl::Status status = cache.Put(run.key_names[static_cast<std::size_t>(key)], doc);
    Bump(run.tally.ops[kPut]);
    if (!status.ok()) run.tally.Error(kPut, status);
    run.Progress();
  }
}

// Per key and writer, the highest version this reader saw.
class OrderTracker {
 public:
  explicit OrderTracker(int keys) : seen_(static_cast<std::size_t>(keys)) {}
  // False if `version` of `writer` is older than one seen before for `key`.
  bool Observe(int key, std::int64_t writer, std::uint64_t version) {
    std::uint64_t& highest = seen_[static_cast<std::size_t>(key)][writer];
    if (version < highest) return false;
    highest = version;
    return true;
  }

 private:
  std::vector<std::unordered_map<std::int64_t, std::uint64_t>> seen_;
};

void ReaderLoop(Run& run, ChunkedCache& cache, int writer, int thread) {
  std::mt19937_64 rng = ThreadRng(run.flags, thread);
  std::uniform_int_distribution<int> pick_key(0, run.flags.keys - 1);
  simdjson::dom::parser parser;
  OrderTracker order(run.flags.keys);
  while (run.NextOp()) {
    const int key = pick_key(rng);
    const std::string& name = run.key_names[static_cast<std::size_t>(key)];
    const OpKind kind = rng() % 2 == 0 ? kGet : kGetOrLoad;
    absl::StatusOr<Bytes> got;
    if (kind == kGet) {
      got = cache.Get(name);
    } else {
      // The loader is itself a writer. It runs on this thread (no soft_ttl): rng is safe to use.
      got = cache.GetOrLoad(name, [&run, &rng, writer, key]() -> absl::StatusOr<std::string> {
        Bump(run.tally.loader_calls);
        return run.Offer(writer, key, rng);
      });
    }
    Bump(run.tally.ops[kind]);
    if (got.ok()) {
      Bump(run.tally.hits);
      const Checked checked = CheckPayload(parser, run.log, key, name, **got);
      if (checked.violation.has_value()) {
        run.ReportViolation(kOpNames[kind], key, checked, **got);
      } else if (!order.Observe(key, checked.writer, checked.version)) {
        Bump(kind == kGet ? run.tally.regressions_get : run.tally.regressions_get_or_load);
      }
    } else if (absl::IsNotFound(got.status())) {
      Bump(run.tally.misses);
    } else {
      run.tally.Error(kind, got.status());
    }
    run.Progress();
  }
}

void InvalidatorLoop(Run& run, ChunkedCache& cache, int thread) {
  std::mt19937_64 rng = ThreadRng(run.flags, thread);
  std::uniform_int_distribution<int> pick_key(0, run.flags.keys - 1);
  const bool anyone_writes = run.flags.writers + run.flags.readers > 0;
  auto writes = [&run] { return Load(run.tally.ops[kPut]) + Load(run.tally.loader_calls); };
  while (true) {
    // At most one invalidation per two writes (Puts and loads), so that a slow build (sanitizers,
    // where the paced invalidators would otherwise outrun everyone) still reads entries mostly.
    while (anyone_writes && !run.Over() && 2 * Load(run.tally.ops[kInvalidate]) > writes()) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!run.NextOp()) break;
    const absl::Status status =
        cache.Invalidate(run.key_names[static_cast<std::size_t>(pick_key(rng))]);
    Bump(run.tally.ops[kInvalidate]);
    if (!status.ok()) run.tally.Error(kInvalidate, status);
    run.Progress();
    if (run.flags.invalidate_pause_us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(run.flags.invalidate_pause_us));
    }
  }
}

// Aborts the process if no operation completes for flags.watchdog_s, until destroyed.
class Watchdog {
 public:
  explicit Watchdog(Run& run) : run_(run), thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The final check makes progress of its own.
  void Pet() { run_.Progress(); }

 private:
  void Loop() {
    const std::int64_t limit_ns = run_.flags.watchdog_s * 1'000'000'000;
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; })) {
      const std::int64_t idle_ns =
          SteadyNowNs() - run_.tally.last_progress_ns.load(std::memory_order_relaxed);
      if (idle_ns < limit_ns) continue;
      absl::FPrintF(stderr,
                    "chunkcache_stress: WATCHDOG: no operation completed for %d s (%d ops so far): "
                    "a hang; aborting\n",
                    idle_ns / 1'000'000'000, run_.tally.TotalOps());
      std::fflush(stderr);
      std::abort();
    }
  }

  Run& run_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// ---- Backends -----------------------------------------------------------------------------------

struct BackendStack {
  std::unique_ptr<chunkcache::testing::RedisServer> server;  // ours, when no --redis_url
  std::shared_ptr<chunkcache::MemoryBackend> memory;
  std::shared_ptr<chunkcache::RedisBackend> redis;
  std::shared_ptr<FaultInjectionBackend> faulty;
  std::shared_ptr<chunkcache::RetryingBackend> retrying;
  std::shared_ptr<chunkcache::Backend> top;  // what the caches use
};

absl::StatusOr<BackendStack> MakeBackends(const Flags& flags) {
  BackendStack stack;
  std::shared_ptr<chunkcache::Backend> base;
  if (flags.backend == "memory") {
    stack.memory = chunkcache::NewMemoryBackend(
        chunkcache::MemoryBackendOptions{.capacity_bytes = std::size_t{64} << 20});
    base = stack.memory;
  } else {
    std::string url = flags.redis_url;
    if (url.empty()) {
      try {
        stack.server = std::make_unique<chunkcache::testing::RedisServer>();
      } catch (const std::exception& e) {
        return absl::UnavailableError(absl::StrCat("starting redis-server: ", e.what()));
      }
      url = stack.server->url();
    }
    absl::StatusOr<std::shared_ptr<chunkcache::RedisBackend>> redis =
        chunkcache::NewRedisBackend({.url = url});
    if (!redis.ok()) return redis.status();
    stack.redis = *redis;
    base = *std::move(redis);
  }
  absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> faulty =
      chunkcache::NewFaultInjectionBackend(base, flags.faults);
  if (!faulty.ok()) return faulty.status();
  stack.faulty = *std::move(faulty);
  stack.top = stack.faulty;
  if (flags.retry_attempts > 1) {
    absl::StatusOr<std::shared_ptr<chunkcache::RetryingBackend>> retrying =
        chunkcache::NewRetryingBackend(stack.faulty, {.max_attempts = flags.retry_attempts});
    if (!retrying.ok()) return retrying.status();
    stack.retrying = *retrying;
    stack.top = stack.retrying;
  }
  return stack;
}

struct KillCounts {
  std::uint64_t kills = 0;
  std::uint64_t restart_failures = 0;
};

// Ends the run when its time is up (or, in --ops mode, when every worker returned), killing and
// restarting our redis-server on the kill period meanwhile. Runs on the thread that started the
// server: the fixture's children die with the thread that forked them.

void DriveRun(Run& run, BackendStack& stack, std::atomic<int>& running, KillCounts& counts) {
  const Flags& flags = run.flags;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(flags.ops > 0 ? 1e9 : flags.seconds));
  Clock::time_point next_kill = start + std::chrono::milliseconds(flags.kill_every_ms);
  while (running.load() > 0) {
    const Clock::time_point now = Clock::now();
    if (now >= end) {
      run.stop.store(true);
      return;
    }
    if (flags.kill_every_ms > 0 && stack.server != nullptr && now >= next_kill) {
      if (stack.server->running()) {
        stack.server->Kill();
        ++counts.kills;
        std::this_thread::sleep_for(std::chrono::milliseconds(flags.down_ms));
      }
      try {
        stack.server->Restart();
      } catch (const std::exception& e) {
        ++counts.restart_failures;
        absl::FPrintF(stderr, "chunkcache_stress: restarting redis-server failed: %s\n", e.what());
      }
      next_kill = Clock::now() + std::chrono::milliseconds(flags.kill_every_ms);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// ---- Final check, with faults healed ------------------------------------------------------------

struct FinalCheck {
  std::uint64_t reads = 0, hits = 0, violations = 0;
  std::uint64_t present = 0, intact = 0, broken = 0;  // entries by Inspect
  std::uint64_t live_items = 0;                       // manifests and their chunks
};

FinalCheck CheckAtRest(Run& run, BackendStack& stack) {
  FinalCheck final_check;
  stack.faulty->SetOptions({});
  if (stack.server != nullptr && !stack.server->running()) {
    try {
      stack.server->Restart();
    } catch (const std::exception& e) {
      absl::FPrintF(stderr, "chunkcache_stress: restarting redis-server failed: %s\n", e.what());
    }
  }
  simdjson::dom::parser parser;
  for (int key = 0; key < run.flags.keys; ++key) {
    const std::string& name = run.key_names[static_cast<std::size_t>(key)];
    for (const std::unique_ptr<ChunkedCache>& cache : *run.caches) {
      absl::StatusOr<Bytes> got = cache->Get(name);
      ++final_check.reads;
      if (!got.ok()) continue;
      ++final_check.hits;
      const Checked checked = CheckPayload(parser, run.log, key, name, **got);
      if (checked.violation.has_value()) {
        ++final_check.violations;
        run.ReportViolation("final get", key, checked, **got);
      }
    }
    absl::StatusOr<chunkcache::EntryInfo> info = run.caches->front()->Inspect(name);
    if (!info.ok()) continue;
    ++final_check.present;
    ++(info->checksum_ok ? final_check.intact : final_check.broken);
    final_check.live_items += 1 + info->chunks.size();
    run.Progress();
  }
  return final_check;
}

// ---- Report -------------------------------------------------------------------------------------

std::string CodeCounts(const std::array<std::atomic<std::uint64_t>, kStatusCodes>& counts,
                       bool json) {
  std::string out;
  for (int code = 0; code < kStatusCodes; ++code) {
    const std::uint64_t n = Load(counts[static_cast<std::size_t>(code)]);
    if (n == 0) continue;
    const std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
    if (!out.empty()) out += json ? "," : " ";
    out += json ? absl::StrFormat(R"("%s":%d)", name, n) : absl::StrFormat("%s=%d", name, n);
  }
  return out;
}

chunkcache::CacheStats SumStats(const std::vector<std::unique_ptr<ChunkedCache>>& caches) {
  chunkcache::CacheStats sum;
  for (const std::unique_ptr<ChunkedCache>& cache : caches) {
    const chunkcache::CacheStats s = cache->Stats();
    sum.gets += s.gets;
    sum.hits += s.hits;
    sum.misses += s.misses;
    sum.puts += s.puts;
    sum.put_errors += s.put_errors;
    sum.loads += s.loads;
    sum.coalesced += s.coalesced;
    sum.wait_timeouts += s.wait_timeouts;
    sum.fallbacks += s.fallbacks;
    sum.l1_hits += s.l1_hits;
    sum.l1_revalidations += s.l1_revalidations;
    sum.corrupt_reads += s.corrupt_reads;
    sum.torn_retries += s.torn_retries;
    sum.backend_calls += s.backend_calls;
    sum.backend_errors += s.backend_errors;
  }
  return sum;
}

double MaxRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  absl::Status parsed = ParseFlags(argc, argv, flags);
  if (parsed.ok()) parsed = ResolveFlags(flags);
  if (!parsed.ok()) {
    absl::FPrintF(stderr, "chunkcache_stress: %s\n%s", parsed.message(), kUsage);
    return kExitUsage;
  }

  if (absl::Status s = SelfTest(flags.seed); !s.ok()) {
    absl::FPrintF(stderr, "chunkcache_stress: %s\n", s.message());
    return kExitSetup;
  }

  absl::StatusOr<BackendStack> stack = MakeBackends(flags);
  if (!stack.ok()) {
    absl::FPrintF(stderr, "chunkcache_stress: setup failed: %s\n", stack.status().ToString());
    return kExitSetup;
  }
  const std::string key_prefix =
      flags.redis_url.empty() ? "stress:" : absl::StrCat("stress:", ::getpid(), ":");

  // `run` is declared before the caches, so it outlives them and the loaders they hold.
  std::vector<std::unique_ptr<ChunkedCache>> caches;
  Run run(flags, &caches);
  for (int i = 0; i < flags.caches; ++i) {
    caches.push_back(std::make_unique<ChunkedCache>(
        stack->top,
        chunkcache::CacheOptions{.key_prefix = key_prefix,
                                 .chunk_size = static_cast<std::size_t>(flags.chunk_kb) << 10,
                                 .ttl = absl::Milliseconds(flags.ttl_ms),
                                 .chunk_ttl_grace = absl::Seconds(2),
                                 .l1_capacity_bytes = flags.l1 ? std::size_t{16} << 20 : 0,
                                 .l1_fresh_for = absl::Milliseconds(flags.l1_fresh_ms)}));
  }

  absl::PrintF(
      "chunkcache_stress: backend=%s caches=%d threads=%d/%d/%d keys=%d seed=%d l1=%s "
      "faults={read_error=%g write_error=%g drop_write=%g lose_item=%g flip_byte=%g delay=%g of "
      "%s} %s kill_every_ms=%d\n",
      flags.backend, flags.caches, flags.writers, flags.readers, flags.invalidators, flags.keys,
      flags.seed, flags.l1 ? "on" : "off", flags.faults.read_error_rate,
      flags.faults.write_error_rate, flags.faults.drop_write_rate, flags.faults.lose_item_rate,
      flags.faults.flip_byte_rate, flags.faults.delay_rate,
      absl::FormatDuration(flags.faults.delay),
      flags.ops > 0 ? absl::StrCat("ops=", flags.ops) : absl::StrCat("seconds=", flags.seconds),
      flags.kill_every_ms);
  std::fflush(stdout);

  KillCounts kill_counts;
  FinalCheck final_check;
  absl::Duration elapsed;
  {
    Watchdog watchdog(run);
    std::atomic<int> running{0};
    std::vector<std::thread> threads;
    const absl::Time start = absl::Now();
    // Thread t uses cache t % caches: writers, readers and invalidators spread over "processes".
    auto cache_for = [&](int t) -> ChunkedCache& {
      return *caches[static_cast<std::size_t>(t % flags.caches)];
    };
    auto launch = [&](auto body) {
      running.fetch_add(1);
      threads.emplace_back([&running, body] {
        body();
        running.fetch_sub(1);
      });
    };
    int thread = 0;
    for (int w = 0; w < flags.writers; ++w, ++thread) {
      ChunkedCache& cache = cache_for(thread);
      launch([&run, &cache, w, thread] { WriterLoop(run, cache, w, thread); });
    }
    for (int r = 0; r < flags.readers; ++r, ++thread) {
      ChunkedCache& cache = cache_for(thread);
      const int writer = flags.writers + r;  // the id its loader writes under
      launch([&run, &cache, writer, thread] { ReaderLoop(run, cache, writer, thread); });
    }
    for (int i = 0; i < flags.invalidators; ++i, ++thread) {
      ChunkedCache& cache = cache_for(thread);
      launch([&run, &cache, thread] { InvalidatorLoop(run, cache, thread); });
    }
    DriveRun(run, *stack, running, kill_counts);
    for (std::thread& t : threads) t.join();
    elapsed = absl::Now() - start;
    watchdog.Pet();
    final_check = CheckAtRest(run, *stack);
  }

  // ---- Report ----
  const Tally& tally = run.tally;
  const std::uint64_t ops = tally.TotalOps();
  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double ops_per_s = seconds > 0 ? static_cast<double>(ops) / seconds : 0;
  const std::uint64_t violations = tally.TotalViolations();
  const std::uint64_t regressions_get = Load(tally.regressions_get);
  const std::uint64_t regressions_gol = Load(tally.regressions_get_or_load);
  const chunkcache::FaultInjectionStats faults = stack->faulty->Stats();
  const chunkcache::CacheStats cache_stats = SumStats(caches);
  const double rss_mb = MaxRssMb();

  absl::PrintF(
      "ops: total=%d puts=%d gets=%d get_or_loads=%d invalidates=%d in %.2f s (%.0f ops/s)\n", ops,
      Load(tally.ops[kPut]), Load(tally.ops[kGet]), Load(tally.ops[kGetOrLoad]),
      Load(tally.ops[kInvalidate]), seconds, ops_per_s);
  absl::PrintF("reads: hits=%d misses=%d loader_calls=%d versions_offered=%d\n", Load(tally.hits),
               Load(tally.misses), Load(tally.loader_calls), run.log.size());
  std::string errors_line, errors_json;
  for (std::size_t kind = 0; kind < kOpNames.size(); ++kind) {
    absl::StrAppend(&errors_line, " ", kOpNames[kind], "{", CodeCounts(tally.errors[kind], false),
                    "}");
    absl::StrAppend(&errors_json, kind == 0 ? "" : ",", "\"", kOpNames[kind], "\":{",
                    CodeCounts(tally.errors[kind], true), "}");
  }
  absl::PrintF("errors:%s\n", errors_line);
  absl::PrintF(
      "faults: total=%d calls=%d read_errors=%d write_errors=%d dropped_writes=%d lost_items=%d "
      "flipped_bytes=%d delays=%d\n",
      faults.total(), faults.calls, faults.read_errors, faults.write_errors, faults.dropped_writes,
      faults.lost_items, faults.flipped_bytes, faults.delays);
  absl::PrintF(
      "cache: corrupt_reads=%d torn_retries=%d fallbacks=%d coalesced=%d loads=%d put_errors=%d "
      "wait_timeouts=%d l1_hits=%d l1_revalidations=%d backend_calls=%d backend_errors=%d\n",
      cache_stats.corrupt_reads, cache_stats.torn_retries, cache_stats.fallbacks,
      cache_stats.coalesced, cache_stats.loads, cache_stats.put_errors, cache_stats.wait_timeouts,
      cache_stats.l1_hits, cache_stats.l1_revalidations, cache_stats.backend_calls,
      cache_stats.backend_errors);
  if (stack->retrying != nullptr) {
    const chunkcache::RetryingBackendStats r = stack->retrying->Stats();
    absl::PrintF("retrying: calls=%d retries=%d gave_up=%d succeeded_after_retry=%d\n", r.calls,
                 r.retries, r.gave_up, r.succeeded_after_retry);
  }
  std::uint64_t backend_items = 0;
  if (stack->memory != nullptr) {
    const chunkcache::MemoryBackendStats m = stack->memory->Stats();
    backend_items = m.items;
    absl::PrintF("memory backend: items=%d bytes=%d evictions=%d expirations=%d\n", m.items,
                 m.bytes, m.evictions, m.expirations);
  }
  if (stack->redis != nullptr) {
    const chunkcache::RedisBackendStats r = stack->redis->Stats();
    absl::PrintF(
        "redis: kills=%d restart_failures=%d connections_opened=%d connection_failures=%d "
        "errors=%d\n",
        kill_counts.kills, kill_counts.restart_failures, r.connections_opened,
        r.connection_failures, r.errors);
  }
  absl::PrintF(
      "at rest (faults healed): reads=%d hits=%d violations=%d entries=%d intact=%d broken=%d "
      "live_items=%d%s\n",
      final_check.reads, final_check.hits, final_check.violations, final_check.present,
      final_check.intact, final_check.broken, final_check.live_items,
      stack->memory != nullptr
          ? absl::StrCat(" orphaned_items=", backend_items - final_check.live_items)
          : "");
  std::string violations_detail, violations_json;
  for (std::size_t v = 0; v < kViolationNames.size(); ++v) {
    absl::StrAppend(&violations_detail, v == 0 ? "" : " ", kViolationNames[v], "=",
                    Load(tally.violations[v]));
    absl::StrAppend(&violations_json, v == 0 ? "" : ",", "\"", kViolationNames[v],
                    "\":", Load(tally.violations[v]));
  }
  absl::PrintF("violations: %d (%s)\n", violations, violations_detail);
  absl::PrintF("regressions: get=%d get_or_load=%d (%s)\n", regressions_get, regressions_gol,
               flags.check_order ? "checked: a regression by Get fails the run"
                                 : "informational: legitimate with faults, L1 or single-flight");
  absl::PrintF("max_rss_mb: %.1f (bound %d)\n", rss_mb, flags.max_rss_mb);

  const bool rss_ok = rss_mb <= static_cast<double>(flags.max_rss_mb);
  const bool order_ok = !flags.check_order || regressions_get == 0;
  const bool pass = violations == 0 && rss_ok && order_ok;
  absl::PrintF(
      "{\"backend\":\"%s\",\"l1\":%s,\"seconds\":%.3f,\"ops\":%d,\"puts\":%d,\"gets\":%d,"
      "\"get_or_loads\":%d,\"invalidates\":%d,\"hits\":%d,\"misses\":%d,\"loader_calls\":%d,"
      "\"errors\":{%s},\"faults\":{\"total\":%d,\"read_errors\":%d,\"write_errors\":%d,"
      "\"dropped_writes\":%d,\"lost_items\":%d,\"flipped_bytes\":%d,\"delays\":%d},"
      "\"cache\":{\"corrupt_reads\":%d,\"torn_retries\":%d,\"fallbacks\":%d,\"coalesced\":%d,"
      "\"put_errors\":%d,\"l1_hits\":%d},\"kills\":%d,\"violations\":%d,\"violations_by_kind\":{%s}"
      ","
      "\"regressions_get\":%d,\"regressions_get_or_load\":%d,\"max_rss_mb\":%.1f,"
      "\"ops_per_s\":%.0f,\"pass\":%s}\n",
      flags.backend, flags.l1 ? "true" : "false", seconds, ops, Load(tally.ops[kPut]),
      Load(tally.ops[kGet]), Load(tally.ops[kGetOrLoad]), Load(tally.ops[kInvalidate]),
      Load(tally.hits), Load(tally.misses), Load(tally.loader_calls), errors_json, faults.total(),
      faults.read_errors, faults.write_errors, faults.dropped_writes, faults.lost_items,
      faults.flipped_bytes, faults.delays, cache_stats.corrupt_reads, cache_stats.torn_retries,
      cache_stats.fallbacks, cache_stats.coalesced, cache_stats.put_errors, cache_stats.l1_hits,
      kill_counts.kills, violations, violations_json, regressions_get, regressions_gol, rss_mb,
      ops_per_s, pass ? "true" : "false");
  if (!pass) {
    absl::PrintF("FAIL:%s%s%s\n", violations > 0 ? " violations" : "",
                 rss_ok ? "" : " max RSS over the bound", order_ok ? "" : " Get regressions");
    return kExitFailed;
  }
  absl::PrintF("PASS\n");
  return 0;
}
