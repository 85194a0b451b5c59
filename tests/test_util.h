// Helpers shared by the tests: backend decorators that record or fail calls, file and corpus
// access, and a round trip through the zstd command-line tool.

#ifndef CHUNKCACHE_TESTS_TEST_UTIL_H_
#define CHUNKCACHE_TESTS_TEST_UTIL_H_

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chunkcache/backend.h"

namespace chunkcache::testing {

// Forwards to an inner backend and records every stored item and the number of calls.
class RecordingBackend : public Backend {
 public:
  explicit RecordingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}

  std::size_t max_item_size() const override { return inner_->max_item_size(); }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    ++multi_gets;
    return inner_->MultiGet(keys);
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    ++multi_sets;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const KeyValue& item : items) {
        sets_.push_back({std::string(item.key), std::string(item.value), ttl});
      }
    }
    return inner_->MultiSet(items, ttl);
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    ++deletes;
    return inner_->Delete(keys);
  }

  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    return inner_->SetIfAbsent(key, value, ttl);
  }

  struct StoredItem {
    std::string key;
    std::string value;
    absl::Duration ttl;
  };
  std::vector<StoredItem> TakeSets() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(sets_, {});
  }

  std::atomic<int> multi_gets{0}, multi_sets{0}, deletes{0};

 private:
  std::shared_ptr<Backend> inner_;
  std::mutex mu_;
  std::vector<StoredItem> sets_;
};

// A backend whose every call fails with `status` (an unreachable server, say).
class FailingBackend : public Backend {
 public:
  explicit FailingBackend(absl::Status status) : status_(std::move(status)) {}
  std::size_t max_item_size() const override { return 1 << 20; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view>) override {
    return status_;
  }
  absl::Status MultiSet(absl::Span<const KeyValue>, absl::Duration) override { return status_; }
  absl::Status Delete(absl::Span<const std::string_view>) override { return status_; }

 private:
  absl::Status status_;
};

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void WriteFile(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The JSON files of ../shared/corpus, or none when the folder is absent.
inline std::vector<std::filesystem::path> CorpusFiles() {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path dir = std::filesystem::path(CHUNKCACHE_SHARED_DIR) / "corpus";
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  return files;
}

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "chunkcache-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Decodes `compressed` with the zstd command-line tool; nullopt if the tool failed.
inline std::optional<std::string> ZstdCliDecompress(std::string_view compressed) {
  TempDir dir;
  WriteFile(dir.path() / "in.zst", compressed);
  const std::string command = "zstd -q -d -f -o '" + (dir.path() / "out").string() + "' '" +
                              (dir.path() / "in.zst").string() + "'";
  if (std::system(command.c_str()) != 0) return std::nullopt;
  return ReadFile(dir.path() / "out");
}

}  // namespace chunkcache::testing

#endif  // CHUNKCACHE_TESTS_TEST_UTIL_H_
