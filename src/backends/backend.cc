#include "chunkcache/backend.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace chunkcache {

absl::StatusOr<bool> Backend::SetIfAbsent(std::string_view /*key*/, std::string_view /*value*/,
                                          absl::Duration /*ttl*/) {
  return absl::UnimplementedError("this backend cannot store an item only if it is absent");
}

absl::Status Backend::MultiGetEach(absl::Span<const std::string_view> keys, const ItemSink& sink) {
  absl::StatusOr<std::vector<std::optional<std::string>>> values = MultiGet(keys);
  if (!values.ok()) return values.status();
  if (values->size() != keys.size()) {
    return absl::InternalError(absl::StrFormat(
        "chunkcache: the backend answered %d keys with %d values", keys.size(), values->size()));
  }
  for (std::size_t i = 0; i < values->size(); ++i) {
    std::optional<std::string>& value = (*values)[i];
    std::optional<ItemView> item;
    if (value.has_value()) {
      auto owner = std::make_shared<const std::string>(*std::move(value));
      item = ItemView{*owner, owner};
    }
    if (absl::Status s = sink(i, std::move(item)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {
thread_local absl::Time tls_call_deadline = absl::InfiniteFuture();
}  // namespace

absl::Time CallDeadline() { return tls_call_deadline; }

ScopedCallDeadline::ScopedCallDeadline(absl::Time deadline) : previous_(tls_call_deadline) {
  tls_call_deadline = std::min(previous_, deadline);
}

ScopedCallDeadline::~ScopedCallDeadline() { tls_call_deadline = previous_; }

}  // namespace chunkcache
