// A consumer's own Backend: a directory on disk, one file per key. It stands for what a user
// writes to plug their own store in (checked by dir_backend_conformance, reached by my_chunkcache
// through the scheme dir:///PATH).
//
// A key's file name is its bytes in hex, cut into parts of kPartSize digits: every part but the
// last names a directory ("<hex>.d"), the last the file ("<hex>.v"), so that each name stays under
// NAME_MAX and is opened relative to its directory (a 4096-byte key is 8192 digits, past
// PATH_MAX as one path). A file holds the item's expiry (8 bytes, Unix nanoseconds, little
// endian; INT64_MAX for none) and then the value; a write goes to a temporary file renamed over
// the old one. No SetIfAbsent (the default: Unimplemented).
//
// Thread safety: safe for concurrent use (one mutex around every file operation).

#ifndef CHUNKCACHE_TESTS_PACKAGE_DIR_BACKEND_H_
#define CHUNKCACHE_TESTS_PACKAGE_DIR_BACKEND_H_

#include <chunkcache/backend.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

class DirectoryBackend : public chunkcache::Backend {
 public:
  // A backend storing under `root` (created if missing); an error if it cannot be opened.
  static absl::StatusOr<std::shared_ptr<DirectoryBackend>> Open(const std::string& root,
                                                                std::size_t max_item_size);
  ~DirectoryBackend() override;

  std::size_t max_item_size() const override { return max_item_size_; }
  absl::StatusOr<std::vector<std::optional<std::string>>> MultiGet(
      absl::Span<const std::string_view> keys) override;
  absl::Status MultiSet(absl::Span<const chunkcache::KeyValue> items, absl::Duration ttl) override;
  absl::Status Delete(absl::Span<const std::string_view> keys) override;

 private:
  DirectoryBackend(int root_fd, std::size_t max_item_size)
      : root_fd_(root_fd), max_item_size_(max_item_size) {}
  absl::StatusOr<std::optional<std::string>> Read(std::string_view key);
  absl::Status Write(std::string_view key, std::string_view value, absl::Time expiry);

  std::mutex mu_;
  const int root_fd_;
  const std::size_t max_item_size_;
};

#endif  // CHUNKCACHE_TESTS_PACKAGE_DIR_BACKEND_H_
