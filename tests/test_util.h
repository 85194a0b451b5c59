// Helpers shared by the tests: a clock moved by hand, backend decorators that count, record or fail
// calls, a gate and a poll for tests with threads, file and corpus access, and a round trip
// through the zstd command-line tool.
//
//   testing::FakeClock clock;
//   CacheOptions options{.clock = clock.AsFunction()};
//   auto backend = std::make_shared<testing::CountingBackend>(NewMemoryBackend());
//   ... clock.Advance(absl::Seconds(30)); CHECK(backend->multi_gets == 1);
//
// Every class here is safe for concurrent use unless its comment says otherwise.

#ifndef CHUNKCACHE_TESTS_TEST_UTIL_H_
#define CHUNKCACHE_TESTS_TEST_UTIL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "chunkcache/backend.h"

// Defined when a sanitizer runtime (ASan, TSan, MSan) runs the test: it pads and quarantines every
// block, so resident memory says little about a component's own accounting.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHUNKCACHE_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define CHUNKCACHE_UNDER_SANITIZER 1
#endif
#endif

namespace chunkcache::testing {

// A clock that moves only when told to, for CacheOptions::clock and the backends' clocks. Starts
// at `start` (default: 2023-11-14, Unix time 1,700,000,000 s).
class FakeClock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000))
      : nanos_(absl::ToUnixNanos(start)) {}

  absl::Time Now() const { return absl::FromUnixNanos(nanos_.load()); }
  void Advance(absl::Duration d) { nanos_ += absl::ToInt64Nanoseconds(d); }
  // Now() as a function; the clock must outlive it.
  std::function<absl::Time()> AsFunction() const {
    return [this] { return Now(); };
  }

 private:
  std::atomic<std::int64_t> nanos_;
};

// Polls `condition` for up to 10 s of real time (for work done by other threads).
template <typename Condition>
bool Eventually(Condition condition) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A gate threads wait at (a loader, a backend call) until the test opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Forwards the four required calls to an inner backend; tests derive from it to change one.
// SetIfAbsent is not forwarded: it answers Backend's default, Unimplemented (a store without it).
class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::size_t max_item_size() const override { return inner_->max_item_size(); }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    return inner_->MultiGet(keys);
  }
  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    return inner_->MultiSet(items, ttl);
  }
  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    return inner_->Delete(keys);
  }

 protected:
  const std::shared_ptr<Backend> inner_;
};

// Forwards to an inner backend and counts the calls of each kind.
class CountingBackend : public Backend {
 public:
  explicit CountingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}

  std::size_t max_item_size() const override { return inner_->max_item_size(); }

  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override {
    ++multi_gets;
    return inner_->MultiGet(keys);
  }

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    ++multi_sets;
    return inner_->MultiSet(items, ttl);
  }

  absl::Status Delete(absl::Span<const std::string_view> keys) override {
    ++deletes;
    return inner_->Delete(keys);
  }

  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) override {
    ++set_if_absents;
    return inner_->SetIfAbsent(key, value, ttl);
  }

  // Every call so far.
  int calls() const { return multi_gets + multi_sets + deletes + set_if_absents; }

  std::atomic<int> multi_gets{0}, multi_sets{0}, deletes{0}, set_if_absents{0};

 private:
  const std::shared_ptr<Backend> inner_;
};

// A CountingBackend that also records every item stored.
class RecordingBackend : public CountingBackend {
 public:
  using CountingBackend::CountingBackend;

  absl::Status MultiSet(absl::Span<const KeyValue> items, absl::Duration ttl) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const KeyValue& item : items) {
        sets_.push_back({std::string(item.key), std::string(item.value), ttl});
      }
    }
    return CountingBackend::MultiSet(items, ttl);
  }

  struct StoredItem {
    std::string key;
    std::string value;
    absl::Duration ttl;
  };
  // The items stored since the last call, oldest first.
  std::vector<StoredItem> TakeSets() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(sets_, {});
  }

 private:
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
