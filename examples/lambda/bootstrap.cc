// bootstrap: a Lambda custom runtime (provided.al2023) serving the programme catalogue through
// chunkcache. The event is a GraphQL-ish request:
//
//   {"op": "catalogue", "format": "auto"}
//
// format (how the answer fits Lambda's 6 MB buffered response limit):
//   auto         the JSON, buffered when it fits, else streamed (default); the first 6 MB are
//                decoded before the first byte goes out
//   json         the JSON, buffered; an error (not a platform 413) if it does not fit
//   stream       the JSON with response streaming (chunked, up to 200 MB), sent frame by frame
//                as it is decoded (ChunkedCache::GetStream): the first byte goes out once the
//                first frame (2 MiB of JSON) is decoded
//   zstd-base64  {"encoding":"zstd","raw_size":N,"data":"<base64 of the zstd frame>"}, buffered:
//                a 10 MB catalogue is ~3.8 MB this way; the client runs one zstd decompress
//   manifest     the entry's manifest and chunk keys, for clients that fetch chunks themselves
//
// Environment:
//   AWS_LAMBDA_RUNTIME_API          set by Lambda
//   CHUNKCACHE_BACKEND              memory:// (default), redis://..., momento+https://HOST/CACHE
//                                   (Momento's key from MOMENTO_API_KEY)
//   CHUNKCACHE_CATALOGUE_FILE       the origin: a JSON file read on a miss; else generated:
//   CHUNKCACHE_CATALOGUE_MB         size of the generated catalogue (default 10)
//   CHUNKCACHE_L1_MB                near cache size (default 64; 0 = off)
//   CHUNKCACHE_THREADS              concurrent invocations
//                                   (default AWS_LAMBDA_MAX_CONCURRENCY, else 1)
//   CHUNKCACHE_RUNTIME_API_GIVE_UP_MS
//                                   how long /next may keep failing (retried with backoff) before
//                                   the bootstrap exits with status 1, for the platform to start
//                                   a fresh environment (default 10000)
//   CHUNKCACHE_CA_BUNDLE            a PEM file of CA certificates for https backends (the packaged
//                                   bootstrap script sets the bundle in the zip); default:
//                                   libcurl's built-in path
//   AWS_LAMBDA_FUNCTION_NAME        the EMF dimension FunctionName
//
// "auto" and "stream" read the catalogue with GetStream; a miss (or an entry found unreadable
// before anything went out) is loaded with GetOrLoad and sent whole, as "json" is. Once part of a
// stream went out, a failure (a corrupt later frame, the entry replaced meanwhile) ends it with the
// Lambda-Runtime-Function-Error-Type/-Body trailers: the invocation fails, never a cut JSON. After
// a corrupt frame the next invocation reads through GetOrLoad, which drops the entry and loads it.
//
// Everything costly (backend connection, near cache) is created once, before the first /next.
// One CloudWatch EMF line per invocation goes to stdout: the cache's counters since the previous
// line, and the invocation's time_to_first_byte_ms (from the event's arrival to the first body
// byte handed to the Runtime API; absent if no body went out) and response_ms (to the response
// posted). Log lines go to stderr. Started with any of descriptors 0-2 closed, the bootstrap first
// puts /dev/null there, so that no file or socket it opens later takes their numbers and receives
// its output.

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../common/piece_pump.h"
#include "../common/standard_fds.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/chunkcache.h"
#include "chunkcache/testing/catalogue.h"
#include "lambda_runtime.h"
#include "simdjson.h"

namespace {

using chunkcache::Bytes;
using chunkcache::examples::PiecePump;

constexpr char kKey[] = "catalogue";
constexpr char kEmfNamespace[] = "chunkcache/lambda";
// Room kept below the buffered limit for a response envelope.
constexpr std::size_t kBufferedRoom = lambda::kMaxBufferedResponse - 1024;

std::string Env(const char* name, std::string fallback = "") {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

int EnvInt(const char* name, int fallback) {
  int value = 0;
  return absl::SimpleAtoi(Env(name), &value) ? value : fallback;
}

// The origin, standing in for the database and GraphQL layer. Owns everything it uses: the cache
// may call it later, from a background refresh.
chunkcache::Loader Origin() {
  const std::string file = Env("CHUNKCACHE_CATALOGUE_FILE");
  const double megabytes = std::max(0.001, std::atof(Env("CHUNKCACHE_CATALOGUE_MB", "10").c_str()));
  return [file, megabytes]() -> absl::StatusOr<std::string> {
    if (file.empty()) return chunkcache::testing::GenerateCatalogue({.megabytes = megabytes});
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::UnavailableError(absl::StrCat("origin: cannot read ", file));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  };
}

struct Request {
  std::string op;
  std::string format = "auto";
};

absl::StatusOr<Request> ParseRequest(const std::string& payload) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(payload).get(root) != simdjson::SUCCESS || !root.is_object()) {
    return absl::InvalidArgumentError("the request is not a JSON object");
  }
  Request request;
  std::string_view op, format;
  if (root["op"].get(op) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("the request has no \"op\" string");
  }
  request.op = std::string(op);
  if (root["format"].get(format) == simdjson::SUCCESS) request.format = std::string(format);
  return request;
}

class CatalogueHandler {
 public:
  CatalogueHandler(chunkcache::ChunkedCache& cache, chunkcache::Loader origin)
      : cache_(cache), origin_(std::move(origin)) {}

  absl::StatusOr<lambda::Response> operator()(const lambda::Invocation& invocation) {
    absl::StatusOr<Request> request = ParseRequest(invocation.payload);
    if (!request.ok()) return request.status();
    if (request->op != "catalogue") {
      return absl::InvalidArgumentError(absl::StrCat("unknown op \"", request->op, "\""));
    }
    // Leave the runtime time to post the answer before Lambda's deadline.
    const chunkcache::CallOptions call{.deadline = invocation.deadline - absl::Milliseconds(200)};
    const std::string& format = request->format;
    if (format == "manifest") return Manifest(call);
    if (format == "zstd-base64") return ZstdBase64(call);
    // After a stream found the stored entry corrupt, one invocation goes through GetOrLoad, which
    // drops a corrupt entry and loads it again: streams alone would fail until it expired.
    if ((format == "stream" || format == "auto") && !stored_suspect_.exchange(false)) {
      if (std::optional<lambda::Response> streamed = Stream(format == "auto", call)) {
        return *std::move(streamed);
      }
    }
    absl::StatusOr<Bytes> json = cache_.GetOrLoad(kKey, origin_, call);
    if (!json.ok()) return json.status();
    if (format == "stream" || (format == "auto" && (*json)->size() > kBufferedRoom)) {
      return lambda::Response::Streamed(*json);
    }
    if (format != "auto" && format != "json") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown format \"", format, "\": use auto, json, stream, zstd-base64 or manifest"));
    }
    if ((*json)->size() > kBufferedRoom) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the catalogue is %d bytes, above Lambda's 6 MB buffered limit: ask for format "
          "\"stream\", \"zstd-base64\" or \"manifest\"",
          (*json)->size()));
    }
    lambda::Response response;
    response.body = *std::move(json);
    return response;
  }

 private:
  // The stored catalogue through GetStream: streamed, its first frame in hand, or buffered if
  // `buffer_if_fits` and all of it fits in a buffered response. Nullopt if nothing can be sent
  // from it (a miss, an unreadable entry, a backend error): the caller loads.
  std::optional<lambda::Response> Stream(bool buffer_if_fits, const chunkcache::CallOptions& call) {
    auto pump = std::make_shared<PiecePump>([this, call](const chunkcache::PieceSink& sink) {
      return cache_.GetStream(kKey, sink, call);
    });
    absl::StatusOr<std::string_view> first = pump->Next();
    if (!first.ok() || first->empty()) return std::nullopt;
    // The pieces: the one in hand (or, for "auto", what was read while it could still fit), then
    // the pump's. A piece stays valid until the next call.
    struct Pieces {
      std::shared_ptr<PiecePump> pump;
      std::string head;
      std::string_view first;
    };
    auto pieces = std::make_shared<Pieces>();
    if (buffer_if_fits && first->size() <= kBufferedRoom) {
      std::string& head = pieces->head;
      head = *first;
      while (head.size() <= kBufferedRoom) {
        absl::StatusOr<std::string_view> next = pump->Next();
        if (!next.ok()) return std::nullopt;  // nothing went out yet: a load answers instead
        if (next->empty()) return lambda::Response::Buffered(std::move(head));
        head.append(*next);
      }
      first = std::string_view(head);
    }
    pieces->pump = std::move(pump);
    pieces->first = *first;
    lambda::Response response = lambda::Response::Streamed(nullptr);
    response.next_piece = [pieces, this]() -> absl::StatusOr<std::string_view> {
      if (!pieces->first.empty()) return std::exchange(pieces->first, std::string_view());
      absl::StatusOr<std::string_view> next = pieces->pump->Next();
      if (absl::IsDataLoss(next.status())) stored_suspect_.store(true);
      return next;
    };
    return response;
  }

  absl::StatusOr<lambda::Response> ZstdBase64(const chunkcache::CallOptions& call) {
    absl::StatusOr<chunkcache::CompressedPayload> zstd = cache_.GetCompressed(kKey);
    if (absl::IsNotFound(zstd.status())) {  // cold: load (once for all callers), then read it
      if (absl::StatusOr<Bytes> json = cache_.GetOrLoad(kKey, origin_, call); !json.ok()) {
        return json.status();
      }
      zstd = cache_.GetCompressed(kKey);
    }
    if (!zstd.ok()) return zstd.status();
    std::string body = absl::StrCat("{\"encoding\":\"zstd\",\"raw_size\":", zstd->raw_size,
                                    ",\"data\":\"", absl::Base64Escape(*zstd->zstd), "\"}");
    if (body.size() > lambda::kMaxBufferedResponse) {
      return absl::ResourceExhaustedError("even compressed the catalogue exceeds 6 MB: stream it");
    }
    return lambda::Response::Buffered(std::move(body));
  }

  absl::StatusOr<lambda::Response> Manifest(const chunkcache::CallOptions& call) {
    absl::StatusOr<chunkcache::EntryInfo> info = cache_.Inspect(kKey);
    if (absl::IsNotFound(info.status())) {
      if (absl::StatusOr<Bytes> json = cache_.GetOrLoad(kKey, origin_, call); !json.ok()) {
        return json.status();
      }
      info = cache_.Inspect(kKey);
    }
    if (!info.ok()) return info.status();
    std::string chunks;
    for (const chunkcache::ChunkInfo& chunk : info->chunks) {
      absl::StrAppend(&chunks, chunks.empty() ? "" : ",", "{\"key\":\"", absl::CEscape(chunk.key),
                      "\",\"size\":", chunk.expected_size, "}");
    }
    return lambda::Response::Buffered(absl::StrFormat(
        R"({"manifest_key":"%s","generation":"%016x","raw_size":%d,"stored_size":%d,)"
        R"("chunk_size":%d,"checksum":"%016x","codec":"zstd","inline":%s,"chunks":[%s]})",
        absl::CEscape(info->manifest_key), info->generation, info->raw_size, info->stored_size,
        info->chunk_size, info->checksum, info->is_inline ? "true" : "false", chunks));
  }

  chunkcache::ChunkedCache& cache_;
  const chunkcache::Loader origin_;
  std::atomic<bool> stored_suspect_{false};  // a stream found the stored entry corrupt
};

// Adds the invocation's own figures, in milliseconds, to an EMF line of ToCloudWatchEmf: a
// directive of their own (first in CloudWatchMetrics, in the same namespace and dimensions) and
// their values at the top level. The line is returned as it was if it is not in that shape.
std::string WithInvocationFigures(std::string line, absl::string_view metric_namespace,
                                  absl::string_view dimension,
                                  const std::vector<std::pair<std::string, double>>& figures) {
  constexpr std::string_view kDirectives = "\"CloudWatchMetrics\":[";
  const std::size_t at = line.find(kDirectives);
  if (figures.empty() || at == std::string::npos || line.empty() || line.back() != '}') return line;
  std::string names, values;
  for (const auto& [name, value] : figures) {
    absl::StrAppend(&names, names.empty() ? "" : ",", "{\"Name\":\"", name,
                    "\",\"Unit\":\"Milliseconds\"}");
    absl::StrAppendFormat(&values, ",\"%s\":%.3f", name, value);
  }
  line.insert(line.size() - 1, values);
  line.insert(at + kDirectives.size(),
              absl::StrCat("{\"Namespace\":\"", metric_namespace, "\",\"Dimensions\":[[\"",
                           dimension, "\"]],\"Metrics\":[", names, "]},"));
  return line;
}

}  // namespace

int main() {
  // Before anything opens a file or a socket (libcurl's wake-up socket pair, the Runtime API
  // connection, a Redis connection): a closed 1 or 2 would hand its number to one of them.
  if (!chunkcache::examples::EnsureStandardFds()) {
    std::fprintf(stderr, "bootstrap: cannot open /dev/null for a closed descriptor 0-2\n");
    return 1;
  }
  const absl::Time exec = absl::Now();
  const int threads = EnvInt("CHUNKCACHE_THREADS", EnvInt("AWS_LAMBDA_MAX_CONCURRENCY", 1));
  const std::string function_name = Env("AWS_LAMBDA_FUNCTION_NAME", "chunkcache-catalogue");

  std::mutex emf_mu;
  chunkcache::CacheStats last_stats;
  chunkcache::ChunkedCache* cache_for_emf = nullptr;
  bool emf_failure_logged = false;  // guarded by emf_mu
  lambda::Runtime runtime({
      .threads = threads,
      .max_invocations = EnvInt("CHUNKCACHE_MAX_INVOCATIONS", 0),
      .after_invocation =
          [&](const lambda::Invocation&, const lambda::Outcome& outcome) {
            // One EMF line per invocation: what the cache did since the previous line.
            std::lock_guard<std::mutex> lock(emf_mu);
            const chunkcache::CacheStats now = cache_for_emf->Stats();
            absl::StatusOr<std::string> line =
                chunkcache::ToCloudWatchEmf(chunkcache::StatsDelta(now, last_stats),
                                            {.metric_namespace = kEmfNamespace,
                                             .dimensions = {{"FunctionName", function_name}}});
            last_stats = now;
            if (line.ok()) {
              std::vector<std::pair<std::string, double>> figures;
              if (outcome.time_to_first_byte != absl::InfiniteDuration()) {
                figures.emplace_back("time_to_first_byte_ms",
                                     absl::ToDoubleMilliseconds(outcome.time_to_first_byte));
              }
              figures.emplace_back("response_ms", absl::ToDoubleMilliseconds(outcome.duration));
              *line =
                  WithInvocationFigures(*std::move(line), kEmfNamespace, "FunctionName", figures);
            }
            if (line.ok()) {
              // A failed write (stdout closed or gone) loses metrics, not the invocation: said
              // once on stderr.
              errno = 0;
              const bool written =
                  std::printf("%s\n", line->c_str()) >= 0 && std::fflush(stdout) == 0;
              if (!written && !emf_failure_logged) {
                emf_failure_logged = true;
                std::fprintf(stderr, "cannot write the EMF lines to stdout: %s\n",
                             std::strerror(errno != 0 ? errno : EIO));
              }
              std::clearerr(stdout);
            }
            if (!outcome.status.ok()) {
              std::fprintf(stderr, "invocation failed: %s\n", outcome.status.ToString().c_str());
            }
          },
      .give_up_after = absl::Milliseconds(EnvInt("CHUNKCACHE_RUNTIME_API_GIVE_UP_MS", 10000)),
  });

  // Init, once per process: the backend connection and the near cache.
  absl::StatusOr<std::shared_ptr<chunkcache::Backend>> backend = chunkcache::NewBackendFromUrl(
      Env("CHUNKCACHE_BACKEND", "memory://"), {.ca_bundle_path = Env("CHUNKCACHE_CA_BUNDLE")});
  if (!backend.ok()) {
    std::fprintf(stderr, "init failed: %s\n", backend.status().ToString().c_str());
    if (absl::Status s = runtime.ReportInitError(backend.status()); !s.ok()) {
      std::fprintf(stderr, "reporting the init error failed: %s\n", s.ToString().c_str());
    }
    return 1;
  }
  chunkcache::ChunkedCache cache(
      *backend,
      {.ttl = absl::Minutes(10),
       .l1_capacity_bytes = static_cast<std::size_t>(EnvInt("CHUNKCACHE_L1_MB", 64)) << 20,
       .l1_fresh_for = absl::Seconds(1),
       .soft_ttl = absl::Minutes(5),
       .lease_ttl = absl::Seconds(10),
       .breaker_failure_threshold = 5});
  cache_for_emf = &cache;
  last_stats = cache.Stats();
  CatalogueHandler handler(cache, Origin());

  std::fprintf(stderr,
               "chunkcache bootstrap: init took %.1f ms (exec to the first /next), %d thread%s\n",
               absl::ToDoubleMilliseconds(absl::Now() - exec), threads, threads == 1 ? "" : "s");
  const absl::Status done =
      runtime.Run([&](const lambda::Invocation& invocation) { return handler(invocation); });
  if (!done.ok()) {
    std::fprintf(stderr, "runtime stopped: %s\n", done.ToString().c_str());
    return 1;
  }
  return 0;
}
