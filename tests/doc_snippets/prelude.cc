#include "prelude.h"

#include "chunkcache/testing/catalogue.h"

namespace {

std::string SmallCatalogue() { return chunkcache::testing::GenerateCatalogue({.megabytes = 0.1}); }

}  // namespace

absl::StatusOr<std::string> LoadCatalogueFromOrigin() { return SmallCatalogue(); }
absl::StatusOr<std::string> FetchCatalogueFromOrigin() { return SmallCatalogue(); }

void Send(const std::string&) {}
absl::Status WriteToClient(std::string_view) { return absl::OkStatus(); }
void Export(std::string_view, std::uint64_t) {}

absl::StatusOr<std::string> CatalogueDatabase::FetchCatalogueJson() const {
  return SmallCatalogue();
}

int ServeHttp(int, const std::vector<std::pair<std::string, HttpHandler>>& routes) {
  for (const auto& [path, handler] : routes) {
    for (bool accepts_zstd : {false, true}) {
      const HttpResponse response = handler(HttpRequest(accepts_zstd));
      if (response.status() != 200 || response.body().empty()) {
        std::cerr << "GET " << path << (accepts_zstd ? " (zstd)" : "") << ": " << response.status()
                  << " " << response.body() << "\n";
        return 1;
      }
    }
  }
  return 0;
}

DirectoryBackend::DirectoryBackend(std::string directory)
    : directory_(std::move(directory)), items_(chunkcache::NewMemoryBackend()) {}

std::size_t DirectoryBackend::max_item_size() const { return items_->max_item_size(); }

absl::StatusOr<std::vector<std::optional<std::string>>> DirectoryBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  return items_->MultiGet(keys);
}

absl::Status DirectoryBackend::MultiSet(absl::Span<const chunkcache::KeyValue> items,
                                        absl::Duration ttl) {
  return items_->MultiSet(items, ttl);
}

absl::Status DirectoryBackend::Delete(absl::Span<const std::string_view> keys) {
  return items_->Delete(keys);
}
