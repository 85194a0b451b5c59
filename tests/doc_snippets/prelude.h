// prelude.h — what the C++ snippets of README.md and docs/*.md use without declaring it: the
// reader's own functions and types (an origin, an HTTP framework, a database, an exporter, a
// backend of their own) and the variables a snippet takes as given (`backend`, `cache`,
// `new_json`). Included first by every file extract_snippets.py generates.
//
// The stand-ins behave just enough for the runnable snippets to run for real: the origin returns a
// small generated catalogue, `backend` is a memory backend, ServeHttp answers one request per
// route. Add a stand-in here when a new snippet needs one; keep it small and obvious.

#ifndef CHUNKCACHE_TESTS_DOC_SNIPPETS_PRELUDE_H_
#define CHUNKCACHE_TESTS_DOC_SNIPPETS_PRELUDE_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "chunkcache/chunkcache.h"

// The origin: the JSON text of a small generated catalogue (chunkcache/testing/catalogue.h).
absl::StatusOr<std::string> LoadCatalogueFromOrigin();
absl::StatusOr<std::string> FetchCatalogueFromOrigin();

// Sends a whole JSON document, or one piece of it, to the client (dropped).
void Send(const std::string& json);
absl::Status WriteToClient(std::string_view piece);

// The reader's own metrics exporter (dropped).
void Export(std::string_view name, std::uint64_t value);

// The reader's database: FetchCatalogueJson returns the same catalogue as the origin above.
class CatalogueDatabase {
 public:
  explicit CatalogueDatabase(std::string url) : url_(std::move(url)) {}
  absl::StatusOr<std::string> FetchCatalogueJson() const;

 private:
  std::string url_;
};

// The reader's HTTP framework, as little of it as the snippets use.
class HttpRequest {
 public:
  explicit HttpRequest(bool accepts_zstd = false) : accepts_zstd_(accepts_zstd) {}
  absl::Time deadline() const { return deadline_; }
  bool AcceptsEncoding(std::string_view encoding) const {
    return accepts_zstd_ && encoding == "zstd";
  }

 private:
  bool accepts_zstd_;
  absl::Time deadline_ = absl::Now() + absl::Seconds(10);
};

class HttpResponse {
 public:
  HttpResponse(int status, std::string body)
      : status_(status), body_(std::make_shared<const std::string>(std::move(body))) {}
  HttpResponse(int status, chunkcache::Bytes body) : status_(status), body_(std::move(body)) {}
  HttpResponse Header(std::string name, std::string value) && {
    headers_.emplace_back(std::move(name), std::move(value));
    return std::move(*this);
  }
  int status() const { return status_; }
  const std::string& body() const { return *body_; }

 private:
  int status_;
  chunkcache::Bytes body_;
  std::vector<std::pair<std::string, std::string>> headers_;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// The reader's server loop. Stand-in: sends each route one request without and one with
// Accept-Encoding: zstd, and returns 0 if every answer was 200 with a body (else prints the
// failing answer and returns 1). `port` is not used.
int ServeHttp(int port, const std::vector<std::pair<std::string, HttpHandler>>& routes);

// A backend of the reader's own: items as files in a directory. Stand-in: keeps them in a memory
// backend, and has no atomic SetIfAbsent (Backend's default: Unimplemented).
class DirectoryBackend : public chunkcache::Backend {
 public:
  explicit DirectoryBackend(std::string directory);
  std::size_t max_item_size() const override;
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override;
  absl::Status MultiSet(absl::Span<const chunkcache::KeyValue> items, absl::Duration ttl) override;
  absl::Status Delete(absl::Span<const std::string_view> keys) override;

 private:
  std::string directory_;
  std::shared_ptr<chunkcache::Backend> items_;
};

// A backend opened and checked earlier (NewBackendFromUrl, NewRedisBackend): a memory backend.
inline std::shared_ptr<chunkcache::Backend> backend = chunkcache::NewMemoryBackend();

// A cache built earlier over `backend`.
inline chunkcache::ChunkedCache cache(backend);

// A new version of the catalogue to store.
inline const std::string new_json = R"({"data":{"listPrograms":{"items":[],"nextToken":null}}})";

#endif  // CHUNKCACHE_TESTS_DOC_SNIPPETS_PRELUDE_H_
