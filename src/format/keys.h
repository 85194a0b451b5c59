// Stored-key derivation: how a logical key becomes the backend keys of its manifest and chunks.
// The one place that knows the key layout of docs/FORMAT.md.

#ifndef CHUNKCACHE_SRC_FORMAT_KEYS_H_
#define CHUNKCACHE_SRC_FORMAT_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace chunkcache::internal {

// OK if `key` is a valid logical key: 1 to kMaxKeySize bytes, any byte values.
absl::Status ValidateKey(std::string_view key);

// Escapes `part` so it holds only printable ASCII without '{', '}' or '%': every other byte
// becomes %XX (upper-case hex). Injective, so distinct keys never share stored keys.
std::string EscapeKeyPart(std::string_view part);

// The stored keys of one logical key under one prefix:
//   manifest  <P>{<K>}
//   chunk i   <P>{<K>}:<generation, 16 lower-case hex digits>:<i in decimal>
//   lease     <P>{<K>}:lease
// where <P> and <K> are the escaped prefix and key. The braces make {<K>} the Redis hash tag, so
// a cluster keeps every item of one logical key on one slot.
class StoredKeys {
 public:
  StoredKeys(std::string_view prefix, std::string_view key);

  // The logical key, as given (for messages).
  const std::string& key() const { return key_; }
  const std::string& manifest() const { return manifest_; }
  std::string Chunk(std::uint64_t generation, std::uint32_t index) const;
  std::vector<std::string> Chunks(std::uint64_t generation, std::uint32_t count) const;
  std::string Lease() const { return manifest_ + ":lease"; }

 private:
  std::string key_;
  std::string manifest_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_FORMAT_KEYS_H_
