// MomentoBackend: the option checks and the Backend operations, each a batch of one HTTP request
// per item (request.h) run by the transfer sessions (http_session.h). See
// chunkcache/momento_backend.h for the contract.

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "backends/momento/http_session.h"
#include "backends/momento/request.h"
#include "chunkcache/momento_backend.h"

namespace chunkcache {
namespace {

absl::Status CheckOptions(const MomentoBackendOptions& o) {
  if (o.cache_name.empty()) {
    return absl::InvalidArgumentError("chunkcache: MomentoBackendOptions::cache_name is empty");
  }
  if (o.request_timeout <= absl::ZeroDuration() || o.deadline <= absl::ZeroDuration() ||
      o.max_attempts < 1 || o.backoff_base < absl::ZeroDuration() ||
      o.backoff_cap < o.backoff_base || o.max_concurrent_requests < 1 || o.pool_size < 0) {
    return absl::InvalidArgumentError(
        "chunkcache: MomentoBackendOptions need positive timeouts, max_attempts and "
        "max_concurrent_requests, 0 <= backoff_base <= backoff_cap and pool_size >= 0");
  }
  if (o.max_item_size == 0 || o.max_item_size > kMomentoMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkcache: MomentoBackendOptions::max_item_size must be within 1..%d: Momento's "
        "%d-byte item limit counts the key as well as the value, and %d bytes are kept for "
        "the key (kMomentoKeyAllowance)",
        kMomentoMaxValueBytes, kMomentoMaxItemBytes, kMomentoKeyAllowance));
  }
  return absl::OkStatus();
}

// MomentoBackendOptions::api_key, else MOMENTO_API_KEY: not empty, no control character.
absl::StatusOr<std::string> ApiKey(const MomentoBackendOptions& o) {
  std::string api_key = o.api_key;
  if (api_key.empty()) {
    const char* from_env = std::getenv("MOMENTO_API_KEY");
    if (from_env != nullptr) api_key = from_env;
  }
  if (api_key.empty()) {
    return absl::InvalidArgumentError(
        "chunkcache: Momento needs an API key: set MomentoBackendOptions::api_key or "
        "MOMENTO_API_KEY");
  }
  if (std::any_of(api_key.begin(), api_key.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; })) {
    return absl::InvalidArgumentError(
        "chunkcache: the Momento API key contains control characters");
  }
  return api_key;
}

class MomentoBackendImpl final : public MomentoBackend {
 public:
  MomentoBackendImpl(std::size_t max_item_size, momento::Requests requests,
                     std::unique_ptr<momento::HttpClient> http)
      : max_item_size_(max_item_size), requests_(std::move(requests)), http_(std::move(http)) {}

  std::size_t max_item_size() const override { return max_item_size_; }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    std::vector<momento::Transfer> transfers;
    transfers.reserve(keys.size());
    for (const std::string_view key : keys) transfers.push_back(requests_.Get(key));
    if (absl::Status s = http_->Run(transfers); !s.ok()) return s;
    std::vector<std::optional<std::string>> values(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (transfers[i].found) values[i] = std::move(transfers[i].response);
    }
    return values;
  }

  // Hands item i over once it and every one before it have ended well; a later one that ends
  // first waits in its transfer. The owner is the reply's body buffer, moved, not copied.
  absl::Status MultiGetEach(absl::Span<const std::string_view> keys,
                            const ItemSink& sink) override {
    std::vector<momento::Transfer> transfers;
    transfers.reserve(keys.size());
    for (const std::string_view key : keys) transfers.push_back(requests_.Get(key));
    std::size_t next = 0;  // the first index not handed over yet
    const momento::TransferDone hand_over = [&](std::size_t /*index*/) -> absl::Status {
      for (; next < transfers.size() && transfers[next].done && transfers[next].status.ok();
           ++next) {
        momento::Transfer& t = transfers[next];
        std::optional<ItemView> item;
        if (t.found) {
          auto body = std::make_shared<const std::string>(std::move(t.response));
          item = ItemView{*body, body};
        }
        if (absl::Status s = sink(next, std::move(item)); !s.ok()) {
          ++next;
          return s;
        }
      }
      return absl::OkStatus();
    };
    return http_->Run(transfers, hand_over);
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    if (ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("chunkcache: Momento items need a positive time to live");
    }
    if (ttl == absl::InfiniteDuration()) ttl = kMomentoMaxTtl;  // Momento items always expire
    const std::int64_t ttl_seconds = absl::ToInt64Seconds(absl::Ceil(ttl, absl::Seconds(1)));
    std::vector<momento::Transfer> transfers;
    transfers.reserve(items.size());
    for (const KeyValue& item : items) {
      if (item.key.empty()) {
        return absl::InvalidArgumentError("chunkcache: a Momento key may not be empty");
      }
      if (item.value.size() > max_item_size_) {
        return absl::InvalidArgumentError(
            absl::StrFormat("chunkcache: a %d-byte value exceeds the Momento max_item_size of %d",
                            item.value.size(), max_item_size_));
      }
      if (item.key.size() + item.value.size() > kMomentoMaxItemBytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chunkcache: a %d-byte key and a %d-byte value exceed Momento's item limit of %d "
            "bytes for key and value together (a key prefix longer than 1 KiB leaves full "
            "chunks no room)",
            item.key.size(), item.value.size(), kMomentoMaxItemBytes));
      }
      transfers.push_back(requests_.Put(item.key, item.value, ttl_seconds));
    }
    return http_->Run(transfers);
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    std::vector<momento::Transfer> transfers;
    transfers.reserve(keys.size());
    for (const std::string_view key : keys) transfers.push_back(requests_.Delete(key));
    return http_->Run(transfers);
  }

  MomentoBackendStats Stats() const override { return http_->Stats(); }

 private:
  const std::size_t max_item_size_;
  const momento::Requests requests_;
  const std::unique_ptr<momento::HttpClient> http_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<MomentoBackend>> NewMomentoBackend(
    const MomentoBackendOptions& options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  absl::StatusOr<std::string> api_key = ApiKey(options);
  if (!api_key.ok()) return api_key.status();
  absl::StatusOr<std::unique_ptr<momento::HttpClient>> http =
      momento::HttpClient::Create(options, *api_key);
  if (!http.ok()) return http.status();
  absl::StatusOr<momento::Requests> requests =
      momento::Requests::Create(options.endpoint, options.cache_name, *api_key);
  if (!requests.ok()) return requests.status();
  return std::make_shared<MomentoBackendImpl>(options.max_item_size, *std::move(requests),
                                              *std::move(http));
}

}  // namespace chunkcache
